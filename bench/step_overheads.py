#!/usr/bin/env python
"""Where a student step's time goes besides the matmuls, on real SciFact batches (issue #29's CPU-side levers).

- tokenisation: ``st.preprocess`` of a step's texts (the tokenizer, every step) against padding the ids computed once
  before the loop (``BiEncoderStudent.pretokenize``, what the training now does);
- padding: the share of pad tokens in a step's passages with the training's random batches, against batches of
  queries sorted by the length of their candidates (length buckets);
- the forward and backward pass of the same step, for scale.

  python bench/step_overheads.py --data_root preprocessed --data_version scifact --steps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="preprocessed")
    p.add_argument("--data_version", default="scifact")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--K", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="batches timed (forward/backward: the first 2 of them)")
    p.add_argument("--out", default="bench/results/step_overheads.json")
    a = p.parse_args()

    import numpy as np
    import torch
    from accelerate import Accelerator

    from crossdistill.core.training import epoch_order
    from crossdistill.data import versions as data
    from crossdistill.data.candidates import build_candidates
    from crossdistill.distill.batch import collate
    from crossdistill.distill.recipes import loss_settings
    from crossdistill.distill.step import forward_backward
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.student import BiEncoderStudent

    df = data.read_triplets(data.data_file(a.data_version, "train", a.data_root))
    lists, _ = build_candidates(df, a.K, "bm25", 42)
    student = BiEncoderStudent.load(resolve_model(a.model), a.max_len)
    order = epoch_order(len(lists), 42, 1)
    batches = [[lists[i] for i in order[s:s + a.batch_size]] for s in range(0, len(order), a.batch_size)]

    def texts(batch):
        return ([student.query_prefix + c.query for c in batch] +
                list(dict.fromkeys(student.passage_prefix + p for c in batch for p in c.passages)))

    t_tok, t_pad = [], []
    for batch in batches[:a.steps]:
        t0 = time.perf_counter()
        student.st.preprocess(texts(batch))
        t_tok.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    student.pretokenize([t for b in batches for t in texts(b)])
    pretok_s = time.perf_counter() - t0
    for batch in batches[:a.steps]:
        t0 = time.perf_counter()
        student._features(texts(batch))
        t_pad.append(time.perf_counter() - t0)

    def pad_share(bs):
        shares = []
        for batch in bs:
            n = [len(student.__dict__["_token_ids"][t]) for t in texts(batch)[len(batch):]]
            shares.append(1 - sum(n) / (len(n) * max(n)))
        return float(np.mean(shares))

    by_length = sorted(lists, key=lambda c: np.mean([len(student.__dict__["_token_ids"][student.passage_prefix + p])
                                                     for p in c.passages]))
    buckets = [by_length[s:s + a.batch_size] for s in range(0, len(by_length), a.batch_size)]
    acc = Accelerator(cpu=True)
    soft = torch.rand(a.batch_size, a.K)
    fb = []
    for batch in batches[:2]:
        t0 = time.perf_counter()  # the collation (padding once) counts, as it did inside the step
        prepared = collate(batch, [t[:len(c.passages)] for t, c in zip(soft, batch)], student.query_prefix,
                           student.passage_prefix)
        forward_backward(student, prepared, loss_settings("ranking"), None, 1, acc)
        fb.append(time.perf_counter() - t0)
        student.zero_grad()
    res = {"setup": {k: getattr(a, k) for k in ("model", "K", "batch_size", "max_len", "steps")},
           "threads": torch.get_num_threads(),
           "texts_per_step_median": statistics.median(len(texts(b)) for b in batches),
           "tokenize_per_step_ms": round(1000 * statistics.median(t_tok), 2),
           "pad_cached_ids_per_step_ms": round(1000 * statistics.median(t_pad), 2),
           "pretokenize_all_once_s": round(pretok_s, 2), "steps_per_epoch": len(batches),
           "pad_share_random_batches": round(pad_share(batches), 4),
           "pad_share_length_buckets": round(pad_share(buckets), 4),
           "forward_backward_per_step_s": round(statistics.median(fb), 2)}
    print(json.dumps(res, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
