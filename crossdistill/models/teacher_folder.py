"""Which folders are teachers: any one-label cross-encoder (this toolkit's, a sentence-transformers ``CrossEncoder``,
a one-label transformers classifier), with its activation, maximum length and prompts read from its own files; a
bi-encoder, a bare encoder, an N-label classifier or a folder without weights or tokenizer is refused in one line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


from crossdistill.core.errors import UsageError
from crossdistill.models.folders import check_tokenizer_files, refuse_pickled_weights, teacher_config_file
from crossdistill.core.settings import DEFAULT_MAX_LEN


# --------------------------------------------------------------------------- which folders are teachers
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity"}


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher folder is and how it scores: ``kind`` is ``crossdistill`` (written by train_teacher_model.py),
    ``sentence-transformers`` (a ``CrossEncoder`` folder, v2-v6 layouts) or ``transformers`` (a one-label
    ``*ForSequenceClassification`` folder); ``activation`` turns a logit into its relevance (``sigmoid`` or
    ``identity``), read from the folder's own config as ``CrossEncoder`` reads it."""

    path: str
    kind: str
    activation: str
    max_len: int
    query_prefix: str
    passage_prefix: str
    settings: dict            # a crossdistill teacher's teacher_config.json; {} for the others
    base_model: str | None


def _json(path: Path) -> dict:
    from crossdistill.core.files import read_json_object

    return read_json_object(path, "the model folder is damaged: restore it or save the model again")


def _activation(folder: Path, config: dict) -> str:
    """sentence-transformers' activation of a CrossEncoder folder: ``config_sentence_transformers.json`` (v5+),
    ``config.json``'s ``sentence_transformers`` block (v4) or ``sbert_ce_default_activation_function`` (v2-v3); a
    one-label model without any of them gets CrossEncoder's default, the sigmoid."""
    st = _json(folder / "config_sentence_transformers.json") if (folder / "config_sentence_transformers.json").is_file() else {}
    block = config.get("sentence_transformers") if isinstance(config.get("sentence_transformers"), dict) else {}
    name = st.get("activation_fn") or block.get("activation_fn") or config.get("sbert_ce_default_activation_function")
    if not name:
        return "sigmoid"
    short = str(name).rsplit(".", 1)[-1]
    if short not in _ACTIVATIONS:
        raise UsageError(f"the cross-encoder {folder} scores with the activation {name}; teachers score with a sigmoid or "
                         "none (Identity): save it with one of those (CrossEncoder(..., activation_fn=...))")
    return _ACTIVATIONS[short]


def _max_len(folder: Path, config: dict) -> int:
    """The folder's own maximum length: the tokenizer's ``model_max_length`` (where CrossEncoder keeps ``max_length``)
    when set, within the position embeddings; else the position limit; 512 at most when neither says."""
    from crossdistill.models.resolve import position_limit

    class _Cfg:  # position_limit reads two attributes
        max_position_embeddings = config.get("max_position_embeddings")
        model_type = config.get("model_type", "")

    limit = position_limit(_Cfg) or 512
    tok_cfg = folder / "tokenizer_config.json"
    declared = _json(tok_cfg).get("model_max_length") if tok_cfg.is_file() else None
    if isinstance(declared, (int, float)) and 8 <= declared < 100_000:
        return int(min(declared, limit))
    return int(min(limit, 512))


def inspect_teacher(path: str | Path, finished: bool = True) -> TeacherSpec:
    """What the folder at ``path`` is as a teacher, or one UsageError that says what it is instead: a folder that is
    missing, has no config or no weights, a toolkit teacher that never finished publishing, a bi-encoder (an embedding
    model), a bare encoder without a classification head, or a classifier with more than one label (NLI: 3).
    ``finished=False``: a toolkit teacher need not have published ``done.json`` (a folder being written, in tests)."""
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"teacher {folder} does not exist; pass a cross-encoder folder (train one with "
                         "train_teacher_model.py), or a hub id such as cross-encoder/ms-marco-MiniLM-L6-v2")
    if not (folder / "config.json").is_file():
        raise UsageError(f"teacher {folder} holds no config.json, so it is not a model folder; pass a cross-encoder folder")
    config = _json(folder / "config.json")
    own = teacher_config_file(folder)
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        advice = ("the teacher was never fully published; resume its training (train_teacher_model.py ... --resume) or "
                  "train it again") if own else "save the model with its weights (save_pretrained / CrossEncoder.save)"
        raise UsageError(f"teacher {folder} has a config but no weights (model.safetensors): {advice}")
    refuse_pickled_weights(folder)
    check_tokenizer_files(folder, "teacher")
    if own is not None and finished and not (folder / "done.json").is_file():
        raise UsageError(f"teacher {folder} has weights but no done.json: its training never finished publishing (or the "
                         "folder was assembled by hand); resume it (train_teacher_model.py ... --resume) or pass a teacher "
                         "whose run finished")
    archs = [str(a) for a in config.get("architectures") or []]
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        modules = folder / "modules.json"
        pooling = modules.is_file() and "Pooling" in modules.read_text(encoding="utf-8", errors="replace")
        what = (f"a bi-encoder (a sentence-transformers embedding model: {', '.join(archs) or 'an encoder'} + Pooling)"
                if pooling else f"an encoder without a classification head ({', '.join(archs) or 'no architecture'})")
        raise UsageError(f"teacher {folder} is {what}, not a cross-encoder; pass a cross-encoder (one-label "
                         "*ForSequenceClassification), or train one from it: train_teacher_model.py --model_name "
                         f"{folder}")
    labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels", 2)
    if labels != 1:
        names = ", ".join(map(str, (config.get("id2label") or {}).values()))
        raise UsageError(f"teacher {folder} is a classifier with {labels} labels ({names or 'no label names'}; e.g. an NLI "
                         "model), not a relevance cross-encoder with one score; pass a one-label cross-encoder (reranker)")
    if own is not None:
        settings = read_teacher_config(folder)
        return TeacherSpec(str(folder), "crossdistill", "sigmoid", int(settings.get("max_len", DEFAULT_MAX_LEN)),
                           settings.get("query_prefix", ""), settings.get("passage_prefix", ""), settings,
                           settings.get("base_model"))
    from crossdistill.models.resolve import resolve_model

    st_layout = (folder / "config_sentence_transformers.json").is_file() or "sentence_transformers" in config or \
        "sbert_ce_default_activation_function" in config
    prefixes = resolve_model(str(folder))
    return TeacherSpec(str(folder), "sentence-transformers" if st_layout else "transformers", _activation(folder, config),
                       _max_len(folder, config), prefixes.query_prefix, prefixes.passage_prefix, {},
                       config.get("_name_or_path") or None)


def locate_teacher(name: str) -> str:
    """A local folder for ``--teacher_path``: the folder itself, or a hub id's snapshot (downloaded when online, the local
    cache offline: ``huggingface_hub.snapshot_download``)."""
    from crossdistill.models.resolve import hub_snapshot, looks_local, unreachable

    folder = Path(str(name)).expanduser()
    if folder.exists():
        return str(folder)
    if looks_local(str(name)):
        raise unreachable(str(name), "teacher")
    return hub_snapshot(str(name), "teacher", ["*.json", "*.safetensors", "*.txt", "*.model", "*.md"])


def read_teacher_config(path: str | Path) -> dict:
    f = teacher_config_file(path)
    if f is None:
        return {}
    from crossdistill.core.files import read_json_object

    return read_json_object(f, "the teacher folder is damaged: train it again or restore it",
                            {"max_len": int, "query_prefix": str, "passage_prefix": str, "base_model": str})
