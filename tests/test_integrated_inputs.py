"""Multi-duration segments, saliency normalisation and integration rules."""

import pytest
import torch

from speechbrain_imlkd.attribution import integrated_gradients
from speechbrain_imlkd.integrated_inputs import (
    INTEGRATION_RULES,
    expand_saliency,
    integrated_inputs,
    normalised_saliency,
    pool_saliency,
    sample_segments,
    saliency_scale,
    temporal_weight,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_segments_are_windows_of_the_chunk():
    feats = torch.randn(3, 300, 4)
    out = sample_segments(feats, [1.0, 2.0, 3.0], generator=_gen())
    assert [seg.shape[1] for seg, _ in out] == [100, 200, 300]
    for seg, starts in out:
        assert seg.shape == (3, seg.shape[1], 4)
        for b, s in enumerate(starts.tolist()):
            assert 0 <= s <= 300 - seg.shape[1]
            assert torch.equal(seg[b], feats[b, s : s + seg.shape[1]])


def test_segments_reproducible_and_cover_every_start():
    feats = torch.randn(2, 12, 1)
    a = sample_segments(feats, [0.1], generator=_gen(3))[0][1]
    b = sample_segments(feats, [0.1], generator=_gen(3))[0][1]
    assert torch.equal(a, b)
    gen = _gen(0)
    seen = {int(s) for _ in range(100) for s in sample_segments(feats, [0.1], generator=gen)[0][1]}
    assert seen == {0, 1, 2}


def test_segments_stay_in_unpadded_part():
    feats = torch.randn(2, 100, 2)
    lengths = torch.tensor([1.0, 0.5])
    gen = _gen(1)
    for _ in range(50):
        (seg, starts), = sample_segments(feats, [0.3], generator=gen, lengths=lengths)
        assert starts[1] + 30 <= 50 and starts[0] + 30 <= 100


@pytest.mark.parametrize(
    "durations, match",
    [([1.0, 4.0], "duration 4.0 s"), ([0.0], "0.0"), ([-1.0], "-1.0"), ([], "empty")],
)
def test_bad_durations_are_named(durations, match):
    with pytest.raises(ValueError, match=match):
        sample_segments(torch.zeros(1, 300, 2), durations)


def test_duration_longer_than_unpadded_part_is_an_error():
    with pytest.raises(ValueError, match=r"duration 0.6 s \(60 frames\).*50 frames"):
        sample_segments(torch.zeros(2, 100, 2), [0.6], lengths=torch.tensor([1.0, 0.5]))


def test_normalised_saliency_per_segment_and_silent_guard():
    ig = torch.tensor([[[-4.0, 2.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    s = normalised_saliency(ig)
    assert s.tolist() == [[[1.0, 0.5], [0.25, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
    with pytest.raises(ValueError, match="NaN"):
        normalised_saliency(torch.tensor([[float("nan")]]))


def test_silent_segment_end_to_end_gives_unchanged_input():
    silent = torch.zeros(2, 10, 3)
    ig = integrated_gradients(lambda f: f.square().sum(dim=(1, 2)), silent, steps=4)
    s = normalised_saliency(ig)
    assert torch.isfinite(s).all() and s.abs().max() == 0
    assert torch.equal(integrated_inputs(silent, s, "saliency_scale", 2.0), silent)


def test_saliency_scale_by_hand():
    x = torch.tensor([[[2.0, -1.0, 0.5]]])
    s = torch.tensor([[[1.0, 0.5, 0.0]]])
    assert saliency_scale(x, s, alpha=2.0).tolist() == [[[6.0, -2.0, 0.5]]]
    assert torch.equal(saliency_scale(x, s, alpha=0.0), x)


@pytest.mark.parametrize("rule", [saliency_scale, temporal_weight])
def test_negative_alpha_is_named(rule):
    with pytest.raises(ValueError, match="alpha.*-0.5"):
        rule(torch.ones(1, 2, 2), torch.zeros(1, 2, 2), alpha=-0.5)


def test_temporal_weight_by_hand():
    x = torch.ones(1, 3, 2)
    # Frame saliency (mean over frequency) .5, .25, 0 -> renormalised 1, .5, 0.
    s = torch.tensor([[[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]]])
    assert temporal_weight(x, s, alpha=2.0)[0, :, 0].tolist() == [3.0, 2.0, 1.0]
    soft = temporal_weight(x, s, alpha=3.0, mode="softmax")[0, :, 0]
    assert soft.mean().item() == pytest.approx(1.0, rel=1e-6)
    e = torch.exp(torch.tensor([3.0, 1.5, 0.0]))
    assert torch.allclose(soft, 3 * e / e.sum())
    with pytest.raises(ValueError, match="'cubic'"):
        temporal_weight(x, s, mode="cubic")


def test_precomputed_saliency_layouts_agree():
    gen = _gen(2)
    x = torch.randn(2, 5, 8, generator=gen)
    # A map constant over 4 bands of 2 bins, so pooling loses nothing.
    bands = torch.rand(2, 5, 4, generator=gen)
    full = bands.repeat_interleave(2, dim=-1)
    assert torch.equal(pool_saliency(full, 4), bands)
    assert torch.equal(expand_saliency(bands, 8), full)
    ref = integrated_inputs(x, full, "saliency_scale", 1.5)
    assert torch.allclose(integrated_inputs(x, bands, "saliency_scale", 1.5), ref)
    half = integrated_inputs(x, bands.half(), "saliency_scale", 1.5)
    assert half.dtype == torch.float32 and torch.allclose(half, ref, atol=1e-2)
    time_only = full.mean(-1)
    assert torch.allclose(
        temporal_weight(x, time_only, 1.0), temporal_weight(x, full, 1.0), atol=1e-6
    )
    assert torch.allclose(
        saliency_scale(x, time_only, 1.0), x * (1 + time_only[..., None]), atol=1e-6
    )


def test_saliency_layout_errors():
    x = torch.ones(1, 4, 80)
    with pytest.raises(ValueError, match="3 frequency bands"):
        saliency_scale(x, torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match=r"\(1, 5, 80\)"):
        saliency_scale(x, torch.zeros(1, 5, 80))
    with pytest.raises(ValueError, match="normalised_saliency"):
        saliency_scale(x, 3 * torch.ones(1, 4, 80))
    with pytest.raises(ValueError, match="n_bands=3"):
        pool_saliency(torch.zeros(1, 4, 80), 3)


def test_registry_and_dispatch():
    assert set(INTEGRATION_RULES) == {"saliency_scale", "temporal_weight"}
    x, s = torch.ones(1, 2, 2), torch.tensor([[1.0, 0.0]])
    assert integrated_inputs(x, s, "temporal_weight", 1.0)[0, :, 0].tolist() == [2.0, 1.0]
    assert torch.equal(integrated_inputs(x, s, lambda x, s, a: x * a, 3.0), 3 * x)
    with pytest.raises(ValueError, match="'boost'"):
        integrated_inputs(x, s, "boost", 1.0)
