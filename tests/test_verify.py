"""Tests of embedding extraction, its cache, evaluate_model and verify.py."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_imlkd import embeddings as emb_mod
from speechbrain_imlkd.data.audio import AudioError
from speechbrain_imlkd.data.trials import read_trials
from speechbrain_imlkd.embeddings import (
    extract_embeddings,
    load_model,
    model_fingerprint,
)
from speechbrain_imlkd.scoring import (
    DET_FILE,
    RESULTS_FILE,
    evaluate_model,
    read_scores,
    verification_metrics,
)

os.environ["HF_HUB_OFFLINE"] = "1"
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RECIPE = REPO / "recipes" / "VoxCeleb1" / "imlkd"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SR = 16000


# --------------------------------------------------------------------------
# Fixtures: a tiny synthetic corpus, a tiny exported model, a toy encoder
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from speechbrain_imlkd.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    meta = generate_corpus(
        root,
        n_train_speakers=3,
        n_test_speakers=3,
        sessions_per_speaker=2,
        utterances_per_session=2,
        min_duration=1.0,
        max_duration=1.5,
        n_trials=16,
        seed=0,
    )
    train = set(meta["speakers"]["train"])
    rows = []
    for wav in sorted((root / "wav").rglob("*.wav")):
        rel = wav.relative_to(root / "wav")
        if rel.parts[0] in train:
            rows.append(f"{rel.with_suffix('')},0.5,{wav},0,8000,{rel.parts[0]}\n")
    (root / "train.csv").write_text("ID,duration,wav,start,stop,spk_id\n" + "".join(rows))
    return root


def _export(folder, seed):
    from speechbrain_imlkd.export import export_model
    from speechbrain_imlkd.models import build_ecapa

    torch.manual_seed(seed)
    return export_model(
        folder, build_ecapa(16, lin_neurons=8), model_hparams=dict(channels=16, lin_neurons=8)
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("model"), seed=0)


class ToyEncoder:
    """Embeds [mean, energy, length] of the unpadded signal; logs each batch."""

    def __init__(self):
        self.batches = []

    def __call__(self, wavs, wav_lens):
        n = (wav_lens * wavs.shape[1]).round().long()
        self.batches.append((wavs.shape[1], n.tolist()))
        mask = torch.arange(wavs.shape[1])[None] < n[:, None]
        x = wavs * mask
        feats = [x.sum(1) / n, (x**2).sum(1) / n, n.float()]
        return torch.stack(feats, 1)[:, None]


def _write_wavs(folder, lengths, seed=0):
    rng = np.random.default_rng(seed)
    paths = {}
    for i, n in enumerate(lengths):
        p = folder / f"u{i}.wav"
        sf.write(p, 0.1 * rng.standard_normal(n), SR)
        paths[f"u{i}"] = p
    return paths


# --------------------------------------------------------------------------
# extract_embeddings
# --------------------------------------------------------------------------
def test_batches_sorted_by_length_full_length(tmp_path):
    lengths = [1600, 8000, 3200, 8100, 1700, 3300, 6000]
    paths = _write_wavs(tmp_path, lengths)
    enc = ToyEncoder()
    emb = extract_embeddings(enc, list(paths), paths, batch_size=2, progress=False)
    # Full length: the encoder saw every sample of every file.
    assert {u: int(v[2]) for u, v in emb.items()} == dict(zip(paths, lengths))
    for u, p in paths.items():
        x = sf.read(p, dtype="float32")[0]
        assert emb[u][1] == pytest.approx(np.mean(x**2), rel=1e-4)
    # Longest first, similar lengths together: padding stays small.
    padded = [w for w, _ in enc.batches]
    assert padded == sorted(padded, reverse=True)
    assert [n for _, n in enc.batches] == [[8100, 8000], [6000, 3300], [3200, 1700], [1600]]


def test_chunk_averaging(tmp_path):
    paths = _write_wavs(tmp_path, [10 * 1600, 1000])
    enc = ToyEncoder()
    emb = extract_embeddings(enc, list(paths), paths, batch_size=3, chunk_seconds=0.25, progress=False)
    x = sf.read(paths["u0"], dtype="float32")[0]
    chunks = emb_mod.chunk_bounds(x.size, 4000)
    assert len(chunks) == 4 and all(b - a == 4000 for a, b in chunks)
    expected = np.mean([np.mean(x[a:b] ** 2) for a, b in chunks])
    assert emb["u0"][1] == pytest.approx(expected, rel=1e-4)
    assert emb["u0"][2] == 4000  # every chunk full length, no short tail
    assert emb["u1"][2] == 1000  # shorter than a chunk: whole file


def test_segments(tmp_path):
    paths = _write_wavs(tmp_path, [8000])
    enc = ToyEncoder()
    out = extract_embeddings(enc, ["s"], {"s": paths["u0"]}, segments={"s": (1000, 3000)}, progress=False)
    x = sf.read(paths["u0"], dtype="float32")[0][1000:3000]
    assert out["s"][1] == pytest.approx(np.mean(x**2), rel=1e-4)
    with pytest.raises(ValueError, match=r"Segment \[1000, 9000\).*8000 samples"):
        extract_embeddings(enc, ["s"], {"s": paths["u0"]}, segments={"s": (1000, 9000)}, progress=False)


def test_cache_hit_and_invalidation(tmp_path, caplog):
    paths = _write_wavs(tmp_path, [1600, 3200, 4800])
    cache = tmp_path / "cache"
    kw = dict(batch_size=2, cache_dir=cache, progress=False)
    enc = ToyEncoder()
    first = extract_embeddings(enc, list(paths), paths, model_key="m1", **kw)
    assert enc.batches and len(list(cache.glob("*.npz"))) == 1

    enc2 = ToyEncoder()
    again = extract_embeddings(enc2, list(paths), paths, model_key="m1", **kw)
    assert enc2.batches == []  # served from disk: the encoder is not called
    for u in paths:
        np.testing.assert_array_equal(first[u], again[u])

    enc3 = ToyEncoder()
    extract_embeddings(enc3, list(paths), paths, model_key="m2", **kw)
    assert enc3.batches  # another model: rebuilt
    assert len(list(cache.glob("*.npz"))) == 2

    sf.write(paths["u1"], np.zeros(3300), SR)  # the audio changed
    enc4 = ToyEncoder()
    changed = extract_embeddings(enc4, list(paths), paths, model_key="m1", **kw)
    assert enc4.batches and changed["u1"][2] == 3300

    for f in cache.glob("*.npz"):  # a corrupt cache is rebuilt, with a warning
        f.write_bytes(b"not a zip")
    enc5 = ToyEncoder()
    with caplog.at_level(logging.WARNING):
        extract_embeddings(enc5, list(paths), paths, model_key="m1", **kw)
    assert enc5.batches and "unreadable embedding cache" in caplog.text


def test_missing_audio_lists_first_files_and_count(tmp_path):
    paths = _write_wavs(tmp_path, [1600])
    wavs = dict(paths, **{f"gone{i}": tmp_path / f"gone{i}.wav" for i in range(7)})
    with pytest.raises(FileNotFoundError) as err:
        extract_embeddings(ToyEncoder(), list(wavs), wavs, progress=False)
    msg = str(err.value)
    assert "7 audio file(s)" in msg
    assert msg.count("gone") == emb_mod.N_SHOWN and "gone0.wav" in msg


def test_extract_bad_arguments(tmp_path):
    paths = _write_wavs(tmp_path, [1600])
    p = paths["u0"]
    with pytest.raises(ValueError, match="needs a model_key"):
        extract_embeddings(ToyEncoder(), ["u0"], [p], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="given twice with different audio"):
        extract_embeddings(ToyEncoder(), ["u0", "u0"], [p, tmp_path / "other.wav"])
    with pytest.raises(ValueError, match="1 utterances but 2 wav paths"):
        extract_embeddings(ToyEncoder(), ["u0"], [p, p])
    with pytest.raises(ValueError, match="batch_size"):
        extract_embeddings(ToyEncoder(), ["u0"], [p], batch_size=0)
    sf.write(tmp_path / "8k.wav", np.zeros(800), 8000)
    with pytest.raises(AudioError, match="8k.wav: sample rate 8000 Hz"):
        extract_embeddings(ToyEncoder(), ["x"], [tmp_path / "8k.wav"], progress=False)
    # Duplicates of the same utterance are embedded once.
    enc = ToyEncoder()
    out = extract_embeddings(enc, ["u0", "u0"], [p, p], progress=False)
    assert list(out) == ["u0"] and enc.batches == [(1600, [1600])]


# --------------------------------------------------------------------------
# load_model / model_fingerprint
# --------------------------------------------------------------------------
def test_load_model_and_fingerprint(tmp_path, model_dir):
    enc = load_model(model_dir, savedir=tmp_path / "save")
    out = enc.encode_batch(torch.zeros(2, SR), torch.ones(2))
    assert out.shape == (2, 1, 8)
    key = model_fingerprint(model_dir)
    assert key == model_fingerprint(model_dir) and len(key) == 64


def test_load_model_errors(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match="Model folder not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty has no hyperparams.yaml"):
        load_model(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "hyperparams.yaml").write_bytes((model_dir / "hyperparams.yaml").read_bytes())
    (broken / "embedding_model.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=f"Could not load model folder {broken}"):
        load_model(broken)


# --------------------------------------------------------------------------
# evaluate_model
# --------------------------------------------------------------------------
def _count_encodes(monkeypatch):
    calls = []
    real = emb_mod._encode

    def counting(encoder, wavs, wav_lens):
        calls.append(wavs.shape[0])
        return real(encoder, wavs, wav_lens)

    monkeypatch.setattr(emb_mod, "_encode", counting)
    return calls


def test_evaluate_model_cache_and_model_change(tmp_path, corpus, monkeypatch):
    model = _export(tmp_path / "model", seed=1)
    trials = corpus / "veri_test2.txt"
    cache = tmp_path / "cache"
    calls = _count_encodes(monkeypatch)
    kw = dict(cache_dir=cache, batch_size=8, progress=False)
    res1 = evaluate_model(model, corpus, trials, tmp_path / "out1", **kw)
    n_utts = len(read_trials(trials).utterances)
    assert sum(calls) == n_utts

    calls.clear()
    res2 = evaluate_model(model, corpus, trials, tmp_path / "out2", **kw)
    assert calls == []  # second scoring: embeddings from the cache
    assert res2["trials"] == res1["trials"]

    _export(model, seed=2)  # same folder, new weights
    calls.clear()
    evaluate_model(model, corpus, trials, tmp_path / "out3", **kw)
    assert sum(calls) == n_utts  # rebuilt
    assert len(list(cache.glob("*.npz"))) == 2
    s1 = read_scores(tmp_path / "out1" / "scores_veri_test2.txt")[1]
    s3 = read_scores(tmp_path / "out3" / "scores_veri_test2.txt")[1]
    assert not np.allclose(s1, s3)


def _trial_file(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_model_bad_inputs(tmp_path, corpus, model_dir):
    good = read_trials(corpus / "veri_test2.txt")
    e, t = good.enrol[0], good.test[0]
    toy = ToyEncoder()
    kw = dict(progress=False)

    missing = _trial_file(
        tmp_path / "missing.txt",
        [f"1 {e} {t}"] + [f"0 {e} id09999/gone/{i:05d}.wav" for i in range(6)],
    )
    with pytest.raises(FileNotFoundError, match=r"6 audio file\(s\).*\n.*id09999/gone/00000.wav"):
        evaluate_model(toy, corpus, missing, tmp_path / "o", **kw)

    malformed = _trial_file(tmp_path / "malformed.txt", [f"1 {e} {t}", f"1 {e}"])
    with pytest.raises(ValueError, match="malformed.txt, line 2"):
        evaluate_model(toy, corpus, malformed, tmp_path / "o", **kw)

    only_target = _trial_file(tmp_path / "only_target.txt", [f"1 {e} {t}"])
    with pytest.raises(ValueError, match="1 target and 0 non-target"):
        evaluate_model(toy, corpus, only_target, tmp_path / "o", **kw)
    only_non = _trial_file(tmp_path / "only_non.txt", [f"0 {e} {t}"])
    with pytest.raises(ValueError, match="0 target and 1 non-target"):
        evaluate_model(toy, corpus, only_non, tmp_path / "o", **kw)

    trials = corpus / "veri_test2.txt"
    cohort = corpus / "train.csv"
    with pytest.raises(ValueError, match="cohort_size=3 is smaller than top_k=5"):
        evaluate_model(toy, corpus, trials, tmp_path / "o", norm="asnorm", cohort_csv=cohort, cohort_size=3, top_k=5, **kw)
    n_rows = len(cohort.read_text().splitlines()) - 1
    with pytest.raises(ValueError, match=f"has {n_rows} rows, fewer than top_k=50"):
        evaluate_model(toy, corpus, trials, tmp_path / "o", norm="asnorm", cohort_csv=cohort, cohort_size=None, top_k=50, **kw)
    with pytest.raises(ValueError, match="needs cohort_csv"):
        evaluate_model(toy, corpus, trials, tmp_path / "o", norm="snorm", **kw)
    assert toy.batches == []  # every check fired before any extraction

    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "hyperparams.yaml").write_text("embedding_model: !new:not.a.Module\n")
    with pytest.raises(RuntimeError, match="Could not load model folder .*broken_model"):
        evaluate_model(broken, corpus, trials, tmp_path / "o", **kw)


def test_real_trial_list_without_audio_reports_all_missing(tmp_path):
    trials = SHARED / "voxceleb1" / "veri_test2.txt"
    if not trials.is_file():
        pytest.skip(f"real VoxCeleb1 trial list not found at {trials}")
    (tmp_path / "wav").mkdir()
    n_utts = len(read_trials(trials).utterances)
    with pytest.raises(FileNotFoundError, match=f"{n_utts} audio file"):
        evaluate_model(ToyEncoder(), tmp_path, trials, tmp_path / "o", progress=False)


def test_real_voxceleb_clips(tmp_path, model_dir):
    vox = SHARED / "voxceleb1"
    clips = sorted(str(p.relative_to(vox / "wav")) for p in (vox / "wav").rglob("*.wav")) if vox.is_dir() else []
    if len(clips) < 4:
        pytest.skip(f"real VoxCeleb1 clips not found under {vox / 'wav'}")
    lines = [
        f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
        for i, a in enumerate(clips)
        for b in clips[i + 1 :]
    ]
    trials = _trial_file(tmp_path / "real.txt", lines)
    res = evaluate_model(model_dir, vox, {"real": trials}, tmp_path / "out", batch_size=6, progress=False)
    r = res["trials"]["real"]
    assert r["n_trials"] == len(lines) and 0 < r["n_target"] < len(lines)
    assert 0.0 <= r["eer"] <= 1.0


# --------------------------------------------------------------------------
# verify.py end to end
# --------------------------------------------------------------------------
def test_verify_recipe_end_to_end(tmp_path, corpus, model_dir):
    out = tmp_path / "verify"
    trials = corpus / "veri_test2.txt"
    cmd = [
        sys.executable,
        str(RECIPE / "verify.py"),
        str(RECIPE / "hparams" / "verify.yaml"),
        f"--model_dir={model_dir}",
        f"--data_folder={corpus}",
        f"--trials={trials}",
        f"--trials_h={trials}",
        f"--output_folder={out}",
        "--norm=asnorm",
        f"--cohort_csv={corpus / 'train.csv'}",
        "--cohort_size=10",
        "--top_k=4",
        "--mean_subtraction=True",
        "--batch_size=8",
        "--device=cpu",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((out / RESULTS_FILE).read_text())
    assert results["model_dir"] == str(model_dir)
    assert (results["norm"], results["top_k"], results["cohort_size"]) == ("asnorm", 4, 10)
    assert results["mean_subtraction"] is True
    assert set(results["trials"]) == {"VoxCeleb1-O", "VoxCeleb1-H"}

    ref = read_trials(trials)
    for name, r in results["trials"].items():
        assert (r["n_trials"], r["n_target"], r["n_nontarget"]) == (ref.n_trials, ref.n_target, ref.n_nontarget)
        lines = (out / r["scores_file"]).read_text().splitlines()
        assert len(lines) == ref.n_trials
        fields = [ln.split() for ln in lines]
        assert [f[1] for f in fields] == ref.enrol and [f[2] for f in fields] == ref.test
        assert [int(f[0]) for f in fields] == ref.labels.tolist()
        labels, scores = read_scores(out / r["scores_file"])
        again = verification_metrics(scores, labels)
        for key in ("eer", "min_dcf_0.01", "min_dcf_0.05"):
            assert 0.0 <= r[key] <= 1.0 + 1e-9
            assert again[key] == pytest.approx(r[key], abs=1e-9)
    same = [out / r["scores_file"] for r in results["trials"].values()]
    assert same[0].read_text() == same[1].read_text()

    png = out / DET_FILE
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    # One cache file for the trial utterances (shared by O and H), one for the cohort.
    assert len(list((out / "embedding_cache").glob("*.npz"))) == 2
