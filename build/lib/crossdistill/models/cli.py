"""Export a student for serving: ONNX (fp32) and ONNX with int8 weights, written into the student folder.

  python export_student.py --model_path models/bi_encoder_distilled                 # both formats
  python export_student.py --model_path models/bi_encoder_distilled --formats onnx-int8
  python export_student.py --model_path minilm-l6 --output_dir models/minilm_onnx          # any other model: a copy

Then serve it with ONNX Runtime (crossdistill.models.onnx.OnnxEncoder), or with sentence-transformers where optimum is
installed: SentenceTransformer(folder, backend="onnx", model_kwargs={"file_name": "onnx/model_qint8_avx2.onnx"}).
Evaluate it: evaluate_final_model.py --model_path FOLDER --backend onnx-int8 ... Needs onnx and onnxruntime
(pip install onnx onnxruntime).
"""


from crossdistill.core.errors import run_cli
from crossdistill.models.config import ExportConfig


def parse_args(argv=None) -> ExportConfig:
    return ExportConfig.parse(argv, __doc__)


def main(argv=None):
    from crossdistill.models.export import export_student, export_target, parse_formats

    cfg = parse_args(argv)
    folder = export_target(cfg.model_path, cfg.output_dir)
    written = export_student(folder, parse_formats(cfg.formats))
    print("wrote " + ", ".join(f"{folder / path} ({fmt})" for fmt, path in written.items()))


def run() -> None:
    """The command line: ``python -m crossdistill.models``, ``crossdistill-export``, ``python export_student.py``."""
    run_cli(main)
