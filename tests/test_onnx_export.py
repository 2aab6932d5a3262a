"""Tests for speechbrain_imlkd.onnx_export: the waveform-to-embedding graph.

The tiny model (C=16, random weights) is exported once through
``imlkd-export HPARAMS --checkpoint ... --onnx --int8`` (see
``tests/_onnx_models.py``); the tests compare its graphs with the torch model
SpeechBrain loads from the same folder.
"""

import glob
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import speechbrain_imlkd.onnx_export as ox
import speechbrain_imlkd.onnx_export.exporter as ox_exporter
from speechbrain_imlkd.embeddings import load_model
from speechbrain_imlkd.export import main as export_main
from speechbrain_imlkd.models import features_pipeline
from _onnx_models import LIN_NEURONS, feature_input_graph, tiny_exports

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = sorted(glob.glob(str(DATA / "voxceleb1" / "wav" / "*" / "*" / "*.wav")))
FLAC = sorted(glob.glob(str(DATA / "librispeech" / "train-clean-100-one-per-speaker" / "*.flac")))


@pytest.fixture(scope="module")
def exported():
    return tiny_exports()


@pytest.fixture(scope="module")
def encoder(exported):
    return load_model(exported.folder)


@pytest.fixture(scope="module")
def fp32(exported):
    return ox.OnnxEmbedder(exported.onnx, threads=1)


def test_cli_wrote_both_graphs_atomically(exported):
    names = sorted(p.name for p in exported.folder.iterdir())
    assert ox.ONNX_FILE in names and exported.int8.name in names
    assert not [n for n in names if ".tmp" in n]
    meta = {p.key: p.value for p in onnx.load(str(exported.onnx)).metadata_props}
    assert meta[ox.FORMAT_KEY] == ox.FORMAT_VALUE
    assert meta["sample_rate"] == "16000" and meta["embedding_dim"] == str(LIN_NEURONS)
    assert meta["quantization"] == "none" and len(meta["source_fingerprint"]) == 64


@pytest.mark.parametrize("seconds", [1.0, 3.0, 10.0, 20.0])
def test_parity_on_synthetic_audio(encoder, fp32, seconds):
    (row,) = ox.check_parity(encoder, fp32, seconds=(seconds,))
    assert row["batch"] == ox.PARITY_BATCH and row["samples"] == int(seconds * 16000)
    assert row["cosine_min"] >= ox.PARITY_MIN_COSINE
    assert row["max_abs_diff"] < 1e-4


@pytest.mark.skipif(not CLIPS, reason="real VoxCeleb1 clips absent (needs ../shared/data)")
def test_parity_on_real_clips(encoder, fp32):
    clips = CLIPS + FLAC[:2]
    rows = ox.check_parity(encoder, fp32, seconds=(), clips=clips)
    assert len(rows) == len(clips) + 1  # each clip alone, then one padded batch
    assert min(r["cosine_min"] for r in rows) >= ox.PARITY_MIN_COSINE
    assert max(r["max_abs_diff"] for r in rows) < 1e-4


def test_dynamic_batch_and_masking(encoder, fp32):
    """Batch sizes the graph was not traced with; the lengths input is live."""
    wavs, _ = ox.synthetic_waveforms(2.0, batch=5, seed=3)
    full = torch.ones(5)
    for n in (1, 4, 5):
        ref = encoder.encode_batch(wavs[:n], full[:n])
        out = fp32.encode_batch(wavs[:n], full[:n])
        assert out.shape == (n, 1, LIN_NEURONS)
        assert ox._compare(ref[:, 0], out[:, 0])[0] >= ox.PARITY_MIN_COSINE
    # Rows of a batch do not leak into each other: equal to each row alone.
    batch = fp32.encode_batch(wavs, full)
    alone = torch.cat([fp32.encode_batch(wavs[i : i + 1]) for i in range(5)])
    assert torch.allclose(batch, alone, atol=1e-5)
    # Relative lengths change the result, exactly as in torch.
    lens = torch.tensor([1.0, 0.5, 0.8, 0.3, 0.9])
    masked = fp32.encode_batch(wavs, lens)
    assert not torch.allclose(masked[1:], batch[1:], atol=1e-3)
    ref = encoder.encode_batch(wavs, lens)
    assert ox._compare(ref[:, 0], masked[:, 0])[0] >= ox.PARITY_MIN_COSINE


def test_conv_stft_matches_speechbrain():
    fbank, _ = features_pipeline()
    x = torch.randn(3, 12345)
    ref = fbank.compute_STFT(x)
    out = ox.ConvSTFT(fbank.compute_STFT)(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-4 * ref.abs().max()


def test_too_short_input_is_refused(fp32):
    assert fp32.min_samples == 640
    with pytest.raises(ValueError, match="shorter than the 640 samples"):
        fp32.encode_batch(torch.zeros(1, 639))


def test_int8_graph(exported, encoder, fp32):
    graph = onnx.load(str(exported.int8))
    ops = {n.op_type for n in graph.graph.node}
    assert "ConvInteger" in ops
    # The STFT stays in float: quantising it would quantise the features.
    stft = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert len(stft) == 1 and ox.DFT_KERNEL_NAME in stft[0].input[1]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["quantization"].startswith("dynamic-int8")
    # Every quantised convolution holds 8-bit weights.
    inits = {i.name: i for i in graph.graph.initializer}
    weights = [inits[n.input[1]] for n in graph.graph.node if n.op_type == "ConvInteger"]
    assert weights and all(w.data_type == onnx.TensorProto.UINT8 for w in weights)
    rows = ox.check_parity(encoder, exported.int8, seconds=(1.0, 3.0))
    cosines = [r["cosine_min"] for r in rows]
    assert min(cosines) > 0.99  # close, but not the fp32 graph
    assert max(r["max_abs_diff"] for r in rows) > 1e-5


def test_int8_refuses_foreign_or_quantised_graphs(exported, tmp_path):
    with pytest.raises(ValueError, match="already quantised"):
        ox.quantize_int8(exported.int8, tmp_path / "x.onnx")
    foreign = tmp_path / "foreign.onnx"
    onnx.save(feature_input_graph(), str(foreign))
    with pytest.raises(ValueError, match="not a graph written by export_onnx"):
        ox.quantize_int8(foreign)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.onnx"]


class _FakeProgram:
    """What torch.onnx.export returns, holding an already exported graph."""

    def __init__(self, path):
        self.model_proto = onnx.load(str(path))


def test_failed_parity_leaves_no_file(exported, encoder, tmp_path, monkeypatch):
    # The real graph, a bar no graph can pass: export must refuse it.
    monkeypatch.setattr(ox.torch.onnx, "export", lambda *a, **k: _FakeProgram(exported.onnx))
    monkeypatch.setattr(ox_exporter, "PARITY_MIN_COSINE", 1.5)  # where export_onnx reads it
    out = tmp_path / "sub" / "model.onnx"
    with pytest.raises(ox.ParityError, match="below 1.5"):
        ox.export_onnx(encoder, out)
    assert list((tmp_path / "sub").iterdir()) == []


def test_exporter_failure_names_model(encoder, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(ox.torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="ONNX export of .* failed: .*unsupported operator"):
        ox.export_onnx(encoder, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_folder_mode_and_errors(exported, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(ox, "export_folder", lambda *a, **k: calls.append((a, k)))
    export_main([str(exported.folder), "--onnx", str(tmp_path / "m.onnx"), "--int8"])
    assert calls == [((str(exported.folder), str(tmp_path / "m.onnx")), {"int8": True})]
    export_main([str(exported.folder), "--onnx"])  # default name inside the folder
    assert calls[-1] == ((str(exported.folder), None), {"int8": False})
    for argv, message in (
        ([str(exported.folder)], "pass --onnx"),
        ([str(exported.folder), "--int8"], "--int8 needs --onnx"),
        ([str(exported.root / "hparams.yaml"), "--onnx"], "needs --checkpoint and --output"),
    ):
        with pytest.raises(SystemExit):
            export_main(argv)
        assert message in capsys.readouterr().err


def test_embedder_rejects_feature_input_graph(tmp_path):
    path = tmp_path / "features.onnx"
    onnx.save(feature_input_graph(), str(path))
    with pytest.raises(ValueError, match=r"features.onnx: input 'feats'.*not a waveform batch"):
        ox.OnnxEmbedder(path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(64))
    with pytest.raises(ValueError, match="garbage.onnx: not a loadable ONNX model"):
        ox.OnnxEmbedder(garbage)


def test_synthetic_waveforms_are_padded_and_deterministic():
    wavs, lens = ox.synthetic_waveforms(1.0, batch=4, seed=1)
    again, _ = ox.synthetic_waveforms(1.0, batch=4, seed=1)
    assert torch.equal(wavs, again)
    n = (lens * wavs.shape[1]).round().long()
    for row, keep in enumerate(n.tolist()):
        assert wavs[row, keep:].abs().sum() == 0 and wavs[row, keep - 1] != 0
    assert np.isclose(lens[0].item(), 1.0) and lens[-1] < lens[0]
