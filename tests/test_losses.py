"""Alignment losses against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from speechbrain_imlkd.losses import (
    EmbeddingProjection,
    batch_alignment_loss,
    class_alignment_loss,
    embedding_alignment_loss,
    instance_alignment_loss,
    multilevel_alignment_loss,
    softened_posteriors,
    student_logits,
)

LN2 = math.log(2.0)
# Teacher posteriors [.25, .5, .25] and [.25, .25, .5]; student [1/3]*3 and [.5, .25, .25].
TEACHER = torch.tensor([[0.0, LN2, 0.0], [0.0, 0.0, LN2]])
STUDENT = torch.tensor([[0.0, 0.0, 0.0], [LN2, 0.0, 0.0]])


def _py_kl_at(t_row, s_row, temp):
    """KL(softmax(t/T) || softmax(s/T)) in plain Python."""
    def softmax(row):
        e = [math.exp(v / temp) for v in row]
        return [v / sum(e) for v in e]

    p, q = softmax(t_row), softmax(s_row)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_instance_loss_temperature_one_by_hand():
    row1 = 0.25 * math.log(0.75) + 0.5 * math.log(1.5) + 0.25 * math.log(0.75)
    row2 = 0.25 * math.log(0.5) + 0.25 * math.log(1.0) + 0.5 * math.log(2.0)
    got = instance_alignment_loss(STUDENT, TEACHER, temperatures=[1.0])
    assert got.item() == pytest.approx((row1 + row2) / 2, rel=1e-5)


def test_instance_loss_sums_t_squared_weighted_terms():
    temps = [1.0, 2.0, 3.0, 4.0]
    expected = sum(
        t**2 * sum(_py_kl_at(tr, sr, t) for tr, sr in zip(TEACHER.tolist(), STUDENT.tolist())) / 2
        for t in temps
    )
    got = instance_alignment_loss(STUDENT, TEACHER, temperatures=temps)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert instance_alignment_loss(TEACHER, TEACHER).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temps, word", [([], "empty"), ([1.0, 0.0], "0.0"), ([-2], "-2")])
def test_bad_temperatures_are_named(temps, word):
    with pytest.raises(ValueError, match=word):
        instance_alignment_loss(STUDENT, TEACHER, temperatures=temps)
    with pytest.raises(ValueError, match=word):
        multilevel_alignment_loss(STUDENT, TEACHER, None, None, temps, lambda_emb=0.0)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        instance_alignment_loss(STUDENT, torch.zeros(2, 4), [1.0])


def test_class_and_batch_levels_by_hand():
    pt = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ps = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    # Pt^T Pt = diag(1, 1, 0); Ps^T Ps = .5 on the top-left 2x2 block:
    # difference has four entries of +-.5, squared sum 1, divided by C = 3.
    assert class_alignment_loss(ps, pt).item() == pytest.approx(1 / 3, rel=1e-6)
    # Pt Pt^T = I; Ps Ps^T = all .5: squared sum 1, divided by B = 2.
    assert batch_alignment_loss(ps, pt).item() == pytest.approx(0.5, rel=1e-6)


def test_class_level_matches_the_c_by_c_definition():
    gen = torch.Generator().manual_seed(0)
    pt = torch.softmax(torch.randn(8, 50, generator=gen), -1)
    ps = torch.softmax(torch.randn(8, 50, generator=gen), -1)
    direct = (pt.T @ pt - ps.T @ ps).square().sum() / 50
    assert class_alignment_loss(ps, pt).item() == pytest.approx(direct.item(), rel=1e-4)
    assert class_alignment_loss(pt, pt).item() == pytest.approx(0.0, abs=1e-6)


def test_embedding_loss_by_hand():
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 5.0], [2.0, 0.0]])
    # (.6, .8) vs (0, 1): .36 + .04 = .4; second pair identical directions: 0.
    assert embedding_alignment_loss(s, t).item() == pytest.approx(0.2, rel=1e-6)
    assert embedding_alignment_loss(s[:, None], t[:, None]).item() == pytest.approx(0.2, rel=1e-6)


def test_embedding_projection():
    with pytest.raises(ValueError, match="dim 2 differs from teacher dim 3"):
        embedding_alignment_loss(torch.ones(1, 2), torch.ones(1, 3))
    proj = EmbeddingProjection(2, 3)
    with torch.no_grad():
        proj.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        proj.linear.bias.zero_()
    # Projected (3, 4, 0) vs (0, 0, 7): orthogonal, distance^2 = 2.
    s, t = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0, 7.0]])
    got = embedding_alignment_loss(s, t, proj)
    assert got.item() == pytest.approx(2.0, rel=1e-6)
    same = EmbeddingProjection(3, 3)
    x = torch.randn(2, 3)
    assert same(x) is x and not list(same.parameters())


def test_student_logits_scale_without_margin():
    cos = torch.tensor([[[0.5, -0.25, 0.0]], [[1.0, 0.0, 0.1]]])
    assert student_logits(cos, 4.0).tolist() == [[2.0, -1.0, 0.0], [4.0, 0.0, pytest.approx(0.4)]]
    with pytest.raises(ValueError, match="scale=0"):
        student_logits(cos, 0)


def test_multilevel_combines_weighted_levels():
    s_emb, t_emb = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 5.0], [2.0, 0.0]])
    temps = [1.0, 2.0]
    total, terms = multilevel_alignment_loss(
        STUDENT, TEACHER, s_emb, t_emb, temps, lambda_emb=0.5,
        weights={"instance": 2.0, "class": 3.0, "batch": 0.0},
    )
    inst = sum(
        t**2 * sum(_py_kl_at(tr, sr, t) for tr, sr in zip(TEACHER.tolist(), STUDENT.tolist())) / 2
        for t in temps
    )
    cls = sum(
        class_alignment_loss(softened_posteriors(STUDENT, t), softened_posteriors(TEACHER, t))
        for t in temps
    )
    assert terms["instance"].item() == pytest.approx(inst, rel=1e-5)
    assert terms["emb"].item() == pytest.approx(0.2, rel=1e-5)
    assert terms["class"].item() == pytest.approx(cls.item(), rel=1e-5)
    assert terms["batch"].item() > 0
    assert total.item() == pytest.approx(2.0 * (inst + 0.5 * 0.2) + 3.0 * cls.item(), rel=1e-5)


def test_multilevel_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="lambda_emb=-1"):
        multilevel_alignment_loss(STUDENT, TEACHER, None, None, [1.0], lambda_emb=-1)
    with pytest.raises(ValueError, match="'speaker'"):
        multilevel_alignment_loss(STUDENT, TEACHER, None, None, [1.0], 0.0, weights={"speaker": 1})


def test_gradients_reach_student_never_teacher():
    gen = torch.Generator().manual_seed(1)
    s_logits = torch.randn(4, 6, generator=gen, requires_grad=True)
    t_logits = torch.randn(4, 6, generator=gen, requires_grad=True)
    s_emb = torch.randn(4, 3, generator=gen, requires_grad=True)
    t_emb = torch.randn(4, 5, generator=gen, requires_grad=True)
    proj = EmbeddingProjection(3, 5)
    total, _ = multilevel_alignment_loss(s_logits, t_logits, s_emb, t_emb, [1.0, 3.0], 1.0,
                                         projection=proj)
    total.backward()
    assert t_logits.grad is None and t_emb.grad is None
    assert s_logits.grad.abs().sum() > 0 and s_emb.grad.abs().sum() > 0
    assert proj.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("level", [class_alignment_loss, batch_alignment_loss])
def test_level_gradients_only_on_student_posteriors(level):
    ps = torch.softmax(torch.randn(3, 4), -1).requires_grad_(True)
    pt = torch.softmax(torch.randn(3, 4), -1).requires_grad_(True)
    level(ps, pt).backward()
    assert pt.grad is None and ps.grad.abs().sum() > 0
