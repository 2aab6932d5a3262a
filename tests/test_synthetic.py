"""Tests of the synthetic speaker corpus (speechbrain_imlkd.data.synthetic)."""

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechbrain_imlkd.data import synthetic
from speechbrain_imlkd.data.synthetic import (
    Channel,
    SpeakerVoice,
    apply_channel,
    baseline_eer,
    generate_corpus,
    lda_eer,
    main,
    mean_fbank_vectors,
    synthesize_utterance,
)

TINY = dict(
    n_train_speakers=3,
    n_test_speakers=3,
    sessions_per_speaker=2,
    utterances_per_session=2,
    min_duration=0.4,
    max_duration=0.9,
    n_trials=13,
    seed=3,
)


def _tree_digest(root):
    """Relative path -> sha256 of every file under ``root``."""
    root = Path(root)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_trials(root):
    lines = (Path(root) / "veri_test2.txt").read_text().splitlines()
    return [(int(a), b, c) for a, b, c in (line.split() for line in lines)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    meta = generate_corpus(root, **TINY)
    return root, meta


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Big enough for the difficulty figures, small enough to stay fast."""
    root = tmp_path_factory.mktemp("small")
    meta = generate_corpus(
        root,
        n_train_speakers=16,
        n_test_speakers=6,
        sessions_per_speaker=3,
        utterances_per_session=2,
        min_duration=1.5,
        max_duration=2.5,
        n_trials=120,
        seed=0,
    )
    return root, meta


# --- layout, format, metadata -------------------------------------------------


def test_layout_and_naming(tiny):
    root, meta = tiny
    wavs = sorted(str(p.relative_to(root / "wav")) for p in (root / "wav").rglob("*") if p.is_file())
    assert wavs == sorted(u["path"] for u in meta["utterances"])
    assert len(wavs) == 6 * 2 * 2 == meta["counts"]["n_utterances"]
    pattern = re.compile(r"(id\d{5})/([A-Za-z0-9_-]{11})/(\d{5})\.wav")
    per_speaker = {}
    for path in wavs:
        match = pattern.fullmatch(path)
        assert match, path
        per_speaker.setdefault(match.group(1), []).append((match.group(2), int(match.group(3))))
    assert sorted(per_speaker) == [f"id{i:05d}" for i in range(1, 7)]
    for clips in per_speaker.values():
        assert sorted(n for _, n in clips) == [1, 2, 3, 4]
        assert len({v for v, _ in clips}) == 2
    videos = [v for clips in per_speaker.values() for v, _ in clips]
    assert len(set(videos)) == 6 * 2  # unique across the corpus
    assert sorted(p.name for p in root.iterdir()) == ["meta.json", "veri_test2.txt", "wav"]
    on_disk = json.loads((root / "meta.json").read_text())
    assert on_disk == meta and meta["complete"] is True
    assert meta["version"] == synthetic.CORPUS_VERSION and meta["seed"] == 3
    assert set(meta["voices"]) == set(per_speaker)
    assert set(meta["voices"]["id00001"]) == {f.name for f in synthetic.dataclasses.fields(SpeakerVoice)}


def test_audio_format_and_durations(tiny):
    root, meta = tiny
    for utt in meta["utterances"]:
        info = sf.info(str(root / "wav" / utt["path"]))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        seconds = info.frames / info.samplerate
        assert seconds == pytest.approx(utt["duration"], abs=1e-9)
        assert TINY["min_duration"] - 1e-4 <= seconds <= TINY["max_duration"] + 1e-4
        wave, _ = sf.read(str(root / "wav" / utt["path"]))
        assert np.sqrt(np.mean(wave**2)) > 1e-3  # not silent
    durations = [u["duration"] for u in meta["utterances"]]
    assert len(set(durations)) > len(durations) // 2  # drawn, not constant
    assert meta["counts"]["total_duration_s"] == pytest.approx(sum(durations), abs=1e-3)


def test_splits_are_disjoint_and_test_speakers_last(tiny):
    _, meta = tiny
    train, test = meta["speakers"]["train"], meta["speakers"]["test"]
    assert train == ["id00001", "id00002", "id00003"]
    assert test == ["id00004", "id00005", "id00006"]
    assert not set(train) & set(test)
    for utt in meta["utterances"]:
        assert utt["split"] == ("train" if utt["speaker"] in train else "test")
        assert utt["path"].startswith(utt["speaker"] + "/" + utt["video"] + "/")


def test_trials_balanced_cross_session_held_out(tiny):
    root, meta = tiny
    trials = _read_trials(root)
    assert len(trials) == TINY["n_trials"] == meta["trials"]["n_trials"]
    n_target = sum(t[0] for t in trials)
    assert n_target == TINY["n_trials"] // 2 == meta["trials"]["n_target"]
    assert len(trials) - n_target == meta["trials"]["n_nontarget"]
    test_speakers = set(meta["speakers"]["test"])
    pairs = set()
    for label, enrol, test in trials:
        spk_e, vid_e, _ = enrol.split("/")
        spk_t, vid_t, _ = test.split("/")
        assert {spk_e, spk_t} <= test_speakers
        assert (root / "wav" / enrol).is_file() and (root / "wav" / test).is_file()
        assert label == int(spk_e == spk_t)
        if label:
            assert vid_e != vid_t  # cross-session
        pairs.add(frozenset((enrol, test)))
    assert len(pairs) == len(trials)  # no repeated pair, no self-trial
    assert all(len(p) == 2 for p in pairs)
    assert (root / "veri_test2.txt").read_text().endswith("\n")


def test_trials_parse_with_project_reader(tiny):
    trials_module = pytest.importorskip("speechbrain_imlkd.data.trials")
    root, meta = tiny
    parsed = trials_module.read_trials(root / "veri_test2.txt")
    assert parsed.n_trials == meta["trials"]["n_trials"]
    assert parsed.n_target == meta["trials"]["n_target"]


# --- determinism and re-runs --------------------------------------------------


def test_same_seed_same_bytes_any_workers(tiny, tmp_path):
    root, _ = tiny
    generate_corpus(tmp_path / "again", **TINY)
    generate_corpus(tmp_path / "parallel", num_workers=2, **TINY)
    reference = _tree_digest(root)
    assert _tree_digest(tmp_path / "again") == reference
    assert _tree_digest(tmp_path / "parallel") == reference


def test_different_seed_differs(tiny, tmp_path):
    root, meta = tiny
    other = generate_corpus(tmp_path / "other", **{**TINY, "seed": 4})
    assert other["voices"] != meta["voices"]
    assert {u["video"] for u in other["utterances"]}.isdisjoint({u["video"] for u in meta["utterances"]})
    a = sf.read(str(root / "wav" / meta["utterances"][0]["path"]))[0]
    b = sf.read(str(tmp_path / "other" / "wav" / other["utterances"][0]["path"]))[0]
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_rerun_with_same_options_is_skipped(tmp_path, caplog):
    root = tmp_path / "c"
    meta = generate_corpus(root, **TINY)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="speechbrain_imlkd.data.synthetic"):
        again = generate_corpus(root, num_workers=2, **TINY)  # workers do not matter
    assert again == meta
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    assert "skipping" in caplog.text


def test_rerun_with_other_options_regenerates_and_keeps_foreign_files(tmp_path, caplog):
    root = tmp_path / "c"
    old = generate_corpus(root, **TINY)
    (root / "notes.txt").write_text("mine")
    (root / "wav" / "README").write_text("mine too")
    with caplog.at_level(logging.INFO, logger="speechbrain_imlkd.data.synthetic"):
        new = generate_corpus(root, **{**TINY, "seed": 9, "n_train_speakers": 2})
    assert "regenerating" in caplog.text
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "wav" / "README").read_text() == "mine too"
    old_videos = {u["video"] for u in old["utterances"]}
    on_disk = {p.parent.name for p in (root / "wav").rglob("*.wav")}
    assert on_disk == {u["video"] for u in new["utterances"]} and not on_disk & old_videos
    assert not (root / "wav" / "id00006").exists()  # emptied folders of the old run are gone
    assert new["counts"]["n_speakers"] == 5


def test_interrupted_run_is_cleaned_up(tmp_path):
    root = tmp_path / "c"
    meta = generate_corpus(root, **TINY)
    victim = root / "wav" / meta["utterances"][0]["path"]
    victim.unlink()
    meta["complete"] = False
    (root / "meta.json").write_text(json.dumps(meta))
    again = generate_corpus(root, **TINY)
    assert again["complete"] is True and victim.is_file()


def test_missing_file_triggers_regeneration(tmp_path):
    root = tmp_path / "c"
    meta = generate_corpus(root, **TINY)
    victim = root / "wav" / meta["utterances"][-1]["path"]
    victim.unlink()
    generate_corpus(root, **TINY)
    assert victim.is_file()


def test_refuses_foreign_or_corrupt_folders(tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "wav" / "id10001").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="no meta.json"):
        generate_corpus(foreign, **TINY)
    trials_only = tmp_path / "trials_only"
    trials_only.mkdir()
    (trials_only / "veri_test2.txt").write_text("1 a b\n")
    with pytest.raises(FileExistsError, match=str(trials_only)):
        generate_corpus(trials_only, **TINY)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json: not valid JSON"):
        generate_corpus(corrupt, **TINY)
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"generator": "someone else"}))
    with pytest.raises(ValueError, match="not a meta.json written by"):
        generate_corpus(other, **TINY)


def test_tampered_meta_never_deletes_outside_wav(tmp_path):
    root = tmp_path / "c"
    meta = generate_corpus(root, **TINY)
    keep = tmp_path / "precious.wav"
    keep.write_text("x")
    meta["utterances"][0]["path"] = "../../precious.wav"
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta.json: unexpected clip path '\.\./\.\./precious\.wav'"):
        generate_corpus(root, **{**TINY, "seed": 5})
    assert keep.read_text() == "x"


# --- difficulty -----------------------------------------------------------------


def test_untrained_baseline_is_poor_but_identity_is_learnable(small):
    """The corpus is a real task: mean-fbank cosine fails, a learnt projection
    from the TRAINING speakers generalises to the held-out ones."""
    root, _ = small
    baseline = baseline_eer(root)
    raw = baseline_eer(root, centre=False, level_normalise=False)
    learnt = lda_eer(root)
    assert baseline >= 0.15 and raw >= 0.15
    assert learnt < baseline - 0.05


def test_channel_is_a_real_nuisance(small):
    """Clips of one video share a channel: their mean-fbank vectors are much
    closer than clips of the same speaker in different videos."""
    root, meta = small
    utts = [u for u in meta["utterances"] if u["split"] == "test"]
    x = mean_fbank_vectors([root / "wav" / u["path"] for u in utts])
    x = x - x.mean(1, keepdims=True)
    x = x - x.mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    spk = np.array([u["speaker"] for u in utts])
    vid = np.array([u["video"] for u in utts])
    off_diag = ~np.eye(len(utts), dtype=bool)
    same_session = np.equal.outer(vid, vid) & off_diag
    cross_session = np.equal.outer(spk, spk) & ~np.equal.outer(vid, vid)
    other_speaker = ~np.equal.outer(spk, spk)
    assert sim[same_session].mean() > sim[cross_session].mean() + 0.3
    assert sim[cross_session].mean() > sim[other_speaker].mean()


def test_speakers_differ_more_than_sessions_in_clean_speech():
    """Without the channel, utterances of one voice are closer to each other
    (mean log-spectrum) than to other voices: the speaker cue is real."""
    import torch
    from speechbrain.lobes.features import Fbank

    fbank = Fbank(n_mels=40)
    voices = [SpeakerVoice.sample(np.random.default_rng(k), f"id{k:05d}") for k in range(4)]
    vectors, labels = [], []
    for k, voice in enumerate(voices):
        for u in range(3):
            wave = synthesize_utterance(voice, 2.0, np.random.default_rng(100 * k + u))
            with torch.no_grad():
                feats = fbank(torch.from_numpy(wave).float()[None])[0].numpy()
            # Loudest half of the frames: clean pauses are digital silence,
            # whose log floor would swamp the mean.
            energy = feats.mean(1)
            vec = feats[energy >= np.median(energy)].mean(0)
            vectors.append(vec - vec.mean())
            labels.append(k)
    x = np.stack(vectors)
    x = x - x.mean(0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    labels = np.array(labels)
    same = np.equal.outer(labels, labels) & np.isfinite(sim)
    diff = ~np.equal.outer(labels, labels)
    assert sim[same].mean() > sim[diff].mean() + 0.3
    assert np.mean(labels[sim.argmax(1)] == labels) >= 0.75  # nearest neighbour; chance 2/11


# --- lower-level synthesis -------------------------------------------------------


def _autocorr_f0(wave, sample_rate):
    """Median f0 (Hz) of voiced 40 ms frames, by autocorrelation."""
    frame = int(0.04 * sample_rate)
    lo, hi = sample_rate // 400, sample_rate // 60
    estimates = []
    for start in range(0, len(wave) - frame, frame):
        x = wave[start:start + frame] - wave[start:start + frame].mean()
        ac = np.correlate(x, x, "full")[frame - 1:]
        if ac[0] <= 0:
            continue
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] / ac[0] > 0.6:
            estimates.append(sample_rate / lag)
    return float(np.median(estimates))


@pytest.mark.parametrize("f0", [100.0, 220.0])
def test_utterance_has_the_voice_pitch(f0):
    voice = SpeakerVoice.sample(np.random.default_rng(0), "id00001")
    voice = synthetic.dataclasses.replace(voice, f0_mean=f0, f0_range=0.5)
    wave = synthesize_utterance(voice, 2.0, np.random.default_rng(1))
    assert _autocorr_f0(wave, 16000) == pytest.approx(f0, rel=0.12)


def test_synthesis_is_deterministic_and_text_varies():
    voice = SpeakerVoice.sample(np.random.default_rng(0), "id00001")
    a = synthesize_utterance(voice, 0.7, np.random.default_rng(5))
    b = synthesize_utterance(voice, 0.7, np.random.default_rng(5))
    c = synthesize_utterance(voice, 0.7, np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert len(synthesize_utterance(voice, 1 / 16000, np.random.default_rng(0))) == 1


def test_voice_priors_are_realistic():
    voices = [SpeakerVoice.sample(np.random.default_rng(k), "id00001") for k in range(200)]
    male = [v for v in voices if v.sex == "m"]
    female = [v for v in voices if v.sex == "f"]
    assert 60 < len(male) < 140
    assert 95 < np.median([v.f0_mean for v in male]) < 135
    assert 180 < np.median([v.f0_mean for v in female]) < 230
    assert np.median([v.vtl_factor for v in female]) > np.median([v.vtl_factor for v in male]) * 1.1


def test_channel_noise_at_requested_snr():
    rng = np.random.default_rng(0)
    channel = Channel(16000, [100.0, 7000.0], [0.0, 0.0], 1.0, None, "white", 10.0)
    silent = np.zeros(16000)
    speech = synthesize_utterance(SpeakerVoice.sample(rng, "id00001"), 1.0, rng)
    noisy = apply_channel(speech, channel, np.random.default_rng(3))
    noise_only = apply_channel(speech, synthetic.dataclasses.replace(channel, snr_db=200.0),
                               np.random.default_rng(3))
    # Both outputs are level-normalised: compare shapes via correlation.
    rho = np.corrcoef(noisy, noise_only)[0, 1]
    snr_measured = 10 * np.log10(rho**2 / (1 - rho**2))
    assert snr_measured == pytest.approx(10.0, abs=1.5)
    assert np.abs(apply_channel(silent, channel, rng)).max() > 0  # noise even on silence


def test_channel_response_and_rir():
    rng = np.random.default_rng(0)
    ch = Channel.sample(rng, 16000, reverb_prob=1.0)
    freqs = np.array(ch.eq_freqs[2:5])
    mag_db = 20 * np.log10(ch.frequency_response(freqs))
    expected = np.array(ch.eq_gains_db[2:5])
    assert np.allclose(mag_db, expected, atol=1.5)  # band limits are far away
    h = ch.impulse_response()
    tail = h[int(0.002 * 16000) + 1:]
    quarter = len(tail) // 4
    assert np.sum(tail[:quarter] ** 2) > 10 * np.sum(tail[-quarter:] ** 2)
    dry = Channel.sample(np.random.default_rng(0), 16000, reverb_prob=0.0)
    assert dry.impulse_response() is None


def test_cli_writes_corpus_and_reports(tmp_path, capsys):
    root = tmp_path / "cli"
    args = ["--root", str(root), "--n_train_speakers", "2", "--n_test_speakers", "2",
            "--sessions_per_speaker", "2", "--utterances_per_session", "2",
            "--min_duration", "0.5", "--max_duration", "0.5", "--n_trials", "6", "--seed", "1", "--report"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "16 utterances" in out and "6 trials" in out
    assert re.search(r"baseline EER .*: \d+\.\d\d%", out) and re.search(r"LDA EER .*: \d+\.\d\d%", out)
    assert json.loads((root / "meta.json").read_text())["options"]["seed"] == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["--root", str(tmp_path / "bad"), "--n_test_speakers", "1"])
    assert exit_info.value.code == 2
    assert "n_test_speakers must be >= 2, got 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path / "bad"), "--seed", "abc"])
    assert "invalid int value: 'abc'" in capsys.readouterr().err


# --- bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, name",
    [
        ({"n_train_speakers": 0}, "n_train_speakers"),
        ({"n_train_speakers": 2.5}, "n_train_speakers"),
        ({"n_test_speakers": 1}, "n_test_speakers"),
        ({"n_test_speakers": True}, "n_test_speakers"),
        ({"sessions_per_speaker": 1}, "sessions_per_speaker"),
        ({"utterances_per_session": 0}, "utterances_per_session"),
        ({"min_duration": 0.0}, "min_duration"),
        ({"min_duration": -1.0}, "min_duration"),
        ({"max_duration": float("nan")}, "max_duration"),
        ({"min_duration": 2.0, "max_duration": 1.0}, "min_duration"),
        ({"min_duration": 1e-6, "max_duration": 1e-6}, "min_duration"),
        ({"n_trials": 1}, "n_trials"),
        ({"n_trials": 1000}, "n_trials"),
        ({"sample_rate": 4000}, "sample_rate"),
        ({"sample_rate": 16000.0}, "sample_rate"),
        ({"seed": -1}, "seed"),
        ({"reverb_prob": 1.5}, "reverb_prob"),
        ({"snr_range": (30.0, 10.0)}, "snr_range"),
        ({"snr_range": "loud"}, "snr_range"),
        ({"snr_range": (float("inf"), 10.0)}, "snr_range"),
        ({"num_workers": 0}, "num_workers"),
    ],
)
def test_bad_options_raise_naming_the_argument(tmp_path, override, name):
    with pytest.raises(ValueError, match=name):
        generate_corpus(tmp_path / "x", **{**TINY, **override})
    assert not (tmp_path / "x").exists()  # nothing written


def test_bad_synthesis_input():
    voice = SpeakerVoice.sample(np.random.default_rng(0), "id00001")
    rng = np.random.default_rng(0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="duration"):
            synthesize_utterance(voice, bad, rng)
    with pytest.raises(ValueError, match="sample_rate"):
        synthesize_utterance(voice, 1.0, rng, sample_rate=100)
    channel = Channel.sample(rng, 16000)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        apply_channel(np.zeros(0), channel, rng)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        apply_channel(np.zeros((2, 100)), channel, rng)
    with pytest.raises(ValueError, match="NaN"):
        apply_channel(np.array([0.0, np.nan]), channel, rng)
    with pytest.raises(ValueError, match="unknown noise type 'pinkish'"):
        apply_channel(np.ones(100), synthetic.dataclasses.replace(channel, noise_type="pinkish"), rng)


def test_bad_corpus_for_figures(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        baseline_eer(tmp_path)
    root, meta = tiny
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        baseline_eer(broken)
    (broken / "meta.json").write_text(json.dumps(meta))
    (broken / "veri_test2.txt").write_text("1 id00001/v/00001.wav id00002/v/00001.wav\n2 a b\n")
    with pytest.raises(ValueError, match=r"veri_test2.txt, line 2\b"):
        baseline_eer(broken)
    (broken / "veri_test2.txt").write_text("\n")
    with pytest.raises(ValueError, match="no trials"):
        baseline_eer(broken)
    one = {**meta, "utterances": [u for u in meta["utterances"] if u["speaker"] != "id00002"
                                  and u["speaker"] != "id00003"]}
    (broken / "meta.json").write_text(json.dumps(one))
    with pytest.raises(ValueError, match="lda_eer needs >= 2 training speakers"):
        lda_eer(broken)


def test_mean_fbank_rejects_bad_audio(tmp_path):
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((800, 2)), 16000)
    with pytest.raises(ValueError, match="stereo.wav: expected non-empty mono"):
        mean_fbank_vectors([stereo])
    rate = tmp_path / "rate.wav"
    sf.write(rate, np.zeros(800), 8000)
    with pytest.raises(ValueError, match="rate.wav: sample rate 8000 Hz, expected 16000"):
        mean_fbank_vectors([rate])


@pytest.mark.parametrize("sample_rate", [8000, 22050])
def test_other_sample_rates(sample_rate):
    rng = np.random.default_rng(0)
    voice = SpeakerVoice.sample(rng, "id00001")
    wave = synthesize_utterance(voice, 0.6, rng, sample_rate)
    assert len(wave) == round(0.6 * sample_rate)
    out = apply_channel(wave, Channel.sample(rng, sample_rate, reverb_prob=1.0), rng)
    assert np.all(np.isfinite(out)) and 0 < np.abs(out).max() < 1


def test_extreme_hand_made_voice_stays_finite():
    voice = synthetic.dataclasses.replace(
        SpeakerVoice.sample(np.random.default_rng(0), "id00001"), jitter=0.9, shimmer=3.0, f0_mean=390.0
    )
    wave = synthesize_utterance(voice, 0.8, np.random.default_rng(1))
    assert np.all(np.isfinite(wave)) and np.sqrt(np.mean(wave**2)) == pytest.approx(0.05)
