"""``export_student.py``'s settings."""

from __future__ import annotations

from dataclasses import dataclass

from crossdistill.core.errors import UsageError
from crossdistill.core.settings import Config, setting


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Config):
    """``export_student.py``'s settings."""

    model_path: str = setting(help="a student folder (sentence-transformers layout, e.g. written by "
                                   "train_distillation_pipeline.py)")
    formats: str = setting("onnx,onnx-int8", "what to write into it: onnx (fp32), onnx-int8 (int8 weights), or both")
    output_dir: str | None = setting(None, "export into a copy of the model at this new folder instead (needed for a "
                                           "model this toolkit did not write: an installed alias, a hub cache, your "
                                           "own folder)")

    def check(self) -> None:
        from crossdistill.models.export import parse_formats

        if not parse_formats(self.formats):
            raise UsageError("--formats needs at least one of onnx, onnx-int8")
        super().check()
