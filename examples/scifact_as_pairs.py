#!/usr/bin/env python
"""Turn BEIR SciFact into what most users hold: (query, passage) pairs and a corpus of passages, as JSONL files.

  python examples/scifact_as_pairs.py --source ../shared/data/scifact --out mydata
  # mydata/pairs.jsonl   {"query": claim, "passage": abstract}   one line per labelled pair of SciFact train and test
  # mydata/corpus.jsonl  {"_id": ..., "text": title + " " + abstract}   all 5,183 abstracts

The files are written at run time from the shared copy (never committed); prepare_data.py then splits the pairs by
query, mines negatives from the corpus and keeps the corpus for validation and evaluation:

  python prepare_data.py --source mydata/pairs.jsonl --corpus mydata/corpus.jsonl --data_version mydata
"""

import argparse
import json
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="../shared/data/scifact", help="the BEIR SciFact folder")
    p.add_argument("--out", default="mydata", help="folder for pairs.jsonl and corpus.jsonl")
    a = p.parse_args()
    from crossdistill.data.sources import load_beir

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = 0
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as f:
        for split in ("train", "test"):
            rs = load_beir(a.source, split)
            for q, docs in rs.qrels.items():
                for d in docs:
                    f.write(json.dumps({"query": rs.queries[q], "passage": rs.corpus[d]}, ensure_ascii=False) + "\n")
                    pairs += 1
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d, text in rs.corpus.items():
            f.write(json.dumps({"_id": d, "text": text}, ensure_ascii=False) + "\n")
    print(f"wrote {out / 'pairs.jsonl'} ({pairs} pairs) and {out / 'corpus.jsonl'} ({len(rs.corpus)} passages)")


if __name__ == "__main__":
    main()
