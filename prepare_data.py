#!/usr/bin/env python
"""Prepare triplet CSVs (anchor,positive,negative) with mined hard negatives.

Examples:
  python prepare_data.py --source ../shared/data/scifact --data_version scifact_bm25
  python prepare_data.py --source ../shared/data/korquad/KorQuAD_v1.0_dev.json --data_version korquad
  python prepare_data.py --source my_triplets.csv --data_version mine --negatives model
"""


from crossdistill.cli import make_parser
from crossdistill.errors import AT_LEAST_1, NON_NEGATIVE, PROBABILITY, UsageError, check_args, run_cli


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--source", required=True, help="BEIR folder (or BEIR dataset name, online), SQuAD/KorQuAD JSON, or triplet CSV")
    p.add_argument("--source_type", choices=["beir", "squad", "csv"], help="override the detected source type")
    p.add_argument("--data_version", required=True, help="output folder name under --output_root")
    p.add_argument("--output_root", default="preprocessed", help="folder under which <data_version>/ is written")
    p.add_argument("--negatives", default="bm25", choices=["bm25", "model", "random", "keep"],
                   help="how negatives are mined (keep: the CSV's own negatives)")
    p.add_argument("--num_negatives", type=int, default=4, help="mined (hard) negatives per (query, positive)")
    p.add_argument("--random_negatives", type=int, default=None,
                   help="extra random (easy) negatives per (query, positive), after the mined ones (default: 3 with "
                        "--negatives bm25/model, 0 with random/keep); a teacher trained from scratch on hard negatives "
                        "alone learned far less here (README, 'Teacher recipe')")
    p.add_argument("--rank_window", default="0:100", help="START:END ranks of the miner's list to take negatives from")
    p.add_argument("--fn_margin", type=float, default=None,
                   help="false-negative guard: skip candidates scoring >= (1 - margin) x the positive's score")
    p.add_argument("--same_group_negatives", choices=["exclude", "allow"], default="exclude",
                   help="SQuAD/KorQuAD: may a paragraph of the question's own article be its negative?")
    p.add_argument("--mining_model", default="minilm-l6", help="bi-encoder for --negatives model")
    p.add_argument("--val_fraction", type=float, default=0.1, help="share of queries (or articles) held out for val when the source has no val split")
    p.add_argument("--test_fraction", type=float, default=0.1, help="used when the source has no test split")
    p.add_argument("--seed", type=int, default=42, help="seed of every random choice (same inputs and seed give the same result)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data version")
    args = p.parse_args(argv)
    try:
        start, end = (int(x) for x in args.rank_window.split(":"))
        if not 0 <= start < end:
            raise ValueError
    except ValueError:
        raise UsageError(f"--rank_window must be START:END with 0 <= START < END (got {args.rank_window!r}); e.g. 0:100") from None
    args.rank_start, args.rank_end = start, end
    if args.random_negatives is None:  # easy negatives beside mined hard ones; a kept CSV or random mining stays as asked
        args.random_negatives = 3 if args.negatives in ("bm25", "model") else 0
    check_args(args, {"num_negatives": AT_LEAST_1, "random_negatives": NON_NEGATIVE, "fn_margin": PROBABILITY,
                      "val_fraction": PROBABILITY, "test_fraction": PROBABILITY})
    if args.val_fraction + args.test_fraction >= 1:
        raise UsageError("--val_fraction + --test_fraction must be < 1; lower them")
    return args


def main(argv=None):
    from crossdistill.prepare import prepare

    prepare(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
