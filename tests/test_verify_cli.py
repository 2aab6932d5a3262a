"""Tests for ``imlkd-verify`` (speechbrain_imlkd.verify_cli).

The model is the tiny C=16 export of ``tests/_onnx_models.py``, used both as
a hub-layout folder (torch) and as its ``.onnx`` graph (ONNX Runtime). The
audio is a handful of short synthetic files written here.
"""

import shutil

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
import torchaudio

from speechbrain_imlkd.onnx_export import OnnxEmbedder
from speechbrain_imlkd.scoring import compute_eer, read_scores
from speechbrain_imlkd.verify_cli import (
    EXIT_FAILED_FILES,
    EXIT_USAGE,
    BatchFailure,
    index_path,
    main,
    parse_pair_list,
    verify,
)
from _onnx_models import LIN_NEURONS, feature_input_graph, tiny_exports

SR = 16000
N_SPEAKERS = 3
CLIPS_PER_SPEAKER = 2


def _voice(seconds, f0, seed):
    """A harmonic tone with a per-speaker pitch, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6))
    return (0.1 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def exported():
    return tiny_exports()


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """``wav/spkN/clipM.wav`` (1.0-1.5 s), and each clip's waveform."""
    root = tmp_path_factory.mktemp("audio")
    waves = {}
    for spk in range(N_SPEAKERS):
        for clip in range(CLIPS_PER_SPEAKER):
            path = root / "wav" / f"spk{spk}" / f"clip{clip}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            wave = _voice(1.0 + 0.25 * clip, 110.0 + 60.0 * spk, seed=10 * spk + clip)
            sf.write(path, wave, SR)
            waves[str(path)] = wave
    return root, waves


def _trials(root, lines):
    path = root / "trials.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _all_trials():
    """Every cross-clip pair: targets within a speaker, non-targets across."""
    clips = [f"spk{s}/clip{c}.wav" for s in range(N_SPEAKERS) for c in range(CLIPS_PER_SPEAKER)]
    lines = []
    for i, a in enumerate(clips):
        for b in clips[i + 1 :]:
            lines.append(f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}")
    return lines


def test_pairs_torch_and_onnx_agree(exported, audio, capsys):
    root, _ = audio
    a, b, c = (str(root / "wav" / p) for p in ("spk0/clip0.wav", "spk0/clip1.wav", "spk1/clip0.wav"))
    scores = {}
    for model in (exported.folder, exported.onnx):
        assert main([str(model), "--pair", a, b, "--pair", a, c]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].endswith(f" {a} {b}") and lines[1].endswith(f" {a} {c}")
        scores[model] = [float(line.split()[0]) for line in lines[:2]]
    assert np.allclose(scores[exported.folder], scores[exported.onnx], atol=1e-4)
    assert all(-1.0 <= s <= 1.0 for s in scores[exported.onnx])


def test_folders_and_embeddings_file(exported, audio, tmp_path):
    root, waves = audio
    out = tmp_path / "emb.npy"
    single = root / "wav" / "spk0" / "clip0.wav"
    assert main([str(exported.onnx), str(root / "wav"), str(single), "--embeddings", str(out),
                 "--batch-size", "1"]) == 0
    matrix = np.load(out)
    index = index_path(out).read_text().splitlines()
    assert index[0] == "row\tpath"
    paths = [line.split("\t")[1] for line in index[1:]]
    assert sorted(paths) == sorted(waves) and len(set(paths)) == len(paths)  # no duplicate
    assert matrix.shape == (len(waves), LIN_NEURONS) and matrix.dtype == np.float32
    embedder = OnnxEmbedder(exported.onnx)
    for row, path in enumerate(paths):
        decoded = sf.read(path, dtype="float32")[0]  # 16-bit PCM, not waves[path]
        alone = embedder.encode_batch(torch.from_numpy(decoded))[0, 0].numpy()
        assert np.allclose(matrix[row], alone, atol=1e-5)


def test_trial_list_eer_matches_compute_eer(exported, audio, tmp_path, capsys):
    root, _ = audio
    trials = _trials(root, _all_trials())
    scores_file = tmp_path / "scores.txt"
    code = main([str(exported.onnx), "--trials", str(trials), "--wav-root", str(root / "wav"),
                 "--scores", str(scores_file), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    labels, scores = read_scores(scores_file)
    assert len(scores) == len(_all_trials())
    eer, _ = compute_eer(scores[labels == 1], scores[labels == 0])
    assert f"EER {100 * eer:.2f}%" in printed and "minDCF(p_target=0.01)" in printed
    result = verify(exported.onnx, trials=trials, wav_root=root / "wav")
    assert result.metrics["eer"] == eer
    assert np.allclose(result.scores, scores, atol=1e-6)


def test_unlabelled_pair_list_relative_to_its_folder(exported, audio):
    root, _ = audio
    path = root / "pairs.txt"
    path.write_text("wav/spk0/clip0.wav wav/spk2/clip1.wav\n\n")
    result = verify(exported.onnx, trials=path)
    assert len(result.scores) == 1 and result.metrics is None


@pytest.fixture()
def bad_files(tmp_path, audio):
    """One file of each kind of bad input, and a good one."""
    root, waves = audio
    good = tmp_path / "good.wav"
    shutil.copy(next(iter(waves)), good)
    bad = {
        "missing": tmp_path / "missing.wav",
        "not_audio": tmp_path / "notes.wav",
        "empty": tmp_path / "empty.wav",
        "rate": tmp_path / "rate8k.wav",
        "stereo": tmp_path / "stereo.wav",
        "short": tmp_path / "short.wav",
    }
    bad["not_audio"].write_text("this is not audio\n")
    bad["empty"].write_bytes(b"")
    wave = waves[next(iter(waves))]
    sf.write(bad["rate"], wave[::2], SR // 2)
    sf.write(bad["stereo"], np.stack([wave, wave], 1), SR)
    sf.write(bad["short"], wave[:600], SR)
    return good, bad


def test_every_bad_file_reported_and_nothing_written(exported, bad_files, tmp_path, capsys):
    good, bad = bad_files
    out = tmp_path / "out" / "emb.npy"
    code = main([str(exported.onnx), str(good), *map(str, bad.values()), "--embeddings", str(out)])
    assert code == EXIT_FAILED_FILES
    err = capsys.readouterr().err
    assert f"{len(bad)} of {len(bad) + 1} file(s) failed" in err
    expected = {
        "missing": "file or folder not found",
        "not_audio": "unreadable or corrupt audio",
        "empty": "empty file (0 bytes)",
        "rate": "sample rate 8000 Hz, the model expects 16000 Hz (pass --resample",
        "stereo": "2 channels, expected mono (pass --downmix",
        "short": "too short: 600 samples",
    }
    for kind, path in bad.items():
        assert f"{path}: {expected[kind]}" in err, kind
    assert not out.exists() and not index_path(out).exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_resample_and_downmix_options(exported, bad_files, audio):
    good, bad = bad_files
    root, waves = audio
    result = verify(exported.onnx, inputs=[good, bad["stereo"]], downmix=True, batch_size=1)
    # Identical channels: the down-mix is the mono signal.
    assert np.allclose(result.embeddings[0], result.embeddings[1], atol=1e-5)
    up = root / "up32k.wav"
    original = torch.from_numpy(sf.read(good, dtype="float32")[0])
    sf.write(up, torchaudio.functional.resample(original, SR, 2 * SR).numpy(), 2 * SR)
    with pytest.raises(BatchFailure, match="sample rate 32000 Hz"):
        verify(exported.onnx, inputs=[up])
    result = verify(exported.onnx, inputs=[good, up], resample=True, batch_size=1)
    a, b = result.embeddings
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def test_trial_line_naming_missing_file(exported, audio, tmp_path, capsys):
    root, _ = audio
    trials = _trials(tmp_path, ["1 spk0/clip0.wav spk0/clip1.wav", "0 spk0/clip0.wav spk9/gone.wav"])
    scores = tmp_path / "scores.txt"
    code = main([str(exported.onnx), "--trials", str(trials), "--wav-root", str(root / "wav"),
                 "--scores", str(scores)])
    assert code == EXIT_FAILED_FILES
    err = capsys.readouterr().err
    assert f"{trials}, line 2: {root / 'wav' / 'spk9' / 'gone.wav'}: file not found" in err
    assert not scores.exists()


def test_malformed_trial_lists(tmp_path):
    for text, message in (
        ("a.wav\n", "line 1: expected '<1|0> <enrol> <test>'"),
        ("1 a.wav b.wav c.wav\n", "got 4 field"),
        ("1 a.wav b.wav\na.wav b.wav\n", "line 2: 2 fields, but line 1 has 3"),
        ("x a.wav b.wav\n", "line 1: label must be 0 or 1"),
        ("\n\n", "contains no trials"),
    ):
        path = tmp_path / "t.txt"
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            parse_pair_list(path)


def test_onnx_whose_input_is_not_a_waveform(tmp_path, audio, capsys):
    root, waves = audio
    path = tmp_path / "features.onnx"
    onnx.save(feature_input_graph(), str(path))
    assert main([str(path), next(iter(waves))]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{path}: input 'feats'" in err and "not a waveform batch" in err


def test_usage_errors(exported, capsys, tmp_path):
    assert main([str(exported.onnx)]) == EXIT_USAGE
    assert "nothing to do" in capsys.readouterr().err
    assert main([str(tmp_path / "nope")]) == EXIT_USAGE
    assert "Model not found" in capsys.readouterr().err
    assert main([str(exported.onnx), "x.wav", "--embeddings", "out.bin"]) == EXIT_USAGE
    assert "must end in .npy" in capsys.readouterr().err
