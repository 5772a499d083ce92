#!/usr/bin/env python
"""Teacher training, ours vs sentence-transformers' ``CrossEncoderTrainer`` + ``BinaryCrossEntropyLoss``, on identical work.

Same base model (MiniLM-L6 with a new 1-logit head on its [CLS] pooler: ours with ``--pooling cls``, which is what
``CrossEncoder(base, num_labels=1)`` builds), the same (query, passage, label) pairs (ours expands the prepared CSV
into them; theirs gets exactly that list), the same batch size, max_len, epochs, BCE with the same ``pos_weight``,
AdamW with a linear schedule, the same threads. Ours is the real script, ``train_teacher_model.py``; its training
throughput is its last ``step`` event's ``samples_per_s`` (pairs over the loop's wall time, checkpoints included) and
its peak RSS ``metrics.json``'s. Theirs: ``trainer.train()`` timed, ``ru_maxrss`` of its process. Every measurement
is a fresh process, ours and theirs interleaved, ``--repeats`` times; medians and ratios in the report.

  pip install -r requirements-bench.txt
  python bench/teacher_training_throughput.py --rows 200 --batch_size 16 --max_len 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def examples_of(data_root: Path, version: str, rows: int, seed: int) -> tuple[list[tuple[str, str, float]], float]:
    """The bce examples and pos_weight ``train_teacher`` builds from the same CSV rows (its own code)."""
    from crossdistill.data import versions as data
    from crossdistill.teach.train import bce_examples, group_triplets

    df = data.subsample(data.read_triplets(data.data_file(version, "train", str(data_root))), rows, seed)
    return bce_examples(group_triplets(df))


def ours(a, work: Path) -> dict:
    out = work / f"ours-{time.time_ns()}"
    cmd = [sys.executable, str(ROOT / "train_teacher_model.py"), "--data_root", str(work / "data"), "--data_version", "bench",
           "--output_dir", str(out), "--model_name", a.model, "--pooling", "cls", "--epochs", "1",
           "--batch_size", str(a.batch_size), "--max_len", str(a.max_len), "--max_samples", str(a.rows),
           "--max_val_samples", "8", "--save_steps", "0", "--log_steps", "1", "--seed", str(a.seed)]
    if a.attention_dropout is not None:
        cmd += ["--attention_dropout", str(a.attention_dropout)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    steps = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines() if '"event": "step"' in x]
    metrics = json.loads((out / "metrics.json").read_text())
    return {"per_s": steps[-1]["samples_per_s"], "seconds": steps[-1]["elapsed_s"], "peak_rss_mib": metrics["peak_rss_mib"],
            "peak_gpu_gib": metrics.get("peak_gpu_memory_gib")}


def theirs_child(a, work: Path) -> dict:
    """In this process: sentence-transformers' trainer on the same pairs."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from crossdistill.models.resolve import resolve_model

    ex, pos_weight = examples_of(work / "data", "bench", a.rows, a.seed)
    ds = Dataset.from_dict({"query": [e[0] for e in ex], "passage": [e[1] for e in ex], "label": [e[2] for e in ex]})
    torch.manual_seed(a.seed)
    config = {} if a.attention_dropout is None else {"attention_probs_dropout_prob": a.attention_dropout}
    cuda = torch.cuda.is_available()  # ours runs on the GPU when there is one (--mixed_precision auto: bf16): so does theirs
    model = CrossEncoder(resolve_model(a.model).path, num_labels=1, max_length=a.max_len, device="cuda" if cuda else "cpu",
                         config_kwargs=config)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight))
    with tempfile.TemporaryDirectory() as tmp:
        targs = CrossEncoderTrainingArguments(output_dir=tmp, num_train_epochs=1, per_device_train_batch_size=a.batch_size,
                                              learning_rate=5e-5, warmup_ratio=0.1, weight_decay=0.01, save_strategy="no",
                                              report_to="none", logging_steps=10_000, seed=a.seed, use_cpu=not cuda,
                                              bf16=cuda, dataloader_drop_last=False)
        trainer = CrossEncoderTrainer(model=model, args=targs, train_dataset=ds, loss=loss)
        t0 = time.perf_counter()
        trainer.train()
        secs = time.perf_counter() - t0
    return {"per_s": len(ex) / secs, "seconds": secs, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "scifact"), help="BEIR folder to prepare")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--rows", type=int, default=200, help="training CSV rows (their distinct positive and negative pairs are the work)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_len", type=int, default=128)
    p.add_argument("--attention_dropout", type=float, default=None, help="both sides (default: the model's own)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="bench/results/teacher_training_throughput.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(theirs_child(a, Path(a.child))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, str(ROOT / "prepare_data.py"), "--source", a.source, "--data_version", "bench",
                        "--data_root", str(work / "data")], check=True, capture_output=True, text=True)
        n_pairs = len(examples_of(work / "data", "bench", a.rows, a.seed)[0])
        runs: dict = {"ours": [], "sentence_transformers": []}
        for r in range(a.repeats):  # interleaved, so that machine noise hits both alike
            runs["ours"].append(ours(a, work))
            cmd = [sys.executable, __file__, "--child", str(work), "--model", a.model, "--rows", str(a.rows),
                   "--batch_size", str(a.batch_size), "--max_len", str(a.max_len), "--seed", str(a.seed)]
            if a.attention_dropout is not None:
                cmd += ["--attention_dropout", str(a.attention_dropout)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            runs["sentence_transformers"].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {r + 1}: ours {runs['ours'][-1]} | ST {runs['sentence_transformers'][-1]}", flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("per_s", "peak_rss_mib")} for k, v in runs.items()}
    report = {"setup": {"pairs": n_pairs, **{k: getattr(a, k) for k in ("model", "rows", "batch_size", "max_len",
                                                                        "attention_dropout", "repeats", "seed")},
                        "threads": __import__("torch").get_num_threads(), "machine": f"{os.cpu_count()} CPU cores"},
              "runs": runs, "median": med,
              "median_gpu": {k: statistics.median(x["peak_gpu_gib"] for x in v) if v[0].get("peak_gpu_gib") is not None
                             else None for k, v in runs.items()},
              "ratio_speed_ours_over_st": med["ours"]["per_s"] / med["sentence_transformers"]["per_s"],
              "ratio_rss_ours_over_st": med["ours"]["peak_rss_mib"] / med["sentence_transformers"]["peak_rss_mib"]}
    print(f"== teacher training: ours {med['ours']['per_s']:.2f} pairs/s vs ST {med['sentence_transformers']['per_s']:.2f} "
          f"(x{report['ratio_speed_ours_over_st']:.2f}); peak RSS {med['ours']['peak_rss_mib']:.0f} vs "
          f"{med['sentence_transformers']['peak_rss_mib']:.0f} MiB (x{report['ratio_rss_ours_over_st']:.2f})", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
