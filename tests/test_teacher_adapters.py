"""Tests for speechbrain_imlkd.teacher_adapters (the resemblyzer teacher).

Parity is checked against the package's own pipeline
(``resemblyzer.audio.wav_to_mel_spectrogram`` with librosa,
``VoiceEncoder.forward`` and ``VoiceEncoder.embed_utterance``) on the real
VoxCeleb1 and LibriSpeech clips of ``../shared/data`` (skipped when absent)
and on synthetic speech. resemblyzer's modules import webrtcvad, which only
its silence trimming uses and which is not installed: a stub stands in for it.
"""

import glob
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from speechbrain.lobes.features import Fbank

from speechbrain_imlkd.attribution import (
    completeness_gap,
    embedding_cosine_target,
    integrated_gradients,
)
from speechbrain_imlkd.data.synthetic import (
    Channel,
    SpeakerVoice,
    apply_channel,
    synthesize_utterance,
)
from speechbrain_imlkd.models import build_ecapa, features_pipeline
from speechbrain_imlkd.teacher import Teacher, load_teacher
from speechbrain_imlkd.teacher_adapters import (
    GE2E_LOSS_KEYS,
    HOP_LENGTH,
    PARTIAL_FRAMES,
    PARTIAL_MIN_COVERAGE,
    PARTIAL_RATE,
    RESEMBLYZER_INSTALL,
    SAMPLE_RATE,
    TEACHER_ADAPTERS,
    VOLUME_TARGET_DBFS,
    GE2EEncoder,
    ResemblyzerTeacher,
    load_ge2e_encoder,
    partial_starts,
    resemblyzer_weights_path,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOX_WAVS = SHARED / "voxceleb1" / "wav"
LIBRI = SHARED / "librispeech" / "train-clean-100-one-per-speaker"
# The three shortest LibriSpeech utterances (1.6 to 2.0 s): cheap on CPU.
LIBRI_FILES = ("1447-130550-0000.flac", "403-126855-0000.flac", "19-198-0000.flac")
SYNTH_SECONDS = 3.3
# Relative error of the features (max abs difference / max abs value):
# measured <= 1.1e-6 (float32 FFTs of torch vs numpy).
FEATURE_REL_TOL = 1e-4
# One 1.6 s partial through both encoders: measured 1 - 1e-12 at worst.
PARTIAL_MIN_COSINE = 0.9999
# embed_utterance vs embed (partials): identical when the last partial needs
# no padding; else the package's last two frames still hold the signal tail
# (it pads the waveform, we pad frames). Worst measured: 0.99887 on the cuts
# below, 0.99915 over 234 random lengths of the 9 real clips.
UTTERANCE_MIN_COSINE = 0.998
# Integrated Gradients on the LSTM, Gauss-Legendre, 60-frame segments of the
# 9 real clips and the synthetic one. From silence (zero power) the target
# moves over four decades of alpha near 0 and has ReLU kinks, so quadrature
# converges slowly: relative completeness gaps with 256 nodes 0.15-4.4%
# (median 0.4%), 512 nodes 0.1-1.6%. From the segment's time average, 64
# nodes give 0.1-1.4% (16 nodes up to 11%).
IG_STEPS_SILENCE = 256
IG_MAX_GAP_SILENCE = 0.06
IG_STEPS_MEAN = 64
IG_MAX_GAP_MEAN = 0.02
IG_FRAMES = 60


def _real_clips():
    """(name, float32 waveform) of the real clips present."""
    import soundfile as sf

    paths = sorted(glob.glob(str(VOX_WAVS / "*" / "*" / "*.wav")))
    paths += [str(LIBRI / name) for name in LIBRI_FILES if (LIBRI / name).is_file()]
    clips = []
    for path in paths:
        wav, sr = sf.read(path, dtype="float32")
        assert sr == SAMPLE_RATE, path
        clips.append((Path(path).name, wav))
    return clips


def _synthetic_clip():
    """A synthetic utterance through a random channel (deterministic)."""
    rng = np.random.default_rng(7)
    voice = SpeakerVoice.sample(rng, "id00001")
    wave = synthesize_utterance(voice, SYNTH_SECONDS, rng, SAMPLE_RATE)
    wave = apply_channel(wave, Channel.sample(rng, SAMPLE_RATE), rng)
    # Quieter than -30 dBFS, so the volume normalisation does something.
    wave = 0.01 * wave / np.abs(wave).max()
    return ("synthetic", wave.astype(np.float32))


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The LSTM runs on one thread (the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def package():
    """resemblyzer's own audio and encoder modules (webrtcvad stubbed)."""
    pytest.importorskip("librosa", reason="librosa is needed for the parity tests")
    if importlib.util.find_spec("resemblyzer") is None:
        pytest.skip(f"resemblyzer not installed ({RESEMBLYZER_INSTALL})")
    with pytest.MonkeyPatch.context() as mp:
        if importlib.util.find_spec("webrtcvad") is None:
            mp.setitem(sys.modules, "webrtcvad", types.ModuleType("webrtcvad"))
        from resemblyzer import audio
        from resemblyzer.voice_encoder import VoiceEncoder

        encoder = VoiceEncoder(device="cpu", verbose=False)
        yield types.SimpleNamespace(audio=audio, encoder=encoder)


@pytest.fixture(scope="module")
def teacher():
    """The pretrained teacher in the default (partials) mode."""
    return load_teacher("resemblyzer", "/unused/savedir")


@pytest.fixture(scope="module")
def whole(teacher):
    """The same weights, one LSTM pass over the whole input."""
    return ResemblyzerTeacher(encoder=teacher.embedding_model, utterance_mode="whole")


@pytest.fixture(scope="module")
def clips():
    """Real clips (when ../shared/data is there) plus a synthetic one."""
    return _real_clips() + [_synthetic_clip()]


def _cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _package_mel(package, wav):
    wav = package.audio.normalize_volume(wav, VOLUME_TARGET_DBFS, increase_only=True)
    return package.audio.wav_to_mel_spectrogram(wav.astype(np.float32))


def test_real_clips_present_or_reported():
    if not VOX_WAVS.is_dir() or not LIBRI.is_dir():
        pytest.skip(f"real clips absent ({SHARED} missing): parity runs on synthetic only")
    assert len(_real_clips()) == 9


def test_features_match_package(package, teacher, clips):
    worst = 0.0
    for name, wav in clips:
        ref = _package_mel(package, wav)
        ours = teacher.features(torch.from_numpy(wav)[None])[0].numpy()
        assert ours.shape == ref.shape, name
        rel = np.abs(ours - ref).max() / np.abs(ref).max()
        worst = max(worst, rel)
        assert rel < FEATURE_REL_TOL, f"{name}: relative error {rel:.2e}"
    print(f"worst feature relative error {worst:.2e} over {len(clips)} clips")


def test_partial_embedding_matches_package(package, whole, clips):
    worst = 1.0
    for name, wav in clips:
        ref_mel = _package_mel(package, wav)[:PARTIAL_FRAMES]
        ours_mel = whole.features(torch.from_numpy(wav)[None])[:, :PARTIAL_FRAMES]
        with torch.no_grad():
            ref = package.encoder(torch.from_numpy(ref_mel)[None])[0]
            ours = whole.embed(ours_mel)[0]
        cos = _cosine(ref, ours)
        worst = min(worst, cos)
        assert cos >= PARTIAL_MIN_COSINE, f"{name}: cosine {cos}"
    print(f"worst partial cosine 1 - {1 - worst:.1e}")


def test_embed_utterance_matches_package(package, teacher, clips):
    worst = 1.0
    for name, wav in clips:
        # As it is, and cut to leave a full hop of tail (n % 160 == 159):
        # the worst case for the package's waveform padding.
        cut = (len(wav) - 1) // HOP_LENGTH * HOP_LENGTH - 1
        for n in (len(wav), cut):
            piece = wav[:n]
            normed = package.audio.normalize_volume(
                piece, VOLUME_TARGET_DBFS, increase_only=True
            )
            ref = package.encoder.embed_utterance(normed.astype(np.float32))
            with torch.no_grad():
                ours = teacher.embed(teacher.features(torch.from_numpy(piece)[None]))[0]
            cos = _cosine(ref, ours)
            worst = min(worst, cos)
            assert cos >= UTTERANCE_MIN_COSINE, f"{name}[:{n}]: cosine {cos}"
    print(f"worst embed_utterance cosine {worst:.6f}")


def test_partial_slicing_matches_package(package):
    for n_samples in range(PARTIAL_FRAMES * HOP_LENGTH - 500, 80 * SAMPLE_RATE // 10, 97):
        _, mel_slices = package.encoder.compute_partial_slices(
            n_samples, PARTIAL_RATE, PARTIAL_MIN_COVERAGE
        )
        n_frames = 1 + n_samples // HOP_LENGTH
        assert partial_starts(n_frames) == [s.start for s in mel_slices], n_samples


def test_bad_partial_settings():
    with pytest.raises(ValueError, match="min_coverage"):
        partial_starts(300, min_coverage=0)
    with pytest.raises(ValueError, match="rate"):
        partial_starts(300, rate=0.1)
    with pytest.raises(ValueError, match="utterance_mode"):
        ResemblyzerTeacher(encoder=GE2EEncoder(), utterance_mode="mean")


def test_frame_count_equals_fbank():
    fbank = Fbank(n_mels=40)
    teacher = ResemblyzerTeacher(encoder=GE2EEncoder())
    for n in (1, 159, 160, 161, 400, 16000, 16001, 16159):
        wav = 0.1 * torch.randn(1, n)
        assert teacher.features(wav).shape[1] == fbank(wav).shape[1] == 1 + n // 160, n


def test_padded_batch_gives_each_utterance_its_own(teacher, whole):
    torch.manual_seed(0)
    long, short = 0.02 * torch.randn(30000), 0.005 * torch.randn(18000)
    batch = torch.zeros(2, 30000)
    batch[0], batch[1, :18000] = long, short
    batch[1, 18000:] = 0.3  # padding that is not silence must not leak in
    lens = torch.tensor([1.0, 18000 / 30000])
    feats = teacher.features(batch, lens)
    alone = teacher.features(short[None])[0]
    assert torch.allclose(feats[1, : alone.shape[0]], alone, rtol=1e-5, atol=1e-9)
    assert torch.allclose(feats[0], teacher.features(long[None])[0])
    for model in (teacher, whole):
        with torch.no_grad():
            emb = model.embed(feats, lens)
            ref = model.embed(alone[None])[0]
        assert torch.allclose(emb[1], ref, atol=1e-5), model.utterance_mode


def test_short_inputs_run_whole_in_partials_mode(teacher, whole):
    feats = torch.rand(2, PARTIAL_FRAMES, 40)
    with torch.no_grad():
        assert torch.allclose(teacher.embed(feats), whole.embed(feats), atol=1e-6)
        longer = torch.rand(1, PARTIAL_FRAMES + 100, 40)
        assert not torch.allclose(teacher.embed(longer), whole.embed(longer), atol=1e-3)


def test_gradients_reach_features_not_weights(teacher):
    feats = teacher.features(0.02 * torch.randn(2, 32000), torch.tensor([1.0, 0.8]))
    assert not feats.requires_grad
    for lengths in (None, torch.tensor([1.0, 0.8])):
        x = feats.clone().requires_grad_()
        teacher.embed(x, lengths).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        if lengths is not None:
            # Frames past the second utterance's end get no gradient.
            assert x.grad[1, int(0.8 * x.shape[1]) + 1 :].abs().sum() == 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.embedding_model.training
    assert not teacher.embedding_model.lstm.training


def test_integrated_gradients_complete(teacher, clips):
    wavs = torch.stack([torch.from_numpy(w[:SAMPLE_RATE]) for _, w in clips[::3][:2]])
    feats = teacher.features(wavs)
    with torch.no_grad():
        reference = teacher.embed(feats)
    segment = feats[:, 20 : 20 + IG_FRAMES]
    target = embedding_cosine_target(teacher.embed, reference)
    for baseline, steps, max_gap in (
        (0.0, IG_STEPS_SILENCE, IG_MAX_GAP_SILENCE),
        (segment.mean(dim=1, keepdim=True), IG_STEPS_MEAN, IG_MAX_GAP_MEAN),
    ):
        ig = integrated_gradients(
            target, segment, baseline=baseline, steps=steps,
            method="gauss_legendre", internal_batch_size=steps,
        )
        gap = completeness_gap(ig, target, segment, baseline=baseline)
        print(f"IG completeness gaps, {steps} nodes: {gap.tolist()}")
        assert bool((gap < max_gap).all()), (steps, gap)
    assert all(p.grad is None for p in teacher.parameters())


def test_centroid_posteriors_only():
    teacher = ResemblyzerTeacher(encoder=GE2EEncoder())
    with pytest.raises(ValueError, match="no classifier.*teacher_posteriors: centroid"):
        teacher.set_training_speakers(["a", "b"], mode="label")
    cents = {"a": torch.rand(256), "b": torch.rand(256)}
    assert teacher.set_training_speakers(["b", "a"], mode="auto", centroid_data=cents) == "centroid"
    emb = teacher.embed(torch.rand(3, 50, 40))
    probs = teacher.posteriors(emb)
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(dim=1), torch.ones(3))
    expected = 30.0 * torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(
        torch.stack([cents["b"], cents["a"]]), dim=1
    ).t()
    assert torch.allclose(teacher.logits(emb), expected, atol=1e-5)


def test_load_teacher_dispatch_and_checks(tmp_path):
    teacher = load_teacher(
        "resemblyzer", tmp_path, expected_n_mels=80, expected_sample_rate=16000,
        adapter_options={"utterance_mode": "whole"},
    )
    assert isinstance(teacher, ResemblyzerTeacher) and teacher.own_front_end
    assert (teacher.n_mels, teacher.embedding_dim, teacher.sample_rate) == (40, 256, 16000)
    assert teacher.front_end["utterance_mode"] == "whole"
    assert "resemblyzer" in TEACHER_ADAPTERS
    with pytest.raises(ValueError, match="sample_rate=16000 but the recipe sets sample_rate=8000"):
        load_teacher("resemblyzer", tmp_path, expected_sample_rate=8000)
    with pytest.raises(FileNotFoundError, match=r"teacher adapter \(one of resemblyzer\)"):
        load_teacher("resemblyser", tmp_path)
    with pytest.raises(ValueError, match="not an adapter"):
        load_teacher(tmp_path / "nope", tmp_path, adapter_options={"utterance_mode": "whole"})


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec

    def no_resemblyzer(name, *args, **kwargs):
        return None if name == "resemblyzer" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", no_resemblyzer)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps resemblyzer==0.1.4"):
        load_teacher("resemblyzer", tmp_path)


def test_weights_load_strictly(tmp_path):
    path = resemblyzer_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    assert set(GE2E_LOSS_KEYS) <= set(state)
    encoder = load_ge2e_encoder(path)
    assert torch.equal(encoder.linear.weight, state["linear.weight"])
    bad = dict(state)
    bad.pop("linear.bias")
    torch.save({"model_state": bad}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"(?s)bad\.pt does not fit.*linear\.bias"):
        load_ge2e_encoder(tmp_path / "bad.pt")
    torch.save({"weights": state}, tmp_path / "nokey.pt")
    with pytest.raises(ValueError, match=r"nokey\.pt: no 'model_state'"):
        load_ge2e_encoder(tmp_path / "nokey.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: cannot read"):
        load_ge2e_encoder(tmp_path / "junk.pt")


def test_band_centres():
    librosa = pytest.importorskip("librosa")
    teacher = ResemblyzerTeacher(encoder=GE2EEncoder())
    expected = librosa.mel_frequencies(n_mels=42, fmin=0.0, fmax=8000.0, htk=False)[1:-1]
    assert np.allclose(teacher.band_centres_hz().numpy(), expected, rtol=1e-9)

    hub_like = Teacher(*features_pipeline(80), build_ecapa(16, 8))
    to_mel = lambda f: 2595 * math.log10(1 + f / 700)
    mels = np.linspace(to_mel(0.0), to_mel(8000.0), 82)
    expected = 700 * (10 ** (mels / 2595) - 1)
    assert np.allclose(hub_like.band_centres_hz().numpy(), expected[1:-1], rtol=1e-5)


def test_front_end_descriptions():
    hub_like = Teacher(*features_pipeline(80), build_ecapa(16, 8))
    partials = ResemblyzerTeacher(encoder=GE2EEncoder())
    wholes = ResemblyzerTeacher(encoder=GE2EEncoder(), utterance_mode="whole")
    assert not hub_like.own_front_end and partials.own_front_end
    descs = [t.front_end for t in (hub_like, partials, wholes)]
    texts = [json.dumps(d, sort_keys=True) for d in descs]
    assert len(set(texts)) == 3
    assert descs[0]["adapter"] == "speechbrain" and descs[0]["n_mels"] == 80
    assert descs[1]["adapter"] == "resemblyzer" and descs[1]["n_mels"] == 40
    assert descs[1]["power"] == 2.0 and descs[1]["mel_scale"] == "slaney"
