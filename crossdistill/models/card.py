"""Model cards: the README.md written into every published teacher and student folder (the sentence-transformers
habit): what the model is, how to load it, what it was trained from and on, with which recipe, and its val numbers."""

from __future__ import annotations

import json


def _table(rows: dict) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items())])


def student_card(cfg, summary: dict, base_model: str, teacher_path: str, loss_weights: tuple[str, ...] = ()) -> str:
    """``loss_weights``: the weight settings of the loss's terms (``crossdistill.losses.total.WEIGHTS``), listed."""
    kept = summary["history"][summary["best_epoch"]] if summary.get("history") else {}
    start = summary["history"][0] if summary.get("history") else {}
    settings = {k: getattr(cfg, k, None) for k in ("recipe", "soft_loss", "tau", "scale", *loss_weights, "teacher_fusion",
                                                     "K", "epochs", "batch_size", "lr", "max_len", "use_lora", "seed",
                                                     "matryoshka_dims", "matryoshka_weights", "matryoshka_pca_start",
                                                     "pca_rotation")}
    q_len, p_len = getattr(cfg, "query_len", None), getattr(cfg, "passage_len", None)
    settings.update(query_max_len=q_len, passage_max_len=p_len)
    lengths = (f"- **Lengths**: queries {q_len} tokens, passages {p_len} — sentence-transformers keeps one "
               f"`max_seq_length` per model, so this folder holds {p_len}: set `model.max_seq_length = {q_len}` before "
               f"encoding queries to cut them exactly as in training\n" if q_len and p_len and q_len != p_len else "")
    dims = getattr(cfg, "matryoshka_dims", None)
    matryoshka = (f"- **Matryoshka dimensions**: {dims} — trained to rank well when its vectors are cut to any of them: "
                  f"`SentenceTransformer(\"<this folder>\", truncate_dim={str(dims).split(',')[-1]})`"
                  + (" — the prefixes taken on the principal axes of the starting student's embeddings (the `Dense` "
                     "module)" if getattr(cfg, "matryoshka_pca_start", False) else "") + "\n" if dims else "")
    fit = "passages and queries" if getattr(cfg, "pca_fit", "both") == "both" else "passages"
    rotation = ("- **PCA rotation**: its vectors are turned onto the principal axes of its embeddings of the training "
                f"{fit} (the `Dense` module; every cosine unchanged), so their first dimensions carry the most: cut "
                "them with `SentenceTransformer(\"<this folder>\", truncate_dim=128)`\n"
                if getattr(cfg, "pca_rotation", False) else "")
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [crossdistill, distillation, bi-encoder, retrieval]
base_model: {base_model}
---
# Bi-encoder student distilled by crossdistill

A sentence-transformers bi-encoder: the relevance of a passage to a query is the cosine of their embeddings.

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("<this folder>")
q = model.encode(["your query"], prompt_name="query")       # the saved prompts hold the query/passage prefixes
p = model.encode(["a passage"], prompt_name="passage")
```

- **Started from**: `{base_model}`
- **Teacher**: {teacher_path}
- **Data**: `{cfg.data_root}/{cfg.data_version}` ({summary.get('candidates', {}).get('queries', '?')} training queries)
- **Published**: epoch {summary.get('best_epoch')} (`--keep {cfg.keep}`; epoch 0 is the starting model)
{lengths}{matryoshka}{rotation}
## Validation

{_table({"val MRR@10": f"{start.get('val_mrr@10', float('nan')):.4f} → {kept.get('val_mrr@10', float('nan')):.4f}",
         "val nDCG@10": f"{start.get('val_ndcg@10', float('nan')):.4f} → {kept.get('val_ndcg@10', float('nan')):.4f}"})}

## Training settings

```json
{json.dumps(settings, indent=1, default=str)}
```
"""


def teacher_card(cfg, summary: dict, base_model: str) -> str:
    best = summary.get("best", {})
    settings = {k: getattr(cfg, k, None) for k in ("loss", "pooling", "epochs", "batch_size", "lr", "head_lr", "pos_weight",
                                                     "max_len", "use_lora", "seed")}
    return f"""---
library_name: sentence-transformers
pipeline_tag: text-ranking
tags: [crossdistill, cross-encoder, reranker]
base_model: {base_model}
---
# Cross-encoder teacher trained by crossdistill

Scores a (query, passage) pair; `sigmoid(logit)` is the relevance in 0..1.

```python
from sentence_transformers import CrossEncoder
model = CrossEncoder("<this folder>")
scores = model.predict([("your query", "a passage")])
```

- **Base model**: `{base_model}`
- **Data**: `{cfg.data_root}/{cfg.data_version}`
- **Best epoch**: {summary.get('best_epoch')} of {cfg.epochs}

## Validation (the positive among its negatives)

{_table({"val MRR (in-list)": f"{best.get('val_mrr', float('nan')):.4f}", "val pair accuracy": f"{best.get('val_accuracy', float('nan')):.4f}",
         "val BCE": f"{best.get('val_bce', float('nan')):.4f}"})}

## Training settings

```json
{json.dumps(settings, indent=1, default=str)}
```
"""
