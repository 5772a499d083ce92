"""What a model folder is, and whether it may be loaded: the one rule every flag that takes a model asks
(:func:`model_folder_kind`), a teacher folder's own settings file, and the refusals made before anything is loaded
(pickled weights, code of its own, an unknown architecture, missing tokenizer files)."""

from __future__ import annotations

import json
from pathlib import Path

from crossdistill.core import legacy
from crossdistill.core.errors import UsageError

# a teacher folder's own settings (prefixes, max_len, loss, LoRA), under its name and an earlier version's

TEACHER_CONFIG_NAMES = ("teacher_config.json", legacy.TEACHER_CONFIG)


def teacher_config_file(folder: str | Path) -> Path | None:
    """The settings file of a teacher folder this toolkit wrote (either name), or None."""
    for name in TEACHER_CONFIG_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def model_folder_kind(folder: str | Path) -> str | None:
    """What a model folder is — the one rule every flag that takes a model asks: ``"cross-encoder"`` (a
    ``*ForSequenceClassification`` architecture, or a teacher folder this toolkit wrote), ``"bi-encoder"`` (a
    sentence-transformers embedding model: its modules hold a Pooling layer), ``"encoder"`` (a bare transformers encoder,
    which sentence-transformers loads with mean pooling), or None (not a model folder)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    archs = [str(a) for a in (config.get("architectures") or [])] if isinstance(config, dict) else []
    if any(a.endswith("ForSequenceClassification") for a in archs) or teacher_config_file(folder) is not None:
        return "cross-encoder"
    modules = folder / "modules.json"
    if modules.is_file() and "Pooling" in modules.read_text(encoding="utf-8", errors="replace"):
        return "bi-encoder"
    return "encoder"


def is_bi_encoder_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a sentence-transformers embedding model (:func:`model_folder_kind`)."""
    return model_folder_kind(folder) == "bi-encoder"


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")


def check_tokenizer_files(folder: str | Path, what: str = "model") -> None:
    """Refuse a model folder that holds no tokenizer: transformers 5 would build a 5-token one from the special tokens
    alone, every word [UNK], and a run would train and report numbers with exit 0."""
    folder = Path(folder)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise UsageError(f"the {what} folder {folder} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])} ...): "
                         "without them every word would be an unknown token; save the tokenizer with the model "
                         "(tokenizer.save_pretrained(folder))")


def refuse_pickled_weights(folder: str | Path) -> None:
    """Refuse a model folder whose weights exist only as pickles (``pytorch_model*.bin``, no ``*.safetensors``):
    nothing this toolkit loads is ever unpickled."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    refuse_custom_code(folder)
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return  # what transformers loads (a stray other *.safetensors beside a pickle does not count)
    pickled = sorted(p.name for p in folder.glob("*.bin") if p.name.startswith(("pytorch_model", "model")))
    if pickled:
        raise UsageError(f"refusing to unpickle {folder / pickled[0]}: pickle-based weights can run code when loaded, and "
                         "this folder has no safetensors; convert it to safetensors where you trust it (transformers: "
                         "from_pretrained(folder).save_pretrained(folder, safe_serialization=True)) and pass it again")


def refuse_custom_code(folder: Path) -> None:
    """Refuse a model folder whose ``config.json`` asks for code of its own (``auto_map``: transformers would need
    ``trust_remote_code``, which this toolkit never passes) or names a ``model_type`` this transformers does not know:
    one line before loading, not a traceback from inside transformers."""
    f = folder / "config.json"
    if not f.is_file():
        return
    from crossdistill.core.files import read_json_object
    from transformers import CONFIG_MAPPING

    config = read_json_object(f, "the model folder is damaged: restore it or save the model again",
                              {"model_type": str, "auto_map": dict})
    if config.get("auto_map"):
        names = ", ".join(f"{k} -> {v}" for k, v in list(config["auto_map"].items())[:2])
        raise UsageError(f"{folder} needs code of its own to load (config.json auto_map: {names}); this toolkit never runs "
                         "code from a model folder (trust_remote_code): pass a model whose architecture transformers has")
    model_type = config.get("model_type")
    if model_type and model_type not in CONFIG_MAPPING:
        raise UsageError(f"{folder}: config.json names the model type {model_type!r}, which this transformers does not "
                         "know; pass a model of a known architecture (or upgrade transformers)")
