"""Integrated Gradients: quadrature, exactness, equivalences, targets, completeness."""

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from speechbrain_imlkd.attribution import (
    CAPTUM_METHODS,
    DEFAULT_METHOD,
    DEFAULT_STEPS,
    METHODS,
    completeness_gap,
    embedding_cosine_target,
    integrated_gradients,
    quadrature,
    speaker_logit_target,
)

#: Median completeness gap the default setting must stay under (see
#: benchmarks/results_ig.md, where the default was chosen with this bound).
COMPLETENESS_BOUND = 0.02
N_MELS, N_SPK, SCALE = 24, 4, 30.0


def _square(f):
    return f.square().sum(dim=(1, 2))


def test_quadrature_nodes_and_weights():
    assert quadrature("riemann_right", 5)[0] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    for method in METHODS:
        for m in (2, 3, 8):
            a, w = quadrature(method, m)
            assert len(a) == len(w) == m and sum(w) == pytest.approx(1.0)
            assert 0 <= min(a) and max(a) <= 1
    # Gauss-Legendre with m nodes integrates a^(2m-1) exactly on [0, 1].
    a, w = quadrature("gauss_legendre", 4)
    assert sum(wi * ai**7 for ai, wi in zip(a, w)) == pytest.approx(1 / 8, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 1}, "steps=1"),
        ({"steps": 0, "method": "gauss_legendre"}, "steps=0"),
        ({"method": "simpson"}, "'simpson'"),
        ({"internal_batch_size": 0}, "internal_batch_size.*0"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        integrated_gradients(_square, torch.ones(2, 3, 4), **kwargs)


def test_bad_target_and_baseline_are_reported():
    with pytest.raises(ValueError, match="one scalar per row"):
        integrated_gradients(lambda f: f.sum(dim=2), torch.ones(2, 3, 4), steps=2)
    with pytest.raises(ValueError, match=r"baseline of shape \(5,\)"):
        integrated_gradients(_square, torch.ones(2, 3, 4), baseline=torch.zeros(5), steps=2)


@pytest.mark.parametrize("method", METHODS)
def test_linear_target_is_exact(method):
    w = torch.randn(3, 4)
    x, base = torch.randn(2, 3, 4), torch.randn(4)
    ig = integrated_gradients(lambda f: (f * w).sum(dim=(1, 2)), x, base, steps=3, method=method)
    assert torch.allclose(ig, (x - base) * w, atol=1e-6)


def test_quadratic_target_by_hand():
    x = torch.tensor([[[1.0, -2.0], [3.0, 0.5]]])
    # IG_i = x_i * sum_k w_k 2 a_k x_i: exact (x_i^2) when the rule integrates a
    # linear function exactly; right Riemann overshoots by (m + 1) / m.
    for method in ("trapezoid", "gauss_legendre"):
        assert torch.allclose(integrated_gradients(_square, x, steps=2, method=method), x**2)
    ig = integrated_gradients(_square, x, steps=4, method="riemann_right")
    assert torch.allclose(ig, x**2 * 5 / 4)
    gap = completeness_gap(ig, _square, x)
    assert gap.item() == pytest.approx(0.25, rel=1e-5)


def _tiny_ecapa(seed=0, channels=16):
    torch.manual_seed(seed)
    emb = ECAPA_TDNN(
        N_MELS, channels=[channels] * 4 + [3 * channels], lin_neurons=16, attention_channels=8
    )
    clf = Classifier(16, out_neurons=N_SPK)
    return emb, clf


def _freeze(*modules):
    for m in modules:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)


def _embed_fn(emb):
    return lambda f, lengths=None: emb(f, lengths).squeeze(1)


def _logits_fn(clf):
    return lambda e: SCALE * clf(e[:, None]).squeeze(1)


@pytest.fixture(scope="module")
def random_teacher():
    emb, clf = _tiny_ecapa()
    _freeze(emb, clf)
    return emb, clf


def _reference_ig(target_fn, x, alphas, weights):
    """One path point at a time, no batching tricks."""
    total = torch.zeros_like(x)
    for a, w in zip(alphas, weights):
        point = (a * x).requires_grad_(True)
        (g,) = torch.autograd.grad(target_fn(point).sum(), point)
        total += w * g
    return x * total


def _independent_rule(method, m):
    if method == "riemann_right":
        return [k / m for k in range(1, m + 1)], [1 / m] * m
    if method == "trapezoid":
        h = 1 / (m - 1)
        return list(np.linspace(0, 1, m)), [h / 2] + [h] * (m - 2) + [h / 2]
    nodes, weights = np.polynomial.legendre.leggauss(m)
    return list((nodes + 1) / 2), list(weights / 2)


@pytest.mark.parametrize("method", METHODS)
def test_matches_reference_and_captum_on_ecapa(random_teacher, method):
    emb, clf = random_teacher
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, N_MELS, generator=gen)
    labels = torch.tensor([0, 2, 3])
    target = speaker_logit_target(_embed_fn(emb), _logits_fn(clf), labels)
    ours = integrated_gradients(target, x, steps=6, method=method, internal_batch_size=4)
    ref = _reference_ig(target, x, *_independent_rule(method, 6))
    theirs = IntegratedGradients(lambda f: _logits_fn(clf)(_embed_fn(emb)(f))).attribute(
        x, target=labels, n_steps=6, method=CAPTUM_METHODS[method]
    )
    if method == "trapezoid":
        # captum's trapezoid weights sum to (m - 1) / m (step 1/m on nodes 1/(m-1) apart).
        theirs = theirs * 6 / 5
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


def test_chunking_does_not_change_result_and_nothing_is_kept(random_teacher):
    emb, clf = random_teacher
    x = torch.randn(2, 30, N_MELS).requires_grad_(True)
    target = speaker_logit_target(_embed_fn(emb), _logits_fn(clf), torch.tensor([1, 0]))
    runs = [
        integrated_gradients(target, x, steps=5, internal_batch_size=n) for n in (1, 2, 7, None)
    ]
    for other in runs[1:]:
        assert torch.allclose(runs[0], other, atol=1e-6)
    assert not runs[0].requires_grad and runs[0].grad_fn is None
    assert x.grad is None and all(p.grad is None for p in emb.parameters())


def test_targets_tile_labels_lengths_and_references():
    seen = []

    def embed(f, lengths=None):
        seen.append(lengths)
        return f.mean(dim=1)

    labels, lengths = torch.tensor([1, 0]), torch.tensor([1.0, 0.5])
    target = speaker_logit_target(embed, lambda e: e, labels, lengths=lengths)
    f = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    assert target(torch.cat([f, 2 * f])).tolist() == [2.0, 3.0, 4.0, 6.0]
    assert seen[-1].tolist() == [1.0, 0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match="not a multiple of the 2 samples"):
        target(torch.ones(3, 1, 2))
    cos = embedding_cosine_target(embed, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert cos(torch.cat([f, -f])).tolist() == pytest.approx(
        [1 / 5**0.5, 4 / 5, -1 / 5**0.5, -4 / 5], rel=1e-6
    )


def test_lengths_reach_the_attentive_pooling(random_teacher):
    emb, clf = random_teacher
    x = torch.randn(2, 40, N_MELS)
    labels = torch.tensor([0, 1])
    full = speaker_logit_target(_embed_fn(emb), _logits_fn(clf), labels)
    half = speaker_logit_target(_embed_fn(emb), _logits_fn(clf), labels, lengths=torch.ones(2) / 2)
    with torch.no_grad():
        direct = _logits_fn(clf)(emb(x, torch.ones(2) / 2).squeeze(1))[[0, 1], [0, 1]]
        assert torch.allclose(half(x), direct) and not torch.allclose(full(x), direct)


def _toy_batch(templates, n, frames, gen):
    """Mean-normalised toy "fbank": speaker-specific spectral templates mixed over time."""
    labels = torch.randint(0, N_SPK, (n,), generator=gen)
    act = torch.rand(n, frames, templates.shape[1], generator=gen).square()
    x = act @ templates[labels] + 0.3 * torch.randn(n, frames, N_MELS, generator=gen)
    return x - x.mean(dim=1, keepdim=True), labels


@pytest.fixture(scope="module")
def trained_teacher():
    gen = torch.Generator().manual_seed(0)
    templates = 2 * torch.randn(N_SPK, 3, N_MELS, generator=gen)
    emb, clf = _tiny_ecapa(seed=1, channels=32)
    loss_fn = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=SCALE))
    opt = torch.optim.Adam(list(emb.parameters()) + list(clf.parameters()), lr=3e-3)
    for _ in range(60):
        x, y = _toy_batch(templates, 16, 80, gen)
        loss = loss_fn(clf(emb(x)), y[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    _freeze(emb, clf)
    x, y = _toy_batch(templates, 12, 80, gen)
    with torch.no_grad():
        acc = (clf(emb(x)).squeeze(1).argmax(-1) == y).float().mean().item()
    return emb, clf, x, y, acc


def test_completeness_of_default_on_trained_teacher(trained_teacher):
    emb, clf, x, y, acc = trained_teacher
    assert acc > 0.9  # it is a trained teacher, not a random one
    target = speaker_logit_target(_embed_fn(emb), _logits_fn(clf), y)
    ig, delta = integrated_gradients(target, x, return_convergence=True)
    gap = completeness_gap(ig, target, x)
    assert gap.median().item() < COMPLETENESS_BOUND
    with torch.no_grad():
        change = target(x) - target(torch.zeros_like(x))
    assert torch.allclose(delta.abs(), gap * change.abs(), rtol=1e-4, atol=1e-5)
    # The measurement discriminates: a coarse rule misses by far more.
    coarse = integrated_gradients(target, x, steps=4, method="riemann_right")
    assert completeness_gap(coarse, target, x).median() > 2 * gap.median()
    assert (DEFAULT_METHOD, DEFAULT_STEPS) != ("riemann_right", 4)
