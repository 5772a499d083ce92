"""PCA rotation (issue #48): the student's vectors turned onto the principal axes of its own embeddings — every cosine
unchanged, the first dimensions carrying the most — saved as a sentence-transformers Dense module that
``SentenceTransformer(folder, truncate_dim=D)`` and the ONNX encoder both apply. Real MiniLM (2 layers), real SciFact."""

import json
import shutil

import numpy as np
import pytest

from conftest import SCIFACT


def _texts(n: int) -> list[str]:
    return [json.loads(x)["text"] for x in (SCIFACT / "corpus.jsonl").read_text().splitlines()[:n]]


def test_principal_axes_are_orthogonal_ordered_by_energy_and_one_answer():
    from crossdistill.models.rotation import energy_kept, principal_axes, truncate_dims

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(500, 16)) * 1.5 ** np.arange(16)  # energy grows along the later coordinates
    axes = principal_axes(emb)
    assert axes.shape == (16, 16) and np.allclose(axes @ axes.T, np.eye(16), atol=1e-10)
    per_axis = ((emb @ axes.T) ** 2).sum(0)
    assert (np.diff(per_axis) <= 1e-9).all()  # decreasing energy
    assert abs(axes[0, 15]) > 0.99  # the strongest axis is the last coordinate
    assert (axes[np.arange(16), np.abs(axes).argmax(1)] > 0).all()  # each axis signed: its largest coordinate positive
    assert np.array_equal(axes, principal_axes(emb.copy()))
    kept = energy_kept(emb, axes, (16, 8, 4))
    assert kept["16"] == pytest.approx(1.0) and kept["4"] > 4 / 16 * 2  # the first quarter holds far more than a quarter
    q = emb[:5] @ axes.T
    assert np.allclose(np.linalg.norm(q, axis=1), np.linalg.norm(emb[:5], axis=1))  # lengths (and cosines) kept
    assert truncate_dims(384) == [384, 256, 128, 64] and truncate_dims(768) == [768, 512, 256, 128, 64]
    with pytest.raises(ValueError, match="at least 16 passages"):
        principal_axes(emb[:10])
    # two sides weighing the same: a side of 400 rows along one axis (length 0.9) and one of 20 along another (length 1)
    # give those two axes, the smaller side's first; its rows alone, unweighted, would be outweighed twenty to one
    from crossdistill.models.rotation import sides_weighed_equally

    many = np.tile(np.eye(16)[3], (400, 1)) * 0.9 + rng.normal(size=(400, 16)) * 0.01
    few = np.tile(np.eye(16)[7], (20, 1)) + rng.normal(size=(20, 16)) * 0.01
    both = sides_weighed_equally([many, few])
    assert both.shape == (420, 16) and np.allclose(both[:400], many / 20) and np.allclose(both[400:], few / np.sqrt(20))
    two = principal_axes(both)
    assert abs(two[0, 7]) > 0.99 and abs(two[1, 3]) > 0.99
    assert abs(principal_axes(np.vstack([many, few]))[0, 3]) > 0.99


def test_a_rotated_student_keeps_every_cosine_and_serves_its_prefix(tmp_path, tiny_minilm):
    from sentence_transformers import SentenceTransformer

    from crossdistill.models.rotation import energy_kept, principal_axes, with_rotation

    texts = _texts(400)
    st = SentenceTransformer(str(tiny_minilm), device="cpu")
    st.max_seq_length = 64
    plain = st.encode(texts, normalize_embeddings=True)
    axes = principal_axes(plain)
    rotated = with_rotation(st, axes)
    assert [type(m).__name__ for m in rotated] == ["Transformer", "Pooling", "Dense", "Normalize"]
    got = rotated.encode(texts, normalize_embeddings=True)
    assert np.allclose(got, plain @ axes.T, atol=1e-5)
    assert np.abs(got @ got.T - plain @ plain.T).max() < 1e-5  # every cosine unchanged
    # the first 64 coordinates carry more of the vectors than the model's own first 64, and rank closer to full size
    assert energy_kept(plain, axes, (64,))["64"] > energy_kept(plain, np.eye(384), (64,))["64"] + 0.1
    folder = tmp_path / "rotated"
    rotated.save(str(folder))
    small = SentenceTransformer(str(folder), device="cpu", truncate_dim=64)
    small.max_seq_length = 64
    cut = small.encode(texts[:8], normalize_embeddings=True)
    assert cut.shape == (8, 64)
    assert np.allclose(cut, got[:8, :64] / np.linalg.norm(got[:8, :64], axis=1, keepdims=True), atol=1e-5)


@pytest.mark.slow
def test_the_onnx_encoder_applies_the_rotation(tmp_path, tiny_minilm):
    from sentence_transformers import SentenceTransformer

    from crossdistill.core.errors import UsageError
    from crossdistill.core.ownership import mark_owner
    from crossdistill.models.export import export_student
    from crossdistill.models.onnx import OnnxEncoder
    from crossdistill.models.rotation import principal_axes, with_rotation

    texts = _texts(400)
    st = SentenceTransformer(str(tiny_minilm), device="cpu")
    folder = tmp_path / "student"
    with_rotation(st, principal_axes(st.encode(texts, normalize_embeddings=True))).save(str(folder))
    mark_owner(folder, "student")
    export_student(folder, ["onnx"])
    ref = SentenceTransformer(str(folder), device="cpu").encode(texts[:16], normalize_embeddings=True)
    got = OnnxEncoder(folder, "onnx").encode(texts[:16], batch_size=8)
    assert float((ref * got).sum(1).min()) > 0.9999
    enc = OnnxEncoder(folder, "onnx")
    enc.truncate_dim = 64
    cut = SentenceTransformer(str(folder), device="cpu", truncate_dim=64).encode(texts[:16], normalize_embeddings=True)
    assert float((cut * enc.encode(texts[:16], batch_size=8)).sum(1).min()) > 0.9999
    # a Dense module with an activation is not a linear map the encoder applies: refused
    dense_cfg = folder / "2_Dense" / "config.json"
    cfg = json.loads(dense_cfg.read_text())
    dense_cfg.write_text(json.dumps({**cfg, "activation_function": "torch.nn.modules.activation.Tanh"}))
    with pytest.raises(UsageError, match="Dense module .* activation"):
        OnnxEncoder(folder, "onnx")
    shutil.rmtree(folder / "2_Dense")
    with pytest.raises(UsageError):
        OnnxEncoder(folder, "onnx")


def test_a_rotated_student_keeps_its_prompts_exactly(tmp_path, tiny_minilm):
    from sentence_transformers import SentenceTransformer

    from crossdistill.models.rotation import with_rotation

    st = SentenceTransformer(str(tiny_minilm), device="cpu")
    st.prompts = {"query": "query: ", "passage": "passage: "}
    with_rotation(st, np.eye(384)).save(str(tmp_path / "r"))
    saved = json.loads((tmp_path / "r" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == {"query": "query: ", "passage": "passage: "} and saved["similarity_fn_name"] == "cosine"


def test_a_student_turned_while_training_keeps_its_cosines_and_saves_both_turns_as_one(tmp_path, tiny_minilm):
    """--matryoshka_pca_start: the student's own rotation turns what embed (with gradients) and encode give, in fp32,
    keeping every cosine; save() composes it with the publishing rotation into one Dense module."""
    import torch
    from sentence_transformers import SentenceTransformer

    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.rotation import principal_axes
    from crossdistill.models.student import BiEncoderStudent

    texts = _texts(400)
    student = BiEncoderStudent.load(resolve_model(str(tiny_minilm)), max_len=64)
    plain = student.encode(texts, "passage", 64)
    student.eval()  # no dropout: embed's (training) path gives the same vectors twice
    with torch.no_grad():
        plain_grad_path = student.embed(texts[:8]).numpy()
    start = principal_axes(plain)
    student.rotation = torch.tensor(start, dtype=torch.float32)
    turned = student.encode(texts, "passage", 64)
    assert np.allclose(turned, plain @ start.T.astype(np.float32), atol=1e-5)
    assert np.abs(turned @ turned.T - plain @ plain.T).max() < 1e-5  # every cosine unchanged
    emb = student.embed(texts[:8])
    assert emb.requires_grad and emb.dtype == torch.float32
    assert np.allclose(emb.detach().numpy(), plain_grad_path @ start.T, atol=1e-5)
    assert "rotation" not in student.state_dict()  # not a checkpoint entry: a resumed run finds it again
    late = principal_axes(turned)  # the publishing rotation, found on the turned vectors
    folder = tmp_path / "published"
    student.save(folder, late)
    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = 64
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense", "Normalize"]  # one Dense: both turns
    assert np.allclose(model.encode(texts[:8], normalize_embeddings=True), turned[:8] @ late.T, atol=1e-5)
    student.save(tmp_path / "own", None)  # without a publishing rotation: the student's own
    own = SentenceTransformer(str(tmp_path / "own"), device="cpu")
    assert np.allclose(own[2].linear.weight.detach().numpy(), start, atol=1e-6)
