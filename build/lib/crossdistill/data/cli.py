"""Prepare triplet CSVs (anchor,positive,negative) with mined hard negatives, from labelled data in any common shape.

Examples:
  python prepare_data.py --source ../shared/data/scifact --data_version scifact_bm25
  python prepare_data.py --source ../shared/data/korquad/KorQuAD_v1.0_dev.json --data_version korquad
  python prepare_data.py --source my_triplets.csv --data_version mine --negatives model
  python prepare_data.py --source faq_pairs.jsonl --corpus passages.jsonl --data_version faq \\
      --columns anchor=question,positive=answer
"""


from crossdistill.core.errors import run_cli
from crossdistill.data.config import PrepareConfig


def parse_args(argv=None) -> PrepareConfig:
    return PrepareConfig.parse(argv, __doc__)


def main(argv=None):
    from crossdistill.data.prepare import prepare

    prepare(parse_args(argv))


def run() -> None:
    """The command line: ``python -m crossdistill.data``, ``crossdistill-prepare``, ``python prepare_data.py``."""
    run_cli(main)
