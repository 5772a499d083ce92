#!/usr/bin/env python
"""Stage 3: evaluate a bi-encoder student on a test CSV (and a full BEIR corpus), with baselines.

Example:
  python evaluate_final_model.py --model_path ./models/bi_encoder_distilled_improved \
      --test_data ./preprocessed/scifact/test.csv --output_dir ./evaluation_results/final_model_normalized \
      --batch_size 8 --beir_dir ../shared/data/scifact --base_model minilm-l6 --bm25 --teacher_path ./models/cross_encoder_teacher
"""


from crossdistill.cli import make_parser
from crossdistill.errors import AT_LEAST_1, check_args, run_cli


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--model_path", required=True, help="student folder (or alias/hub id of any bi-encoder)")
    p.add_argument("--test_data", required=True, help="test CSV with anchor,positive,negative")
    p.add_argument("--output_dir", required=True, help="folder for bi_encoder_evaluation_results.json, report.md and the figures")
    p.add_argument("--batch_size", type=int, default=32, help="texts per encoding batch")
    p.add_argument("--beir_dir", default=None, help="BEIR folder: also retrieve over its full corpus")
    p.add_argument("--split", default="test", help="qrels split of --beir_dir")
    p.add_argument("--base_model", default=None, help="baseline bi-encoder (e.g. the student before distillation)")
    p.add_argument("--bm25", action="store_true", help="add BM25 as a baseline")
    p.add_argument("--teacher_path", default=None, help="add the teacher reranking the student's top-k")
    p.add_argument("--rerank_k", type=int, default=30, help="with --teacher_path: how many of the student's top passages the teacher reranks")
    p.add_argument("--max_len", type=int, default=None, help="override the model's max sequence length")
    p.add_argument("--num_samples", type=int, default=8, help="sample pairs printed and put in the report")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output_dir")
    args = p.parse_args(argv)
    check_args(args, {"batch_size": AT_LEAST_1, "rerank_k": AT_LEAST_1, "max_len": (lambda v: v >= 8, ">= 8"),
                      "num_samples": AT_LEAST_1})
    return args


def main(argv=None):
    from crossdistill.evaluation_report import run_evaluation

    run_evaluation(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
