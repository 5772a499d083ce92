#!/usr/bin/env python
"""Start-up cost of the published ranking metrics (ranx + numba) when document-id lengths change.

ranx compiles its numba kernels for the NumPy string width of the run's document ids, and numba's disk cache keeps one
copy per width. This runs one fresh process per id length (5, 6, 7 characters by default: three pool sizes), all
sharing one empty ``NUMBA_CACHE_DIR`` as a fresh environment would, and times 300 queries x 100 documents through
``crossdistill.evaluate.metrics.ranking_metrics`` (ids padded to one width) and, with ``--raw``, through ranx directly (ids as
they are: the behaviour before the padding).

  python bench/ranx_startup.py            # padded: the first process compiles, the others reuse the cache
  python bench/ranx_startup.py --raw      # unpadded: every new id length compiles again
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(width: int, raw: bool) -> dict:
    random.seed(0)
    qrels = {f"q{i}": {f"d{i * 3:0{width - 1}d}": 1} for i in range(300)}
    run = {f"q{i}": {f"d{j:0{width - 1}d}": random.random() for j in random.sample(range(1900), 100)} for i in range(300)}
    t0 = time.perf_counter()
    if raw:
        import warnings

        from ranx import Qrels, Run, evaluate

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ndcg = evaluate(Qrels(qrels), Run(run), ["ndcg@10"], make_comparable=True)
    else:
        sys.path.insert(0, str(ROOT))
        from crossdistill.evaluate.metrics import ranking_metrics

        ndcg = ranking_metrics(qrels, run, ("ndcg@10",))["ndcg@10"]
    return {"id_length": width, "seconds": round(time.perf_counter() - t0, 1), "ndcg@10": float(ndcg)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="5,6,7", help="document-id lengths, one process each, in this order")
    p.add_argument("--raw", action="store_true", help="call ranx with the ids as they are (no padding)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.raw)))
        return
    with tempfile.TemporaryDirectory() as cache:
        for width in map(int, a.lengths.split(",")):
            cmd = [sys.executable, __file__, "--child", str(width)] + (["--raw"] if a.raw else [])
            out = subprocess.run(cmd, env={**os.environ, "NUMBA_CACHE_DIR": cache}, capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
