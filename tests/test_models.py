"""Tests for speechbrain_imlkd.models: builders, parameter and MAC counts."""

import pytest
import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from torch.utils.flop_counter import FlopCounterMode

from speechbrain_imlkd.models import (
    build_classifier,
    build_ecapa,
    count_macs,
    count_parameters,
    ecapa_kwargs,
    features_pipeline,
    infer_ecapa_kwargs,
)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny models run on one thread (threads only add contention here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "channels, expected",
    # Reference counts of SpeechBrain's ECAPA_TDNN with these widths; 1024 is
    # the size of speechbrain/spkrec-ecapa-voxceleb (20.8M).
    [(1024, 20_767_552), (512, 6_194_048), (256, 2_049_952), (128, 763_568)],
)
def test_paper_sizes(channels, expected):
    model = build_ecapa(channels=channels)
    assert model.channels == [channels] * 4 + [3 * channels]
    assert count_parameters(model) == expected


def test_build_ecapa_shapes_and_options():
    model = build_ecapa(channels=16, lin_neurons=12, n_mels=24, attention_channels=4)
    assert isinstance(model, ECAPA_TDNN)
    out = model(torch.rand(3, 37, 24))
    assert out.shape == (3, 1, 12)
    # A different input size must be rejected by the first convolution.
    with pytest.raises(RuntimeError):
        model(torch.rand(3, 37, 80))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(channels=12), "multiple of res2net_scale"),
        (dict(channels=0), "channels=0"),
        (dict(channels=True), "channels=True"),
        (dict(lin_neurons=-1), "lin_neurons=-1"),
        (dict(n_mels=2.5), "n_mels=2.5"),
        (dict(attention_channels=None), "attention_channels=None"),
    ],
)
def test_bad_builder_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_ecapa(**kwargs)


def test_infer_kwargs_round_trip():
    kw = ecapa_kwargs(channels=32, lin_neurons=16, n_mels=40, attention_channels=8)
    model = ECAPA_TDNN(**kw)
    assert infer_ecapa_kwargs(model) == kw
    # The inferred arguments rebuild a model that takes the same weights.
    ECAPA_TDNN(**infer_ecapa_kwargs(model)).load_state_dict(model.state_dict())
    with pytest.raises(TypeError, match="ECAPA_TDNN"):
        infer_ecapa_kwargs(torch.nn.Linear(2, 2))


def test_classifier():
    clf = build_classifier(7, lin_neurons=16)
    assert isinstance(clf, Classifier)
    cos = clf(torch.randn(5, 1, 16))
    assert cos.shape == (5, 1, 7)
    assert cos.abs().max() <= 1.0 + 1e-6
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="n_speakers"):
            build_classifier(bad, lin_neurons=16)


def test_count_parameters_trainable_only():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 15 + 8
    assert count_parameters(model, trainable_only=True) == 8


def test_count_macs_matches_flop_counter():
    model = build_ecapa(channels=32, lin_neurons=16, attention_channels=8)
    macs = count_macs(model, n_mels=80, seconds=1.0)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 101, 80))
    assert macs == counter.get_total_flops() // 2
    # Linear in time: 3 s costs about three times 1 s.
    ratio = count_macs(model, seconds=3.0) / macs
    assert 2.9 < ratio < 3.1


def test_count_macs_exact_and_side_effects():
    conv = torch.nn.Conv1d(8, 4, kernel_size=3, groups=2, padding=1)

    class Wrap(torch.nn.Module):
        """Takes B x T x F like ECAPA, applies a Conv1d then a Linear."""

        def __init__(self):
            super().__init__()
            self.conv = conv
            self.lin = torch.nn.Linear(4, 5)

        def forward(self, x):
            return self.lin(self.conv(x.transpose(1, 2)).transpose(1, 2))

    model = Wrap().train()
    # 11 frames: conv 11*4 outputs x (8/2*3) + linear 11*5 outputs x 4.
    assert count_macs(model, n_mels=8, seconds=0.1) == 11 * 4 * 12 + 11 * 5 * 4
    assert model.training, "count_macs must restore the training flag"
    assert not conv._forward_hooks, "count_macs must remove its hooks"
    with pytest.raises(ValueError, match="seconds"):
        count_macs(model, n_mels=8, seconds=0)


def test_features_pipeline():
    fbank, norm = features_pipeline(n_mels=40, sample_rate=16000)
    wav = torch.randn(2, 8000) * torch.tensor([[1.0], [5.0]])
    feats = norm(fbank(wav), torch.ones(2))
    assert feats.shape == (2, 51, 40)
    # Sentence mean normalisation: zero mean per utterance and band...
    assert feats.mean(dim=1).abs().max() < 1e-4
    # ...but no variance normalisation (std_norm=False), as the hub teacher.
    raw = fbank(wav)
    assert torch.allclose(feats, raw - raw.mean(dim=1, keepdim=True), atol=1e-5)
    assert norm.norm_type == "sentence" and norm.std_norm is False
