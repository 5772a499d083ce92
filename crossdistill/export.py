"""A fast student for serving: its ONNX model (fp32) and a dynamically quantised int8 copy, written into the student
folder in the layout sentence-transformers' ONNX backend reads (``onnx/model.onnx``, ``onnx/model_qint8_avx2.onnx``).

The export runs the student's transformer through ``torch.onnx.export`` (inputs ``input_ids``, ``attention_mask``
[, ``token_type_ids``], output ``last_hidden_state``, dynamic batch and length: what Optimum's feature-extraction export
produces) and quantises its weights to int8 with ONNX Runtime's ``quantize_dynamic`` (activations quantised on the fly,
per row). Pooling and normalisation stay the sentence-transformers modules of the folder, so
``SentenceTransformer(folder, backend="onnx", model_kwargs={"file_name": "onnx/model_qint8_avx2.onnx"})`` loads either
where Optimum is installed, and :class:`OnnxEncoder` runs them here with ONNX Runtime alone (sentence-transformers 6's
own exporter needs optimum-onnx, which does not support transformers 5).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from .errors import UsageError
from .fsutil import atomic_file, write_json

FORMATS = ("onnx", "onnx-int8")
FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8_avx2.onnx"}


def parse_formats(spec: str | None) -> list[str]:
    """``"onnx,onnx-int8"`` → ["onnx", "onnx-int8"]; None or "" → []; anything else is a UsageError."""
    if not spec:
        return []
    out = []
    for part in (p.strip() for p in str(spec).split(",")):
        if part not in FORMATS:
            raise UsageError(f"--export/--formats takes {' or '.join(FORMATS)} (comma-separated); got {spec!r}")
        if part not in out:
            out.append(part)
    return out


def missing_packages() -> list[str]:
    """The packages the export needs that are not installed (onnx, onnxruntime)."""
    import importlib.util

    return [p for p in ("onnx", "onnxruntime") if importlib.util.find_spec(p) is None]


def export_target(model_path: str, output_dir: str | None) -> Path:
    """The folder ``export_student.py`` writes into: the student folder itself when this toolkit wrote it, or with
    ``--output_dir`` a new copy of any model (an installed alias, a hub cache, the user's own folder are never written
    into: refused without ``--output_dir``)."""
    import shutil

    from .fsutil import atomic_dir, check_output_dir, folder_kind, mark_owner, refuse_overlap
    from .models import resolve_model

    source = Path(resolve_model(model_path).path)
    if not source.is_dir():
        raise UsageError(f"--model_path {model_path} is not a local folder; pass a student folder (or any model with "
                         "--output_dir)")
    if output_dir is None:
        if folder_kind(source) != "student":
            raise UsageError(f"{source} is not a student folder this toolkit wrote (an installed model, a hub cache or "
                             "your own folder), so the export will not write into it; pass --output_dir NEW_FOLDER to "
                             "export into a copy")
        return source
    refuse_overlap(output_dir, "--output_dir", {"--model_path": str(source)})
    out = check_output_dir(output_dir, False, "student")
    with atomic_dir(out) as tmp:
        for item in source.iterdir():
            if item.name in ("checkpoints", "events.jsonl", ".staging", ".previous") or item.name.startswith(".run"):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        for name in ("onnx", "export.json", ".crossdistill.json"):  # the copy's export is its own
            target = tmp / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        mark_owner(tmp, "student")
    return out


def export_student(folder: str | Path, formats: list[str], log=print) -> dict[str, str]:
    """Write the requested formats into the student ``folder`` (each file written to a temporary name and renamed into
    place); returns {format: relative path}. Missing packages are one clear UsageError naming the install."""
    folder = Path(folder)
    if not formats:
        return {}
    missing = missing_packages()
    if missing:
        raise UsageError(f"the ONNX export needs {' and '.join(missing)}: pip install onnx onnxruntime (or leave "
                         "--export out)")
    if not (folder / "modules.json").is_file():
        raise UsageError(f"{folder} is not a sentence-transformers folder (no modules.json); pass a student folder")
    if (folder / "onnx").exists() and not (folder / "onnx").is_dir():
        raise UsageError(f"{folder / 'onnx'} is a file, where the export writes its folder; move it away")
    src = _transformer_dir(folder)
    if not any((src / w).is_file() for w in ("model.safetensors", "model.safetensors.index.json")):
        raise UsageError(f"cannot export {folder}: it has no weights (model.safetensors), a half-written folder; export a "
                         "complete student folder (one whose training finished: done.json)")
    try:
        return _export(folder, formats, log)
    except OSError as exc:  # a read-only folder, a full disk: each file was written to a temporary name, so none is half
        raise UsageError(f"could not export into {folder} ({exc.strerror or str(exc).splitlines()[0][:160]}); free disk "
                         "space or fix permissions and export again") from None
    except (RuntimeError, ValueError) as exc:  # a half-written or damaged model folder
        raise UsageError(f"cannot export {folder}: its model does not load ({str(exc).splitlines()[0][:200]}); export a "
                         "complete student folder (one whose training finished: done.json)") from None


def _export(folder: Path, formats: list[str], log) -> dict[str, str]:
    recorded = _read_export_info(folder)
    ours = [recorded[f] for f in FILES if f in recorded]
    _serving_modules(folder)  # a pooling or a module the ONNX encoder cannot reproduce is refused before any work
    for fmt in formats:  # a file of the same name this toolkit did not write is never replaced
        if (folder / FILES[fmt]).exists() and FILES[fmt] not in ours:
            raise UsageError(f"{folder / FILES[fmt]} exists and was not written by this toolkit's export; move it away "
                             "or export into a copy of the folder")
    (folder / "onnx").mkdir(exist_ok=True)
    written = {}
    fp32 = folder / FILES["onnx"]
    if "onnx" in formats or "onnx-int8" in formats:
        if "onnx" in formats or not fp32.is_file():
            _export_fp32(folder, fp32)
            log(f"exported {fp32}")
        if "onnx" in formats:
            written["onnx"] = FILES["onnx"]
    if "onnx-int8" in formats:
        _quantize(fp32, folder / FILES["onnx-int8"])
        log(f"quantised {folder / FILES['onnx-int8']}")
        written["onnx-int8"] = FILES["onnx-int8"]
    _record(folder, written)
    return written


_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


def _serving_modules(folder: Path) -> str:
    """The pooling the ONNX encoder applies, read from the folder's Pooling module (sentence-transformers' current
    ``pooling_mode`` or the older ``pooling_mode_*`` flags); a module it does not reproduce (``Dense``, another
    pooling, anything besides Transformer, Pooling and Normalize) is refused: the ONNX student would not be the model."""
    pooling = "mean"
    for m in _modules(folder):
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind in ("Transformer", "Normalize"):
            continue
        if kind != "Pooling":
            raise UsageError(f"{folder} has a {kind} module ({m.get('path')}), which the ONNX export does not include: "
                             "serving it with ONNX would give other embeddings; evaluate and serve it with --backend torch")
        cfg_file = folder / str(m.get("path", "")) / "config.json"
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        except (OSError, ValueError):
            raise UsageError(f"{cfg_file} is not valid JSON; the student folder is damaged, restore it") from None
        modes = [cfg["pooling_mode"]] if isinstance(cfg.get("pooling_mode"), str) else \
            [v for k, v in _POOLING_FLAGS.items() if cfg.get(k)] + [k for k, v in cfg.items()
                                                                    if k.startswith("pooling_mode_") and v and k not in _POOLING_FLAGS]
        modes = [str(x).replace("mean_tokens", "mean").replace("max_tokens", "max").replace("cls_token", "cls") for x in modes]
        if len(modes) != 1 or modes[0] not in ("cls", "mean", "max"):
            raise UsageError(f"{folder}'s pooling ({', '.join(map(str, modes)) or 'none'}) is not one the ONNX encoder "
                             "reproduces (cls, mean or max); serve it with --backend torch")
        pooling = modes[0]
    return pooling


def _check_export(folder: Path, relative: str) -> None:
    """Refuse an ONNX file that is not the export of this folder's weights: swapped, replaced, or exported before the
    weights changed (``export.json``'s digests)."""
    info = _read_export_info(folder)
    digests = info.get("sha256") if isinstance(info.get("sha256"), dict) else None
    if not digests or relative not in digests:
        raise UsageError(f"{folder / relative} has no export record (export.json): nothing says it is this folder's model; "
                         f"export it again: python export_student.py --model_path {folder}")
    if _sha256(folder / relative) != digests[relative]:
        raise UsageError(f"{folder / relative} is not the file the export wrote (it was replaced or changed); export again: "
                         f"python export_student.py --model_path {folder}")
    weights = _transformer_dir(folder) / "model.safetensors"
    if weights.is_file() and "model.safetensors" in digests and _sha256(weights) != digests["model.safetensors"]:
        raise UsageError(f"{folder / relative} was exported from other weights than the folder's model.safetensors "
                         f"(retrained or replaced since); export again: python export_student.py --model_path {folder}")


def _modules(folder: Path) -> list[dict]:
    """The folder's ``modules.json``, checked: a damaged file is one UsageError."""
    modules_file = folder / "modules.json"
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8")) if modules_file.is_file() else []
    except (OSError, ValueError):
        raise UsageError(f"{modules_file} is not valid JSON; the student folder is damaged, restore it") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise UsageError(f"{modules_file} is not a sentence-transformers module list; the student folder is damaged")
    return modules


def _transformer_dir(folder: Path) -> Path:
    """Where the folder's Transformer module keeps its config and tokenizer (the folder itself, usually)."""
    modules = _modules(folder)
    first = next((m for m in modules if str(m.get("type", "")).endswith("Transformer")), modules[0] if modules else {})
    return folder / str(first.get("path", ""))


def _export_fp32(folder: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from .models import refuse_pickled_weights

    src = _transformer_dir(folder)
    refuse_pickled_weights(src)
    model = AutoModel.from_pretrained(src, use_safetensors=True, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(src)
    sample = tok(["a query", "a longer passage of text"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class _Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with atomic_file(target) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side shapes: expected, nothing to act on
        torch.onnx.export(_Wrapped(model), tuple(sample[n] for n in names), str(tmp), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=dynamic, opset_version=17,
                          dynamo=False, do_constant_folding=True)


def _quantize(fp32: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()
    level = quiet.level
    try:
        # ONNX Runtime advises pre-processing (its transformer fusions) first: measured on MiniLM-L6 (bench/onnx_speed.py,
        # docs/results.md), the fused int8 graph encoded no faster (1.63x torch fp32 against 1.69x) and lost 0.005
        # nDCG@10 on SciFact (the plain graph: +0.0001), so the plain graph is quantised
        quiet.setLevel(logging.ERROR)
        with atomic_file(target) as tmp:
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        quiet.setLevel(level)


def _sha256(path: Path) -> str:
    from .fsutil import file_sha256

    return file_sha256(path)


def _read_export_info(folder: Path) -> dict:
    """``export.json``: {format: relative path} and ``sha256`` {file: digest} of each exported file and of the weights
    it was exported from; a damaged file is refused."""
    f = folder / "export.json"
    if not f.is_file():
        return {}
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"{f} is not valid JSON; export again: python export_student.py --model_path {folder}") from None
    if not isinstance(info, dict) or not all(isinstance(info.get(k, ""), str) for k in FILES):
        raise UsageError(f"{f} is not an export record of this toolkit; export again: python export_student.py "
                         f"--model_path {folder}")
    return info


def _record(folder: Path, written: dict[str, str]) -> None:
    """Name the exported files in the model card and in ``export.json`` (with the digests of the files and of the
    weights they were exported from: :class:`OnnxEncoder` checks both)."""
    if not written:
        return
    info_file = folder / "export.json"
    info = _read_export_info(folder)
    info.update(written)
    weights = _transformer_dir(folder) / "model.safetensors"
    digests = dict(info.get("sha256") or {}) if isinstance(info.get("sha256"), dict) else {}
    digests.update({path: _sha256(folder / path) for path in written.values()})
    if weights.is_file():
        digests["model.safetensors"] = _sha256(weights)
    info["sha256"] = digests
    write_json(info_file, info)
    info = {k: v for k, v in info.items() if k in FILES}
    from .fsutil import OWNER_FILE, folder_kind, mark_owner, owned_files

    if (folder / OWNER_FILE).is_file() and folder_kind(folder):  # the export's files join the folder's manifest
        mark_owner(folder, folder_kind(folder), (owned_files(folder) & {p.name for p in folder.iterdir()}) |
                   {"onnx", "export.json", "README.md"})
    card = folder / "README.md"
    if card.is_file():
        lines = ["## Serving (ONNX)", "", "Exported by crossdistill (`export_student.py`):", ""]
        for fmt, path in sorted(info.items()):
            lines.append(f"- `{path}` ({'fp32' if fmt == 'onnx' else 'int8 weights, dynamic quantisation'})")
        lines += ["", "```python", "from sentence_transformers import SentenceTransformer",
                  f"model = SentenceTransformer(\"<this folder>\", backend=\"onnx\", model_kwargs={{\"file_name\": "
                  f"\"{info.get('onnx-int8', info.get('onnx'))}\"}})  # needs optimum[onnxruntime]", "```"]
        with atomic_file(card) as tmp:
            tmp.write_text(replace_card_section(card.read_text(encoding="utf-8"), "\n".join(lines)), encoding="utf-8")


_SECTION = "## Serving (ONNX)"


def replace_card_section(text: str, section: str) -> str:
    """``text`` with its ``## Serving (ONNX)`` section (up to the next ``## `` heading) replaced by ``section``, or
    ``section`` appended when there is none: the export's own section only, every other line of the card kept."""
    start = text.find("\n" + _SECTION)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section + "\n"
    end = text.find("\n## ", start + 1 + len(_SECTION))
    rest = text[end:] if end >= 0 else "\n"
    return text[:start].rstrip("\n") + "\n\n" + section + "\n" + rest


class OnnxEncoder:
    """Encode texts with an exported student's ONNX model and ONNX Runtime, the folder's own pooling and
    normalisation: the ``encode(texts, batch_size, normalize_embeddings, convert_to_numpy, show_progress_bar)`` the
    evaluation calls on a SentenceTransformer, with the same length-sorted batches."""

    def __init__(self, folder: str | Path, fmt: str = "onnx", max_len: int | None = None, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(folder)
        path = folder / FILES[fmt]
        if not path.is_file():
            raise UsageError(f"{folder} has no {FILES[fmt]}; export it first: python export_student.py --model_path "
                             f"{folder} --formats {fmt}")
        src = _transformer_dir(folder)
        self.pooling = _serving_modules(folder)
        _check_export(folder, FILES[fmt])
        self.tokenizer = AutoTokenizer.from_pretrained(src)
        bert_cfg = json.loads((src / "sentence_bert_config.json").read_text()) if (src / "sentence_bert_config.json").is_file() else {}
        self.max_seq_length = max_len or bert_cfg.get("max_seq_length") or 512
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        prompts = json.loads((folder / "config_sentence_transformers.json").read_text()).get("prompts", {}) \
            if (folder / "config_sentence_transformers.json").is_file() else {}
        self.prompts = prompts or {}

    def encode(self, texts, batch_size: int = 32, normalize_embeddings: bool = True, convert_to_numpy: bool = True,
               show_progress_bar: bool = False, **_):
        texts = [texts] if isinstance(texts, str) else list(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), 0), dtype=np.float32)
        parts = []
        for s in range(0, len(texts), batch_size):
            idx = order[s:s + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_seq_length,
                                 return_tensors="np")
            feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self.inputs}
            hidden = self.session.run(["last_hidden_state"], feed)[0]
            if self.pooling == "cls":
                emb = hidden[:, 0]
            elif self.pooling == "max":
                mask = enc["attention_mask"][..., None].astype(bool)
                emb = np.where(mask, hidden, -1e9).max(1)
            else:
                mask = enc["attention_mask"][..., None].astype(np.float32)
                emb = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            if normalize_embeddings:
                emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
            parts.append((idx, emb.astype(np.float32)))
        if parts:
            out = np.zeros((len(texts), parts[0][1].shape[1]), dtype=np.float32)
            for idx, emb in parts:
                out[idx] = emb
        return out

