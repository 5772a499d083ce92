"""Stage 3: evaluate a bi-encoder student on a test CSV (and a full corpus: BEIR, your own, or the prepared version's),
with baselines.

Examples:
  python evaluate_final_model.py --model_path ./models/bi_encoder_distilled_improved \
      --test_data ./preprocessed/scifact/test.csv --output_dir ./evaluation_results/final_model_normalized \
      --batch_size 8 --beir_dir ../shared/data/scifact --base_model minilm-l6 --bm25 --teacher_path ./models/cross_encoder_teacher
  python evaluate_final_model.py --model_path ./models/faq_student --data_version faq --output_dir ./evaluation_results/faq \
      --backend onnx-int8
"""


from crossdistill.core.errors import run_cli
from crossdistill.evaluate.config import EvalConfig


def parse_args(argv=None) -> EvalConfig:
    return EvalConfig.parse(argv, __doc__)


def main(argv=None):
    from crossdistill.evaluate.report import run_evaluation

    run_evaluation(parse_args(argv))


def run() -> None:
    """The command line: ``python -m crossdistill.evaluate``, ``crossdistill-evaluate``, ``python evaluate_final_model.py``."""
    run_cli(main)
