"""Losses against values computed by hand (math module, not torch), plus edge cases."""

import math

import pytest
import torch

from crossdistill.distill.recipes import loss_settings
from crossdistill.losses import BatchScores, contrastive_margin_loss, distillation_loss, listwise_kl_loss, negative_penalty_loss

T = torch.tensor



def total(t, s, mask, pos, extra_negatives=None, in_batch=None, **settings):
    """The composite loss of these scores with the original recipe's settings (scale 20), ``settings`` overriding."""
    return distillation_loss(BatchScores(t, s, mask, pos, extra_negatives, in_batch), loss_settings("original", **settings))

def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_kl_hand_value():
    p, q = _softmax([0.9 / 0.5, 0.1 / 0.5]), _softmax([0.6 / 0.5, 0.4 / 0.5])
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert expected == pytest.approx(0.12755, abs=1e-4)
    got = listwise_kl_loss(T([[0.9, 0.1]]), T([[0.6, 0.4]]), T([[True, True]]), tau=0.5)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_kl_padding_is_ignored_and_single_candidate_counts_zero():
    mask = T([[True, True, False], [True, False, False]])
    got = listwise_kl_loss(T([[0.9, 0.1, 0.7], [0.3, 0.0, 0.0]]), T([[0.6, 0.4, 0.99], [0.8, 0.0, 0.0]]), mask, tau=0.5)
    p, q = _softmax([1.8, 0.2]), _softmax([1.2, 0.8])
    first = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert got.item() == pytest.approx(first / 2, abs=1e-6)  # second query: one candidate -> 0, still counted


def test_kl_zero_when_equal_and_finite_for_tiny_tau():
    s = T([[0.2, 0.9, 0.5]])
    m = torch.ones(1, 3, dtype=torch.bool)
    assert listwise_kl_loss(s, s, m, tau=0.2).item() == pytest.approx(0.0, abs=1e-7)
    tiny = listwise_kl_loss(T([[1.0, 0.0, 0.0]]), T([[0.0, 1.0, 0.5]]), m, tau=1e-3)
    assert torch.isfinite(tiny) and tiny.item() > 100  # p is one-hot on 0, q puts ~all mass on 1
    with pytest.raises(ValueError):
        listwise_kl_loss(s, s, m, tau=0.0)


def test_kl_gradient_flows_only_to_real_candidates():
    s = T([[0.6, 0.4, 0.3]], requires_grad=True)
    listwise_kl_loss(T([[0.9, 0.1, 0.0]]), s, T([[True, True, False]]), tau=0.2).backward()
    assert s.grad[0, 2].item() == 0 and s.grad[0, 0].item() < 0


def test_contrastive_hand_value_all_positive_and_no_negative():
    s = T([[0.8, 0.3, 0.5], [0.7, 0.6, 0.0], [0.9, 0.1, 0.0]])
    pos = T([[True, False, False], [True, True, False], [True, False, False]])
    mask = T([[True, True, True], [True, True, False], [True, True, False]])
    # q1: 0.7 - (0.8 - 0.4) = 0.3; q2: all positive -> excluded; q3: 0.7 - 0.8 < 0 -> 0
    assert contrastive_margin_loss(s, pos, mask, 0.7).item() == pytest.approx(0.15, abs=1e-6)
    only_pos = contrastive_margin_loss(s[1:2], pos[1:2], mask[1:2])
    assert only_pos.item() == 0.0


def test_negative_penalty_hand_value_and_no_negatives():
    s = T([[0.8, 0.3, 0.5], [0.9, 0.1, 0.0]])
    neg = T([[False, True, True], [False, True, False]])
    # batch mean of negatives (0.3+0.5+0.1)/3 = 0.3 -> 0.15; per query: relu(0.4-0.15)=0.25, relu(0.1-0.15)=0
    assert negative_penalty_loss(s, neg).item() == pytest.approx(0.15 + 0.5 * 0.125, abs=1e-6)
    assert negative_penalty_loss(s, torch.zeros_like(neg)).item() == 0.0


def test_total_combines_weights():
    t = T([[0.9, 0.1, 0.2]])
    s = T([[0.6, 0.4, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    pos = T([[True, False, False]])
    out = total(t, s, mask, pos, tau=0.2, contrastive_weight=0.3, negative_penalty_weight=0.4)
    kl = listwise_kl_loss(t, s, mask, 0.2)
    con = 0.7 - (0.6 - 0.45)
    pen = (0.45 - 0.15) + 0.5 * (0.45 - 0.15)
    assert out["contrastive"].item() == pytest.approx(con, abs=1e-6)
    assert out["negative_penalty"].item() == pytest.approx(pen, abs=1e-6)
    assert out["loss"].item() == pytest.approx(kl.item() + 0.3 * con + 0.4 * pen, abs=1e-6)


def test_extra_negatives_join_the_contrastive_term_only():
    """Cross-device negatives: more negatives in the contrastive mean; KL and the penalty are unchanged."""
    t = T([[0.9, 0.1, 0.2]])
    s = T([[0.6, 0.4, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    pos = T([[True, False, False]])
    extra = (T([[0.2, 0.9, 0.3]]), T([[True, False, True]]))  # the 0.9 passage is masked (e.g. in its own list)
    base = total(t, s, mask, pos)
    out = total(t, s, mask, pos, extra_negatives=extra)
    # negatives 0.4, 0.5, 0.2, 0.3 -> mean 0.35; 0.7 - (0.6 - 0.35) = 0.45
    assert out["contrastive"].item() == pytest.approx(0.45, abs=1e-6)
    assert out["soft"].item() == base["soft"].item() and out["negative_penalty"].item() == base["negative_penalty"].item()


def test_gather_rows_keeps_first_occurrence_of_each_key():
    from crossdistill.core.training import gather_rows, text_keys

    keys = text_keys(["a", "b", "a", "c"])
    assert keys[0] == keys[2] and len(set(keys.tolist())) == 3
    assert torch.equal(text_keys(["a"]), text_keys(["a"]))  # stable across calls (and processes: no hash seed)
    x = torch.arange(8.0).view(4, 2)
    rows, k = gather_rows(x, keys)  # no process group: just the distinct rows
    assert rows.tolist() == [[0, 1], [2, 3], [6, 7]] and k.tolist() == [keys[0], keys[1], keys[3]]


# --------------------------------------------------------------------------- the ranking recipe's terms
def test_infonce_hand_value_single_and_multiple_positives():
    from crossdistill.losses import in_batch_infonce_loss

    cos = T([[0.5, 0.1, -0.2], [0.3, 0.4, 0.0]])
    pos = T([[True, False, False], [True, True, False]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    # q1: -log(e^{10} / (e^{10} + e^{2} + e^{-4})); q2: -log((e^{6} + e^{8}) / (e^{6} + e^{8} + e^{0}))  (scale 20)
    q1 = -math.log(math.exp(10) / (math.exp(10) + math.exp(2) + math.exp(-4)))
    q2 = -math.log((math.exp(6) + math.exp(8)) / (math.exp(6) + math.exp(8) + 1.0))
    got = in_batch_infonce_loss(cos, pos, mask, scale=20.0)
    assert got.item() == pytest.approx((q1 + q2) / 2, abs=1e-6)


def test_infonce_ignores_masked_passages_and_queries_without_positive():
    from crossdistill.losses import in_batch_infonce_loss

    cos = T([[0.5, 0.9, -0.2], [0.3, 0.4, 0.0]])
    pos = T([[True, False, False], [False, False, False]])
    mask = T([[True, False, True], [True, True, True]])  # q1's 0.9 passage does not take part
    q1 = -math.log(math.exp(2.5) / (math.exp(2.5) + math.exp(-1.0)))  # scale 5
    assert in_batch_infonce_loss(cos, pos, mask, scale=5.0).item() == pytest.approx(q1, rel=1e-5)
    assert in_batch_infonce_loss(cos, torch.zeros_like(pos), mask).item() == 0.0
    with pytest.raises(ValueError):
        in_batch_infonce_loss(cos, pos, mask, scale=0)


def test_margin_mse_hand_value():
    from crossdistill.losses import margin_mse_loss

    t = T([[5.0, 1.0, -2.0, 9.0]])
    s = T([[3.0, 2.0, 0.0, 0.0]])
    pos = T([[True, False, False, False]])
    mask = T([[True, True, True, False]])  # the 4th candidate is padding
    # pairs (0,1): (3-2)-(5-1) = -3 -> 9; (0,2): (3-0)-(5+2) = -4 -> 16; mean 12.5
    assert margin_mse_loss(t, s, pos, mask).item() == pytest.approx(12.5, abs=1e-6)
    assert margin_mse_loss(t, s, torch.zeros_like(pos), mask).item() == 0.0


def test_kl_student_temperature_is_a_scaled_cosine():
    """student_tau = 1 / (2 * scale) on normalised scores equals softmax(scale * cos)."""
    cos = T([[0.5, 0.1, -0.3]])
    t = T([[4.0, 0.0, -1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    got = listwise_kl_loss(t, (cos + 1) / 2, mask, tau=2.0, student_tau=1 / 40)
    p, q = _softmax([2.0, 0.0, -0.5]), _softmax([10.0, 2.0, -6.0])
    assert got.item() == pytest.approx(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)), rel=1e-5)


def test_total_ranking_recipe_weights():
    from crossdistill.losses import in_batch_infonce_loss, margin_mse_loss

    t = T([[3.0, -1.0, 0.5]])
    s = T([[0.8, 0.4, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    pos = T([[True, False, False]])
    in_batch = (T([[0.6, -0.2, 0.0, 0.1]]), T([[True, False, False, False]]), torch.ones(1, 4, dtype=torch.bool))
    out = total(t, s, mask, pos, tau=1.0, contrastive_weight=0.0, negative_penalty_weight=0.0,
                            kl_student="scaled", scale=20.0, infonce_weight=0.5, in_batch=in_batch)
    kl = listwise_kl_loss(t, s, mask, 1.0, 1 / 40)
    nce = in_batch_infonce_loss(*in_batch, scale=20.0)
    assert out["loss"].item() == pytest.approx(kl.item() + 0.5 * nce.item(), rel=1e-6)
    assert out["contrastive"].item() == 0.0 and out["negative_penalty"].item() == 0.0
    mm = total(t, s, mask, pos, contrastive_weight=0.0, negative_penalty_weight=0.0, soft_loss="margin_mse")
    assert mm["soft"].item() == pytest.approx(margin_mse_loss(t, (2 * s - 1) * 20, pos, mask).item(), rel=1e-6)
    with pytest.raises(ValueError):
        total(t, s, mask, pos, infonce_weight=1.0)  # InfoNCE needs the in-batch scores


def test_loss_settings_are_typed_resolved_and_fixed():
    """One student step reads a frozen LossSettings (the recipe applied, the scale resolved), not the flags."""
    import dataclasses

    from crossdistill.distill.recipes import LossSettings, loss_settings

    ranking = loss_settings("ranking", scale=100.0)
    assert (ranking.tau, ranking.infonce_weight, ranking.contrastive_weight) == (1.0, 1.0, 0.0)
    assert ranking.student_tau == pytest.approx(1 / 200)  # (cos + 1) / 2 / student_tau = 100 cos + const
    original = loss_settings("original")
    assert original.student_tau is None and (original.tau, original.negative_penalty_weight) == (0.2, 0.4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ranking.tau = 2.0
    from crossdistill.distill.config import StudentConfig

    cfg = StudentConfig.parse(["--teacher_path", "t", "--output_dir", "o"])  # the scale is resolved by the run
    with pytest.raises(ValueError, match="unset: scale"):
        LossSettings.from_config(cfg)
    resolved = LossSettings.from_config(dataclasses.replace(cfg, scale=20.0))
    assert resolved == loss_settings("ranking")  # the config's recipe gives the same settings as the library's


def test_kl_tau_squared_rescales_only_the_kl():
    """--kl_tau_squared: KL x tau^2 (DistillKLDivLoss's convention); InfoNCE untouched."""
    t, s = T([[2.0, 0.5, -1.0]]), T([[0.7, 0.6, 0.2]])
    m = torch.ones(1, 3, dtype=torch.bool)
    pos = T([[True, False, False]])
    cos = T([[0.4, 0.1, -0.2]])
    kw = dict(tau=2.0, contrastive_weight=0.0, negative_penalty_weight=0.0, kl_student="scaled", scale=10.0, infonce_weight=1.0,
              in_batch=(cos, pos, m))
    plain = total(t, s, m, pos, **kw)
    squared = total(t, s, m, pos, kl_tau_squared=True, **kw)
    kl = listwise_kl_loss(t, s, m, tau=2.0, student_tau=0.05)
    assert plain["soft"].item() == pytest.approx(kl.item(), rel=1e-6)
    assert squared["soft"].item() == pytest.approx(4 * kl.item(), rel=1e-6)
    assert squared["infonce"].item() == pytest.approx(plain["infonce"].item(), rel=1e-7)
    assert squared["loss"].item() == pytest.approx(4 * kl.item() + plain["infonce"].item(), rel=1e-6)


def test_teacher_losses_hand_values():
    """The teacher's LCE (one positive first, its negatives after it, ragged lists) and pointwise BCE with pos_weight."""
    from crossdistill.losses import localized_contrastive_loss, pointwise_bce_loss

    z = T([2.0, 0.0, 1.0, -1.0, 0.5])  # list 1: positive 2.0, negatives 0.0, 1.0; list 2: positive -1.0, negative 0.5
    first = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0 + math.exp(1.0)))
    second = -math.log(math.exp(-1.0) / (math.exp(-1.0) + math.exp(0.5)))
    assert localized_contrastive_loss(z, [3, 2]).item() == pytest.approx((first + second) / 2, abs=1e-6)
    assert localized_contrastive_loss(T([3.0]), [1]).item() == pytest.approx(0.0, abs=1e-7)  # no negative: nothing to learn
    with pytest.raises(ValueError, match="sizes"):
        localized_contrastive_loss(z, [2, 2])
    sig = lambda x: 1 / (1 + math.exp(-x))
    logits, labels = T([1.5, -0.5, 0.2]), T([1.0, 0.0, 0.0])
    expected = (-3.0 * math.log(sig(1.5)) - math.log(1 - sig(-0.5)) - math.log(1 - sig(0.2))) / 3
    assert pointwise_bce_loss(logits, labels, 3.0).item() == pytest.approx(expected, abs=1e-6)


def test_in_batch_kl_hand_value_and_mask():
    """Issue #49: the teacher's distribution over every passage of the batch, matched by softmax(scale · cos)."""
    from crossdistill.losses import in_batch_kl_loss

    teacher, cos = [2.0, 0.0, -1.0], [0.5, 0.3, 0.1]
    p, q = _softmax(teacher), _softmax([20 * c for c in cos])
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    got = in_batch_kl_loss(T([teacher]), T([cos]), torch.ones(1, 3, dtype=torch.bool), tau=1.0, scale=20.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # a masked passage takes no probability mass; a row with one passage left counts 0 (and still in the mean)
    p2, q2 = _softmax(teacher[:2]), _softmax([20 * c for c in cos[:2]])
    two = sum(pi * math.log(pi / qi) for pi, qi in zip(p2, q2))
    got = in_batch_kl_loss(T([teacher, teacher]), T([cos, cos]), T([[True, True, False], [True, False, False]]), 1.0, 20.0)
    assert got.item() == pytest.approx(two / 2, abs=1e-6)
    assert in_batch_kl_loss(T([cos]), T([cos]), torch.ones(1, 3, dtype=torch.bool), 1.0, 1.0).item() == pytest.approx(0.0)


def test_every_term_of_the_table_is_weighted_summed_and_named():
    """Issue #45: one table of loss terms; the total is Σ weight · term over it, each term logged by its name."""
    from crossdistill.losses import TERMS, in_batch_infonce_loss, in_batch_kl_loss

    t, s = T([[3.0, -1.0, 0.5]]), T([[0.8, 0.4, 0.5]])
    mask, pos = torch.ones(1, 3, dtype=torch.bool), T([[True, False, False]])
    in_batch = (T([[0.6, -0.2, 0.0, 0.1]]), T([[True, False, False, False]]), torch.ones(1, 4, dtype=torch.bool))
    teacher_matrix = T([[4.0, 0.0, 1.0, -2.0]])
    scores = BatchScores(t, s, mask, pos, None, in_batch, teacher_matrix)
    weights = {"soft_weight": 1.0, "infonce_weight": 0.5, "contrastive_weight": 0.3, "negative_penalty_weight": 0.4,
               "in_batch_kl_weight": 2.0}
    out = distillation_loss(scores, loss_settings("ranking", **weights))
    assert [term.name for term in TERMS] == ["soft", "infonce", "contrastive", "negative_penalty", "in_batch_kl"]
    assert set(out) == {"loss", *(term.name for term in TERMS)}
    assert out["in_batch_kl"].item() == pytest.approx(in_batch_kl_loss(teacher_matrix, *in_batch[::2], 1.0, 20.0).item())
    assert out["infonce"].item() == pytest.approx(in_batch_infonce_loss(*in_batch, scale=20.0).item())
    expected = sum(weights[term.weight] * out[term.name].item() for term in TERMS)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="in-batch logits"):
        distillation_loss(BatchScores(t, s, mask, pos, None, in_batch), loss_settings("ranking", in_batch_kl_weight=1.0))


def _ranking_loss(q, p, teacher, positive):
    """The ranking recipe's whole loss of queries ``q`` (Q, D) against their candidates ``p`` (Q, K, D)."""
    cos = torch.einsum("qd,qkd->qk", q, p)
    mask = torch.ones_like(positive)
    flat = p.reshape(-1, p.shape[-1])
    is_pos = torch.zeros(q.shape[0], flat.shape[0], dtype=torch.bool)
    for i in range(q.shape[0]):
        is_pos[i, i * p.shape[1]] = True
    b = BatchScores(teacher, (cos + 1) / 2, mask, positive, None, (q @ flat.T, is_pos, torch.ones_like(is_pos)))
    return distillation_loss(b, loss_settings("ranking", scale=20.0))


def test_matryoshka_at_the_full_dimension_is_the_plain_loss_and_truncation_renormalises():
    """Issue #48: the wrapper at the full dimension alone is the plain loss, bit for bit; at smaller dimensions every
    prefix is re-normalised; the weighted sum is the loss."""
    import torch.nn.functional as F

    from crossdistill.losses.matryoshka import matryoshka_loss, truncate

    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(4, 32, generator=g), dim=-1)
    p = F.normalize(torch.randn(4, 3, 32, generator=g), dim=-1)
    teacher = torch.randn(4, 3, generator=g)
    positive = torch.tensor([[True, False, False]] * 4)

    def fn(qq, pp):
        return _ranking_loss(qq, pp, teacher, positive)

    plain = fn(q, p)
    full = matryoshka_loss(fn, q, p, (32,), (1.0,))
    assert torch.equal(full["loss"], plain["loss"]) and torch.equal(full["soft"], plain["soft"])
    t = truncate(p, 8)
    assert torch.allclose(t.norm(dim=-1), torch.ones(4, 3)) and torch.allclose(t, F.normalize(p[..., :8], dim=-1))
    assert truncate(q, 32) is q
    mixed = matryoshka_loss(fn, q, p, (32, 16, 8), (1.0, 0.5, 0.25))
    expected = plain["loss"] + 0.5 * fn(truncate(q, 16), truncate(p, 16))["loss"] + 0.25 * fn(truncate(q, 8), truncate(p, 8))["loss"]
    assert torch.allclose(mixed["loss"], expected) and set(mixed) >= {"loss@32", "loss@16", "loss@8"}


@pytest.mark.parametrize("dims,weights,fragment", [("64,128", None, "largest first"), ("384,4", None, ">= 8"),
                                                   ("384,x", None, "whole numbers"), ("384,64", "1", "one finite weight"),
                                                   (None, "1,1", "give --matryoshka_dims too")])
def test_matryoshka_flags_are_checked(dims, weights, fragment):
    from crossdistill.core.errors import UsageError
    from crossdistill.distill.config import StudentConfig

    argv = ["--teacher_path", "t", "--output_dir", "o", *(["--matryoshka_dims", dims] if dims else []),
            *(["--matryoshka_weights", weights] if weights else [])]
    with pytest.raises(UsageError, match=fragment):
        StudentConfig.parse(argv)
    ok = StudentConfig.parse(["--teacher_path", "t", "--output_dir", "o", "--matryoshka_dims", "384,128,64"])
    assert ok.matryoshka_dims_list == (384, 128, 64) and ok.matryoshka_weights_list == (1.0, 1.0, 1.0)
