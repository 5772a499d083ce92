"""The ONNX files of a student folder: where they live, the record (``export.json``) that ties them to the folder's
weights, the fp32 export and its int8 quantisation (ONNX Runtime), and an encoder that runs either with the
student's pooling and normalisation."""

from __future__ import annotations

import json
from pathlib import Path
from crossdistill.core.errors import UsageError
from crossdistill.core.files import atomic_file, file_sha256, read_json_object
import logging
import warnings
import numpy as np

FORMATS = ("onnx", "onnx-int8")
FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8_avx2.onnx"}


_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


def serving_modules(folder: Path) -> tuple[str, list[tuple[np.ndarray, np.ndarray | None]]]:
    """The pooling the ONNX encoder applies, read from the folder's Pooling module (sentence-transformers' current
    ``pooling_mode`` or the older ``pooling_mode_*`` flags), and the linear maps after it: each ``Dense`` module without
    an activation (e.g. a PCA rotation, :mod:`crossdistill.models.rotation`) as (weight, bias). A module it does not
    reproduce (a Dense with an activation, another pooling, anything else besides Transformer and Normalize) is
    refused: the ONNX student would not be the model."""
    pooling, linear = "mean", []
    for m in _modules(folder):
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind in ("Transformer", "Normalize"):
            continue
        if kind == "Dense":
            linear.append(_linear(folder, m))
            continue
        if kind != "Pooling":
            raise UsageError(f"{folder} has a {kind} module ({m.get('path')}), which the ONNX export does not include: "
                             "serving it with ONNX would give other embeddings; evaluate and serve it with --backend torch")
        cfg = _module_config(folder, m)
        modes = [cfg["pooling_mode"]] if isinstance(cfg.get("pooling_mode"), str) else \
            [v for k, v in _POOLING_FLAGS.items() if cfg.get(k)] + [k for k, v in cfg.items()
                                                                    if k.startswith("pooling_mode_") and v and k not in _POOLING_FLAGS]
        modes = [str(x).replace("mean_tokens", "mean").replace("max_tokens", "max").replace("cls_token", "cls") for x in modes]
        if len(modes) != 1 or modes[0] not in ("cls", "mean", "max"):
            raise UsageError(f"{folder}'s pooling ({', '.join(map(str, modes)) or 'none'}) is not one the ONNX encoder "
                             "reproduces (cls, mean or max); serve it with --backend torch")
        pooling = modes[0]
    return pooling, linear


def _module_config(folder: Path, module: dict) -> dict:
    cfg_file = folder / str(module.get("path", "")) / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    except (OSError, ValueError):
        raise UsageError(f"{cfg_file} is not valid JSON; the student folder is damaged, restore it") from None
    return cfg if isinstance(cfg, dict) else {}


def _linear(folder: Path, module: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """A ``Dense`` module without an activation as (weight (out, in), bias or None), from its safetensors file."""
    path = folder / str(module.get("path", ""))
    activation = str(_module_config(folder, module).get("activation_function", "torch.nn.modules.activation.Tanh"))
    if activation.rsplit(".", 1)[-1] != "Identity":
        raise UsageError(f"{folder} has a Dense module ({module.get('path')}) with the activation {activation}, which "
                         "the ONNX encoder does not apply: serving it with ONNX would give other embeddings; evaluate "
                         "and serve it with --backend torch")
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise UsageError(f"{path} has no model.safetensors (its weights): the student folder is damaged, restore it")
    from safetensors.numpy import load_file

    tensors = load_file(str(weights))
    if "linear.weight" not in tensors:
        raise UsageError(f"{weights} holds no linear.weight: the student folder is damaged, restore it")
    return tensors["linear.weight"].astype(np.float32), tensors.get("linear.bias")


def _check_export(folder: Path, relative: str) -> None:
    """Refuse an ONNX file that is not the export of this folder's weights: swapped, replaced, or exported before the
    weights changed (``export.json``'s digests)."""
    info = read_export_info(folder)
    digests = info.get("sha256") if isinstance(info.get("sha256"), dict) else None
    if not digests or relative not in digests:
        raise UsageError(f"{folder / relative} has no export record (export.json): nothing says it is this folder's model; "
                         f"export it again: python export_student.py --model_path {folder}")
    if file_sha256(folder / relative) != digests[relative]:
        raise UsageError(f"{folder / relative} is not the file the export wrote (it was replaced or changed); export again: "
                         f"python export_student.py --model_path {folder}")
    weights = transformer_dir(folder) / "model.safetensors"
    if weights.is_file() and "model.safetensors" in digests and file_sha256(weights) != digests["model.safetensors"]:
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


def read_export_info(folder: Path) -> dict:
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


def transformer_dir(folder: Path) -> Path:
    """Where the folder's Transformer module keeps its config and tokenizer (the folder itself, usually)."""
    modules = _modules(folder)
    first = next((m for m in modules if str(m.get("type", "")).endswith("Transformer")), modules[0] if modules else {})
    return folder / str(first.get("path", ""))


def export_fp32(folder: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from crossdistill.models.folders import refuse_pickled_weights

    src = transformer_dir(folder)
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


def quantize(fp32: Path, target: Path) -> None:
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
        src = transformer_dir(folder)
        self.pooling, self.linear = serving_modules(folder)
        _check_export(folder, FILES[fmt])
        self.tokenizer = AutoTokenizer.from_pretrained(src)
        damaged = "the student folder is damaged: restore it or publish it again"
        bert_cfg = read_json_object(src / "sentence_bert_config.json", damaged, {"max_seq_length": int}) \
            if (src / "sentence_bert_config.json").is_file() else {}
        # sentence-transformers 6 keeps the length as the tokenizer's model_max_length, older ones in the config
        tokenizer_len = self.tokenizer.model_max_length if 0 < self.tokenizer.model_max_length < 100_000 else None
        self.max_seq_length = max_len or bert_cfg.get("max_seq_length") or tokenizer_len or 512
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        prompts = read_json_object(folder / "config_sentence_transformers.json", damaged, {"prompts": dict}).get("prompts") \
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
            for weight, bias in self.linear:  # Dense modules without an activation (a PCA rotation)
                emb = emb @ weight.T + (bias if bias is not None else 0)
            if getattr(self, "truncate_dim", None):  # the first D dimensions, re-normalised (Matryoshka serving)
                emb = emb[:, :self.truncate_dim]
            if normalize_embeddings:
                emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
            parts.append((idx, emb.astype(np.float32)))
        if parts:
            out = np.zeros((len(texts), parts[0][1].shape[1]), dtype=np.float32)
            for idx, emb in parts:
                out[idx] = emb
        return out
