"""The student under evaluation: its model (PyTorch or its exported ONNX), its two sides (prefix and length of
queries and of passages) and what it was trained with (its ``distillation_config.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from crossdistill.core.errors import UsageError
from crossdistill.evaluate.bi_encoder import load_bi_encoder
from crossdistill.evaluate.config import EvalConfig
from crossdistill.models.sides import Side


def load_student(cfg: EvalConfig):
    """The student to evaluate (``--backend``: its PyTorch weights or its exported ONNX model) and its two sides
    (prefix and length of queries and of passages, :func:`side_lengths`)."""
    q_len, p_len = side_lengths(cfg)
    model, resolved = load_bi_encoder(cfg.model_path, p_len, truncate_dim=cfg.truncate_dim, query_max_len=q_len)
    sides = (Side(resolved.query_prefix, q_len), Side(resolved.passage_prefix, p_len))
    if cfg.backend == "torch":
        return model, sides
    from crossdistill.models.export import missing_packages
    from crossdistill.models.onnx import OnnxEncoder

    if missing_packages():
        raise UsageError(f"--backend {cfg.backend} needs {' and '.join(missing_packages())}: pip install onnx onnxruntime")
    encoder = OnnxEncoder(resolved.path, "onnx" if cfg.backend == "onnx" else "onnx-int8", max_len=model.max_seq_length)
    encoder.truncate_dim = cfg.truncate_dim  # the first D dimensions, re-normalised, as the torch model does
    return encoder, sides


def side_lengths(cfg: EvalConfig) -> tuple[int | None, int | None]:
    """(query, passage) tokens: --query_max_len / --passage_max_len, else --max_len, else the lengths the student was
    trained at (its distillation_config.json), else None (the model's own)."""
    trained = trained_settings(cfg.model_path)
    return tuple(getattr(cfg, f"{side}_max_len") or cfg.max_len or _length(trained.get(f"{side}_max_len"))
                 for side in ("query", "passage"))


def _length(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def trained_settings(model_path: str) -> dict:
    """A student's distillation_config.json ({} for any other model, or one unreadable)."""
    from crossdistill.models.resolve import resolve_model

    f = Path(resolve_model(model_path).path) / "distillation_config.json"
    try:
        settings = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def trained_dims(model_path: str) -> list[int]:
    """The dimensions a student is meant to be cut at (its distillation_config.json): those it was trained at
    (Matryoshka), else, for one published with a PCA rotation, its size and the smaller usual ones; [] for any other."""
    settings = trained_settings(model_path)
    dims = settings.get("matryoshka_dims") or settings.get("truncate_dims")
    return [int(d) for d in dims] if isinstance(dims, list) and all(isinstance(d, int) for d in dims) else []
