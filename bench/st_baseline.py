#!/usr/bin/env python
"""The labels-only baseline every distilled student must beat: sentence-transformers' own ``SentenceTransformerTrainer``
with ``MultipleNegativesRankingLoss`` on a prepared version's train.csv (anchor, positive, negative), no teacher.

Same settings as the default student: epochs 3, batch 16, lr 2e-5, max_len 256, warm-up 10 %, weight decay 0.01,
``BatchSamplers.NO_DUPLICATES``, the same seed; the kept epoch (the starting model, epoch 0, included, as ours) is the
one with the best val MRR@10 over the same val pool the student's epochs are judged on (the version's corpus when it
has one). The output folder is a sentence-transformers model with ``done.json`` and ``metrics.json`` beside it.

  python bench/st_baseline.py --data_root preprocessed --data_version scifact --output_dir models/st_mnrl --seed 42
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from crossdistill.data import eval_sets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _val_mrr(model, pool, batch_size: int, prefixes: tuple[str, str]) -> dict:
    from crossdistill.evaluate.metrics import matrix_ranking_metrics

    kw = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    cos = (model.encode([prefixes[0] + q for q in pool.queries], **kw)
           @ model.encode([prefixes[1] + p for p in pool.passages], **kw).T)
    m = matrix_ranking_metrics(cos, pool.relevant())
    return {"val_mrr@10": m["mrr@10"], "val_ndcg@10": m["ndcg@10"]}


def train_st_mnrl(data_root: str, data_version: str, output_dir: str | Path, seed: int = 42, model_name: str = "minilm-l6",
                  epochs: int = 3, batch_size: int = 16, lr: float = 2e-5, max_len: int = 256,
                  max_samples: int | None = None, eval_batch_size: int = 64, device: str | None = None) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers, SentenceTransformerTrainingArguments

    from crossdistill.core.files import write_json
    from crossdistill.core.training import seed_everything
    from crossdistill.data import versions as data
    from crossdistill.distill.validation import val_pool_passages
    from crossdistill.models.resolve import resolve_model

    out = Path(output_dir)
    version = data.DataVersion(Path(data_root), data_version)
    train = version.split("train", max_samples, seed)
    val_df = version.split("val")
    corpus, pool_info = val_pool_passages(version, "auto")
    pool = eval_sets.TripletPool.from_df(val_df, corpus)
    seed_everything(seed)
    resolved = resolve_model(model_name)
    prefixes = (resolved.query_prefix, resolved.passage_prefix)  # e5: "query: " / "passage: ", in training and in val
    model = SentenceTransformer(resolved.path, device=device)
    model.max_seq_length = max_len
    history = [{"epoch": 0, **_val_mrr(model, pool, eval_batch_size, prefixes)}]
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(work), num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=lr,
        warmup_ratio=0.1, weight_decay=0.01, batch_sampler=BatchSamplers.NO_DUPLICATES, seed=seed, data_seed=seed,
        save_strategy="epoch", save_total_limit=None, report_to="none", logging_steps=50, dataloader_drop_last=False,
        prompts={"anchor": prefixes[0], "positive": prefixes[1], "negative": prefixes[1]} if any(prefixes) else None)
    trainer = SentenceTransformerTrainer(model=model, args=targs,
                                         train_dataset=Dataset.from_pandas(train[list(data.COLUMNS)], preserve_index=False),
                                         loss=MultipleNegativesRankingLoss(model))
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    checkpoints = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for epoch, ckpt in enumerate(checkpoints, 1):
        history.append({"epoch": epoch, **_val_mrr(SentenceTransformer(str(ckpt), device=device), pool, eval_batch_size,
                                                   prefixes)})
    best = max(history, key=lambda h: h["val_mrr@10"])  # the first of equals: the earliest epoch
    source = resolve_model(model_name).path if best["epoch"] == 0 else str(checkpoints[best["epoch"] - 1])
    kept = SentenceTransformer(source, device=device)
    kept.max_seq_length = max_len
    kept.prompts = {"query": prefixes[0], "passage": prefixes[1]}
    shutil.rmtree(out, ignore_errors=True)
    kept.save(str(out))
    metrics = {"best_epoch": best["epoch"], "history": history, "train_seconds": round(seconds, 1),
               "train_rows": len(train), "val_pool": {**pool_info, "queries": len(pool.queries), "passages": len(pool.passages)},
               "settings": {"model": model_name, "epochs": epochs, "batch_size": batch_size, "lr": lr, "max_len": max_len,
                            "seed": seed, "loss": "MultipleNegativesRankingLoss", "batch_sampler": "no_duplicates"}}
    write_json(out / "metrics.json", metrics)
    write_json(out / "distillation_config.json", {"max_len": max_len, "student_name": model_name, "teacher_path": None})
    write_json(out / "done.json", {"stage": "st_mnrl", "best_epoch": best["epoch"], **best})
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="preprocessed")
    p.add_argument("--data_version", default="scifact")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--model_name", default="minilm-l6")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--max_samples", type=int, default=None)
    a = p.parse_args()
    m = train_st_mnrl(a.data_root, a.data_version, a.output_dir, a.seed, a.model_name, a.epochs, a.batch_size, a.lr,
                      a.max_len, a.max_samples)
    print(json.dumps({k: m[k] for k in ("best_epoch", "history", "train_seconds")}, indent=1))


if __name__ == "__main__":
    main()
