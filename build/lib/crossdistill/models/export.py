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

from pathlib import Path
from crossdistill.core.errors import UsageError
from crossdistill.core.files import file_sha256, atomic_file, write_json
from crossdistill.models.onnx import (
    FILES,
    FORMATS,
    export_fp32,
    quantize,
    read_export_info,
    serving_modules,
    transformer_dir,
)


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

    from crossdistill.core.ownership import atomic_dir, check_output_dir, folder_kind, mark_owner, refuse_overlap
    from crossdistill.models.folders import is_bi_encoder_folder
    from crossdistill.models.resolve import resolve_model

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
    if not is_bi_encoder_folder(source):  # refused before anything is copied
        raise UsageError(f"{source} is not a bi-encoder (a sentence-transformers folder with a Pooling module: "
                         "modules.json), so it has no student to export; pass a student or embedding-model folder")
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
    src = transformer_dir(folder)
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
    recorded = read_export_info(folder)
    ours = [recorded[f] for f in FILES if f in recorded]
    serving_modules(folder)  # a pooling or a module the ONNX encoder cannot reproduce is refused before any work
    for fmt in formats:  # a file of the same name this toolkit did not write is never replaced
        if (folder / FILES[fmt]).exists() and FILES[fmt] not in ours:
            raise UsageError(f"{folder / FILES[fmt]} exists and was not written by this toolkit's export; move it away "
                             "or export into a copy of the folder")
    (folder / "onnx").mkdir(exist_ok=True)
    written = {}
    fp32 = folder / FILES["onnx"]
    if "onnx" in formats or "onnx-int8" in formats:
        if "onnx" in formats or not fp32.is_file():
            export_fp32(folder, fp32)
            log(f"exported {fp32}")
        if "onnx" in formats:
            written["onnx"] = FILES["onnx"]
    if "onnx-int8" in formats:
        quantize(fp32, folder / FILES["onnx-int8"])
        log(f"quantised {folder / FILES['onnx-int8']}")
        written["onnx-int8"] = FILES["onnx-int8"]
    _record(folder, written)
    return written


def _record(folder: Path, written: dict[str, str]) -> None:
    """Name the exported files in the model card and in ``export.json`` (with the digests of the files and of the
    weights they were exported from: :class:`OnnxEncoder` checks both)."""
    if not written:
        return
    info_file = folder / "export.json"
    info = read_export_info(folder)
    info.update(written)
    weights = transformer_dir(folder) / "model.safetensors"
    digests = dict(info.get("sha256") or {}) if isinstance(info.get("sha256"), dict) else {}
    digests.update({path: file_sha256(folder / path) for path in written.values()})
    if weights.is_file():
        digests["model.safetensors"] = file_sha256(weights)
    info["sha256"] = digests
    write_json(info_file, info)
    info = {k: v for k, v in info.items() if k in FILES}
    from crossdistill.core.ownership import OWNER_FILE, folder_kind, mark_owner, owned_files

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
