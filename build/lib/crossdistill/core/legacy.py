"""What earlier versions of this toolkit wrote to disk, read here and nowhere else.

Every folder, checkpoint and cache a 0.x version wrote keeps working until :data:`DROP_AT`; at that version this
module is deleted with the lines that call it, and such files meet the ordinary checks instead (a folder without an
owner file is "not a run of this toolkit", a cache without its meta table "not a cache this toolkit built"). Each
name below is one rule: what was written then, what is written now, and who reads it.

===============================  ========================================  ==================================
written by earlier versions      written now                               read through
===============================  ========================================  ==================================
``lora_config.json``             ``teacher_config.json``                   :data:`TEACHER_CONFIG`
``.crossdistill-run`` marker     ``.crossdistill.json`` (the owner file)   :data:`MARKER`, :func:`run_stage`
``.done.previous.json``          ``.previous/`` (an overwritten result)    :data:`PREVIOUS_DONE`
no manifest in the owner file    the manifest of the names it wrote        :data:`FILES_BY_KIND`
``checkpoints/best.pt``          ``best.pt`` inside each checkpoint         :func:`best_beside`
a best model without its key     ``best["key"]``                           :func:`best_key`
no settings in ``state.json``    the run's settings                        :func:`recorded_settings`
score cache without ``meta``     a ``meta`` table naming the cache         :data:`SCORE_CACHE_TABLES`
===============================  ========================================  ==================================
"""

from __future__ import annotations

from pathlib import Path

DROP_AT = "1.0.0"  # the version that stops reading every format below

TEACHER_CONFIG = "lora_config.json"  # a teacher folder's own settings, under its earlier name
MARKER = ".crossdistill-run"  # written while a run trained (its "stage" = the kind), before the owner file
PREVIOUS_DONE = ".done.previous.json"  # an overwritten result's done.json, set aside before .previous/ existed
BEST_BESIDE = "best.pt"  # the best model, kept beside the checkpoints (checkpoints/best.pt) before it moved inside
SCORE_CACHE_TABLES = ({"scores": ["k", "logit"]},)  # the teacher-score cache's schema before its meta table

_MODEL_FILES = frozenset({"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "vocab.txt", "sentencepiece.bpe.model", "training_args.json",
                          "metrics.json", "README.md", "done.json", "adapter"})
# the names each kind wrote, for folders whose owner file lists none (written before the manifest existed)
FILES_BY_KIND = {
    "prepared_data": frozenset({"train.csv", "val.csv", "test.csv", "prepare_config.json", "corpus.jsonl"}),
    "evaluation": frozenset({"bi_encoder_evaluation_results.json", "bi_encoder_evaluation_analysis.png",
                             "bi_encoder_retrieval_comparison.png", "report.md"}),
    "teacher": _MODEL_FILES | {"teacher_config.json", TEACHER_CONFIG},
    "student": _MODEL_FILES | {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling", "2_Normalize", "onnx", "export.json", "distillation_config.json"},
}


def run_stage(path: Path, read_json, read_events) -> str | None:
    """The stage (``teacher``/``student``) of a training folder written before the owner file: its marker or
    ``done.json`` naming the stage, or a run with checkpoints whose ``start`` event names it; None otherwise."""
    for f in (path / MARKER, path / "done.json"):
        info = read_json(f)
        if isinstance(info, dict) and info.get("stage") in ("teacher", "student"):
            return info["stage"]
    if (path / "checkpoints" / "latest.json").is_file():
        for event in read_events(path / "events.jsonl")[:50]:
            if isinstance(event, dict) and event.get("event") == "start" and event.get("stage") in ("teacher", "student"):
                return event["stage"]
    return None


def best_beside(checkpoint: Path) -> Path | None:
    """The best model an earlier version kept beside its checkpoints (``checkpoints/best.pt``), if there is one."""
    old = checkpoint.parent / BEST_BESIDE
    return old if old.is_file() else None


def best_key(best: dict, history: list[dict], key) -> list[float]:
    """The selection key of a best-model record; earlier versions recorded its epoch, not its key: computed from
    that epoch's val row (``key``: the stage's own key function)."""
    if "key" not in best:
        best["key"] = key(next(r for r in history if r["epoch"] == best["epoch"]))
    return best["key"]


def recorded_settings(state: dict) -> dict | None:
    """The settings a checkpoint's ``state.json`` recorded; None for a checkpoint of a version that recorded none
    (its resume is then not compared setting by setting)."""
    settings = state.get("settings") if isinstance(state, dict) else None
    return settings if isinstance(settings, dict) else None
