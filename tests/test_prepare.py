"""Tests for checked audio reading and VoxCeleb1 preparation."""

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import speechbrain_imlkd.data.voxceleb as vox
from speechbrain_imlkd.data.audio import (
    AudioError,
    audio_info,
    read_wav_checked,
)
from speechbrain_imlkd.data.voxceleb import (
    OPTIONS_FILE,
    prepare_voxceleb1,
    read_durations,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voxceleb1"
SR = 16000


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _write_wav(path, n_samples, sr=SR, channels=1, seed=0, silent=False):
    """Writes a tone plus noise (or silence) as 16-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sr
    x = 0.2 * np.sin(2 * np.pi * (150 + 20 * seed) * t) + 0.05 * rng.standard_normal(n_samples)
    if silent:
        x = np.zeros(n_samples)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(path, x, sr, subtype="PCM_16")
    return path


# Speaker -> {relative path: length in samples}. id10004 is the test speaker.
LAYOUT = {
    "id10001": {"v1/00001.wav": 2 * SR, "v1/00002.wav": int(2.5 * SR), "v2/00001.wav": 3 * SR},
    "id10002": {"v1/00001.wav": 2 * SR, "v3/00001.wav": int(1.2 * SR)},
    "id10003": {"v4/00001.wav": 4 * SR + 10, "v4/00002.wav": 2 * SR},
    "id10004": {"t1/00001.wav": int(1.5 * SR), "t1/00002.wav": SR, "t2/00001.wav": 2 * SR},
}
TRIALS = (
    "1 id10004/t1/00001.wav id10004/t1/00002.wav\n"
    "1 id10004/t1/00001.wav id10004/t2/00001.wav\n"
    "0 id10004/t2/00001.wav id10004/t1/00002.wav"  # no final newline, as the real list
)


@pytest.fixture
def corpus(tmp_path):
    """A tiny corpus in the VoxCeleb1 layout plus a trial list over id10004."""
    root = tmp_path / "vox1"
    seed = 0
    for spk, files in LAYOUT.items():
        for rel, n in files.items():
            _write_wav(root / "wav" / spk / rel, n, seed=seed)
            seed += 1
    trials = tmp_path / "veri_test2.txt"
    trials.write_text(TRIALS)
    return root, trials


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _prep(corpus, tmp_path, **kw):
    root, trials = corpus
    kw.setdefault("seg_dur", 1.0)
    kw.setdefault("split_ratio", (80, 20))
    return prepare_voxceleb1(root, tmp_path / "csv", trials, **kw)


# --------------------------------------------------------------------------
# audio.py
# --------------------------------------------------------------------------
def test_read_wav_checked_returns_samples(tmp_path):
    f = tmp_path / "a.wav"
    x = (np.arange(1000) % 200 - 100) / 400.0
    sf.write(f, x, SR, subtype="FLOAT")
    wav = read_wav_checked(f)
    assert wav.dtype == torch.float32 and wav.shape == (1000,)
    assert torch.allclose(wav, torch.tensor(x, dtype=torch.float32))
    seg = read_wav_checked(f, start=100, stop=300)
    assert torch.allclose(seg, torch.tensor(x[100:300], dtype=torch.float32))
    info = audio_info(f)
    assert (info.frames, info.channels, info.sample_rate) == (1000, 1, SR)


@pytest.mark.parametrize(
    "make, kwargs, exc, message",
    [
        (lambda p: None, {}, FileNotFoundError, "not found"),
        (lambda p: p.write_bytes(b"RIFF....not a wav at all" * 10), {}, AudioError, "unreadable or corrupt"),
        (lambda p: p.write_bytes(b""), {}, AudioError, "empty file (0 bytes)"),
        (lambda p: sf.write(p, np.zeros(0), SR), {}, AudioError, "empty audio (0 samples)"),
        (lambda p: _write_wav(p, SR, channels=2), {}, AudioError, "2 channels, expected mono"),
        (lambda p: _write_wav(p, 8000, sr=8000), {}, AudioError, "sample rate 8000 Hz, expected 16000 Hz"),
        (lambda p: _write_wav(p, 100), {"min_samples": 101}, AudioError, "too short: 100 samples"),
        (lambda p: _write_wav(p, 100), {"start": 50, "stop": 101}, AudioError, "outside the file's 100 samples"),
    ],
    ids=["missing", "garbage", "zero-bytes", "no-samples", "stereo", "8kHz", "short", "bad-segment"],
)
def test_read_wav_checked_errors_name_file(tmp_path, make, kwargs, exc, message):
    f = tmp_path / "bad_clip.wav"
    make(f)
    with pytest.raises(exc) as err:
        read_wav_checked(f, **kwargs)
    assert "bad_clip.wav" in str(err.value)
    assert message in str(err.value)


def test_read_wav_checked_any_rate(tmp_path):
    f = _write_wav(tmp_path / "a.wav", 800, sr=8000)
    assert read_wav_checked(f, sample_rate=None).shape == (800,)


# --------------------------------------------------------------------------
# preparation on real clips
# --------------------------------------------------------------------------
def test_prepare_real_voxceleb1_clips(tmp_path):
    wav_root = DATA / "wav"
    if not wav_root.is_dir():
        pytest.skip(f"real VoxCeleb1 clips {wav_root} absent (needs ../shared/data)")
    trials = tmp_path / "trials.txt"
    trials.write_text(
        "1 id10001/1zcIwhmdeo4/00001.wav id10001/1zcIwhmdeo4/00002.wav\n"
        "1 id10001/1zcIwhmdeo4/00001.wav id10001/1zcIwhmdeo4/00003.wav\n"
        "0 id10001/1zcIwhmdeo4/00002.wav id10001/1zcIwhmdeo4/00003.wav"
    )
    report = prepare_voxceleb1(DATA, tmp_path / "csv", trials, split_ratio=(2, 1))
    train = _rows(report.csv_files["train"])
    dev = _rows(report.csv_files["dev"])
    enrol = _rows(report.csv_files["enrol"])
    test = _rows(report.csv_files["test"])
    assert {r["spk_id"] for r in train + dev} == {"id10002"}
    # id10002 clips: 87041, 73601, 113281 samples -> 1 + 1 + 2 three-second chunks.
    assert len(train) + len(dev) == 4
    assert len({r["wav"] for r in train} & {r["wav"] for r in dev}) == 0
    assert [r["ID"] for r in enrol] == [
        "id10001/1zcIwhmdeo4/00001",
        "id10001/1zcIwhmdeo4/00002",
    ]
    assert [r["ID"] for r in test] == [
        "id10001/1zcIwhmdeo4/00002",
        "id10001/1zcIwhmdeo4/00003",
    ]
    for row in enrol + test:
        frames = sf.info(row["wav"]).frames
        assert (int(row["start"]), int(row["stop"])) == (0, frames)
        assert float(row["duration"]) == pytest.approx(frames / SR, abs=1e-6)
    for row in train + dev:
        assert int(row["stop"]) - int(row["start"]) == 48000
        assert int(row["stop"]) <= sf.info(row["wav"]).frames
        assert Path(row["wav"]).is_absolute()
    assert report.stats["excluded_trial_speaker_files"] == 3
    assert report.stats["excluded_trial_speakers"] == 1


# --------------------------------------------------------------------------
# preparation on a synthetic corpus
# --------------------------------------------------------------------------
def test_prepare_tiny_corpus(corpus, tmp_path):
    report = _prep(corpus, tmp_path)
    assert not report.reused
    root, _ = corpus
    header = (tmp_path / "csv" / "train.csv").read_text().splitlines()[0]
    assert header == "ID,duration,wav,start,stop,spk_id"
    train = _rows(report.csv_files["train"])
    dev = _rows(report.csv_files["dev"])
    # Training files: 7 of id10001-3; id10002/v3/00001 (1.2 s) >= 1 s segment.
    files = {r["wav"] for r in train + dev}
    assert len(files) == 7
    assert all("/id10004/" not in w for w in files)
    # 80/20 of 7 files -> 5 train, 2 dev, split by file.
    assert report.stats["train_files"] + report.stats["dev_files"] == 7
    assert report.stats["train_files"] == 5
    assert not {r["wav"] for r in train} & {r["wav"] for r in dev}
    # Chunks: floor(length / 1 s) per file.
    expected_chunks = sum(
        n // SR for spk, fs in LAYOUT.items() if spk != "id10004" for n in fs.values()
    )
    assert len(train) + len(dev) == expected_chunks
    ids = [r["ID"] for r in train + dev]
    assert len(ids) == len(set(ids))
    for r in train + dev:
        start, stop = int(r["start"]), int(r["stop"])
        assert stop - start == SR and start % SR == 0
        assert r["ID"].endswith(f"_{start}_{stop}")
        assert r["wav"].startswith(str(root / "wav"))
        assert r["spk_id"] == Path(r["wav"]).parts[-3]
        assert float(r["duration"]) == 1.0
    test = _rows(report.csv_files["test"])
    assert [r["ID"] for r in test] == ["id10004/t1/00002", "id10004/t2/00001"]
    assert int(test[0]["stop"]) == SR  # 1.0 s file, full length
    assert report.stats["excluded_trial_speaker_files"] == 3
    assert (tmp_path / "csv" / "skipped_short.txt").read_text() == ""


def test_csv_loads_in_speechbrain(corpus, tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset

    report = _prep(corpus, tmp_path)
    data = DynamicItemDataset.from_csv(report.csv_files["train"])
    data.set_output_keys(["id", "spk_id", "start", "stop"])
    first = data[0]
    wav = read_wav_checked(
        _rows(report.csv_files["train"])[0]["wav"],
        start=int(first["start"]),
        stop=int(first["stop"]),
    )
    assert wav.shape == (SR,)


def test_data_folder_may_be_wav_folder(corpus, tmp_path):
    root, trials = corpus
    a = prepare_voxceleb1(root, tmp_path / "a", trials, seg_dur=1.0)
    b = prepare_voxceleb1(root / "wav", tmp_path / "b", trials, seg_dur=1.0)
    for split in ("train", "dev", "enrol", "test"):
        assert a.csv_files[split].read_text() == b.csv_files[split].read_text()


def test_split_is_deterministic_per_seed(corpus, tmp_path):
    root, trials = corpus
    kw = dict(seg_dur=1.0, split_ratio=(50, 50), splits=("train",))
    a = prepare_voxceleb1(root, tmp_path / "a", trials, seed=1, **kw)
    b = prepare_voxceleb1(root, tmp_path / "b", trials, seed=1, **kw)
    assert a.csv_files["train"].read_text() == b.csv_files["train"].read_text()
    texts = {
        prepare_voxceleb1(root, tmp_path / f"s{s}", trials, seed=s, **kw)
        .csv_files["train"]
        .read_text()
        for s in range(6)
    }
    assert len(texts) > 1
    # Requesting train alone gives the same train.csv as all four splits.
    full = prepare_voxceleb1(root, tmp_path / "full", trials, seed=1, seg_dur=1.0, split_ratio=(50, 50))
    assert full.csv_files["train"].read_text() == a.csv_files["train"].read_text()


def test_random_segment_one_row_per_file(corpus, tmp_path):
    report = _prep(corpus, tmp_path, random_segment=True)
    rows = _rows(report.csv_files["train"]) + _rows(report.csv_files["dev"])
    assert len(rows) == 7
    for r in rows:
        assert int(r["start"]) == 0
        assert int(r["stop"]) == sf.info(r["wav"]).frames
        assert "_" not in r["ID"].rsplit("/", 1)[1]


def test_short_files_skipped_and_listed(corpus, tmp_path):
    report = _prep(corpus, tmp_path, seg_dur=2.2, split_ratio=(100, 0), splits=("train",))
    skipped = (tmp_path / "csv" / "skipped_short.txt").read_text().splitlines()
    # < 2.2 s: id10001 v1/00001 (2 s), id10002 both, id10003 v4/00002.
    assert report.stats["skipped_short"] == 4 == len(skipped)
    assert any("id10002/v3/00001.wav 1.200000" in line for line in skipped)
    rows = _rows(report.csv_files["train"])
    assert len({r["wav"] for r in rows}) == 3
    assert not any("id10002" in r["wav"] for r in rows)


def test_short_files_error(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"4 training files are shorter.*id10002/v3/00001.wav"):
        _prep(corpus, tmp_path, seg_dur=2.2, on_short="error", split_ratio=(100, 0), splits=("train",))


def test_amp_threshold_drops_silent_segments(corpus, tmp_path):
    root, _ = corpus
    _write_wav(root / "wav" / "id10003" / "v4" / "00001.wav", 4 * SR, silent=True)
    report = _prep(corpus, tmp_path, amp_th=5e-4)
    silent = (tmp_path / "csv" / "skipped_silent.txt").read_text().split()
    assert report.stats["skipped_silent"] == 4 == len(silent)
    assert all(s.startswith("id10003/v4/00001_") for s in silent)


# --------------------------------------------------------------------------
# re-running
# --------------------------------------------------------------------------
def test_rerun_skips_and_changed_options_redo(corpus, tmp_path):
    first = _prep(corpus, tmp_path)
    train = first.csv_files["train"]
    stamp = train.stat().st_mtime_ns
    again = _prep(corpus, tmp_path)
    assert again.reused and again.stats == first.stats
    assert train.stat().st_mtime_ns == stamp
    changed = _prep(corpus, tmp_path, seg_dur=0.5)
    assert not changed.reused
    assert changed.stats["train_rows"] > first.stats["train_rows"]
    saved = json.loads((tmp_path / "csv" / OPTIONS_FILE).read_text())
    assert saved["options"]["seg_dur"] == 0.5
    # A changed trial list redoes the work too.
    _, trials = corpus
    trials.write_text(TRIALS.replace("0 id10004/t2", "1 id10004/t2"))
    assert not _prep(corpus, tmp_path, seg_dur=0.5).reused
    # So does a deleted CSV.
    train.unlink()
    assert not _prep(corpus, tmp_path, seg_dur=0.5).reused
    assert train.is_file()


def test_unreadable_options_file_redoes(corpus, tmp_path):
    _prep(corpus, tmp_path)
    (tmp_path / "csv" / OPTIONS_FILE).write_text("{not json")
    assert not _prep(corpus, tmp_path).reused


def test_skip_prep_writes_nothing(corpus, tmp_path):
    report = _prep(corpus, tmp_path, skip_prep=True)
    assert report.reused
    assert not (tmp_path / "csv").exists()
    assert report.csv_files["train"] == tmp_path / "csv" / "train.csv"


# --------------------------------------------------------------------------
# trial list sources
# --------------------------------------------------------------------------
def test_trial_list_file_url_downloaded_once(corpus, tmp_path):
    root, trials = corpus
    url = trials.as_uri()
    report = prepare_voxceleb1(root, tmp_path / "csv", url, seg_dur=1.0, splits=("test",))
    local = tmp_path / "csv" / "veri_test2.txt"
    assert local.read_text() == TRIALS
    assert report.stats["trials"] == 3
    # The downloaded copy is reused: a changed source is not fetched again.
    trials.write_text("garbage")
    again = prepare_voxceleb1(root, tmp_path / "csv", url, seg_dur=1.0, splits=("test",))
    assert again.reused and local.read_text() == TRIALS


def test_trial_list_http_uses_download_file(corpus, tmp_path, monkeypatch):
    root, trials = corpus
    calls = []

    def fake_download(source, dest, **kw):
        calls.append(source)
        shutil.copyfile(trials, dest)

    monkeypatch.setattr(vox, "download_file", fake_download)
    url = "https://example.org/lists/veri_test2.txt"
    for _ in range(2):
        prepare_voxceleb1(root, tmp_path / "csv", url, seg_dur=1.0, splits=("enrol",))
    assert calls == [url]
    assert (tmp_path / "csv" / "veri_test2.txt").read_text() == TRIALS
    assert not (tmp_path / "csv" / "veri_test2.txt.part").exists()


def test_trial_list_download_failure(corpus, tmp_path, monkeypatch):
    root, _ = corpus

    def failing(source, dest, **kw):
        Path(dest).write_text("partial")
        raise OSError("connection reset")

    monkeypatch.setattr(vox, "download_file", failing)
    with pytest.raises(OSError, match=r"Could not download trial list https://x.org/t.txt"):
        prepare_voxceleb1(root, tmp_path / "csv", "https://x.org/t.txt")
    assert list((tmp_path / "csv").iterdir()) == []


# --------------------------------------------------------------------------
# durations (no audio read)
# --------------------------------------------------------------------------
def _durations():
    return {
        f"{spk}/{rel[:-4]}": n / SR
        for spk, files in LAYOUT.items()
        for rel, n in files.items()
    }


def test_durations_match_audio_headers(corpus, tmp_path):
    root, trials = corpus
    from_audio = prepare_voxceleb1(root, tmp_path / "a", trials, seg_dur=1.0)
    # Same result from durations alone, with the data folder never touched.
    moved = tmp_path / "moved"
    root.rename(moved)
    from_list = prepare_voxceleb1(root, tmp_path / "b", trials, seg_dur=1.0, durations=_durations())
    for split in ("train", "dev", "enrol", "test"):
        assert from_audio.csv_files[split].read_text() == from_list.csv_files[split].read_text()


def test_durations_errors(corpus, tmp_path):
    root, trials = corpus
    missing = {k: v for k, v in _durations().items() if k != "id10004/t1/00002"}
    with pytest.raises(FileNotFoundError, match=r"names 1 of 3 utterances.*id10004/t1/00002.wav"):
        prepare_voxceleb1(root, tmp_path / "a", trials, durations=missing)
    with pytest.raises(ValueError, match=r"'id10001/v1/00001' has invalid duration -1"):
        prepare_voxceleb1(root, tmp_path / "a", trials, durations={**_durations(), "id10001/v1/00001": -1})
    with pytest.raises(ValueError, match=r"key 'v1/00001.wav' is not a path"):
        prepare_voxceleb1(root, tmp_path / "a", trials, durations={"v1/00001.wav": 2.0})
    with pytest.raises(ValueError, match="'id10001/v1/00001' is given twice"):
        prepare_voxceleb1(root, tmp_path / "a", trials, durations={**_durations(), "id10001/v1/00001.wav": 2.0})
    with pytest.raises(ValueError, match="amp_th needs the audio"):
        prepare_voxceleb1(root, tmp_path / "a", trials, durations=_durations(), amp_th=1e-4)


def test_read_durations(tmp_path):
    f = tmp_path / "d.txt.gz"
    f.write_bytes(gzip.compress(b"id10001/a/00001 4.5\nid10001/a/00002 3.25\n\n"))
    assert read_durations(f) == {"id10001/a/00001": 4.5, "id10001/a/00002": 3.25}
    bad = tmp_path / "bad_durations.txt"
    bad.write_text("id10001/a/00001 4.5\nid10001/a/00002\n")
    with pytest.raises(ValueError, match=r"bad_durations.txt, line 2: expected"):
        read_durations(bad)
    bad.write_text("id10001/a/00001 4.5\nid10001/a/00001 4.5\n")
    with pytest.raises(ValueError, match=r"line 2: 'id10001/a/00001' listed twice"):
        read_durations(bad)
    bad.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        read_durations(bad)


def test_real_test_set_from_durations(tmp_path):
    dur, trials = DATA / "vox1_tst_duration.txt.gz", DATA / "veri_test2.txt"
    if not (dur.is_file() and trials.is_file()):
        pytest.skip("real VoxCeleb1 lists absent (needs ../shared/data)")
    report = prepare_voxceleb1(
        "/data/vox1", tmp_path, trials, splits=("enrol", "test"), durations=read_durations(dur)
    )
    assert report.stats["enrol_rows"] == len(_rows(report.csv_files["enrol"])) == 4708
    assert report.stats["test_rows"] == 4706
    assert _rows(report.csv_files["test"])[0]["wav"].startswith("/data/vox1/wav/id")


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
def test_missing_data_folder(tmp_path, corpus):
    _, trials = corpus
    with pytest.raises(FileNotFoundError, match=r"Data folder not found: .*no_such_dir"):
        prepare_voxceleb1(tmp_path / "no_such_dir", tmp_path / "csv", trials)
    with pytest.raises(NotADirectoryError, match=r"not a folder: .*veri_test2.txt"):
        prepare_voxceleb1(trials, tmp_path / "csv", trials)


def test_empty_data_folder(tmp_path, corpus):
    _, trials = corpus
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty holds no VoxCeleb1 audio"):
        prepare_voxceleb1(tmp_path / "empty", tmp_path / "csv", trials)
    (tmp_path / "empty" / "wav").mkdir()
    with pytest.raises(ValueError, match=r"No wav files found in .*empty/wav"):
        prepare_voxceleb1(tmp_path / "empty", tmp_path / "csv", trials, splits=("train",))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"RIFFjunkjunk" * 20), "unreadable or corrupt"),
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: sf.write(p, np.zeros(0), SR), "empty audio (0 samples)"),
        (lambda p: _write_wav(p, 2 * SR, channels=2), "2 channels, expected mono"),
        (lambda p: _write_wav(p, 2 * 8000, sr=8000), "sample rate 8000 Hz, expected 16000 Hz"),
    ],
    ids=["unreadable", "zero-bytes", "empty", "stereo", "8kHz"],
)
@pytest.mark.parametrize("where", ["id10002/v1/00001.wav", "id10004/t1/00002.wav"], ids=["train", "trial"])
def test_bad_audio_names_file(corpus, tmp_path, make, message, where):
    root, _ = corpus
    bad = root / "wav" / where
    bad.unlink()
    make(bad)
    with pytest.raises(AudioError) as err:
        _prep(corpus, tmp_path)
    assert where in str(err.value) and message in str(err.value)
    assert (tmp_path / "csv" / "bad_audio.txt").read_text().count("\n") == 1
    assert not (tmp_path / "csv" / OPTIONS_FILE).exists()


def test_several_bad_files_reported_together(corpus, tmp_path):
    root, _ = corpus
    for rel in ("id10001/v1/00001.wav", "id10001/v1/00002.wav", "id10003/v4/00002.wav"):
        _write_wav(root / "wav" / rel, SR, sr=8000)
    with pytest.raises(AudioError, match=r"3 unusable audio files") as err:
        _prep(corpus, tmp_path, split_ratio=(100, 0), splits=("train",))
    assert "id10003/v4/00002.wav" in str(err.value)
    assert len((tmp_path / "csv" / "bad_audio.txt").read_text().splitlines()) == 3


def test_malformed_trial_list(corpus, tmp_path):
    root, trials = corpus
    trials.write_text(TRIALS + "\n1 id10004/t1/00001.wav")
    with pytest.raises(ValueError, match=r"veri_test2.txt, line 4: expected 3 fields"):
        _prep(corpus, tmp_path)


def test_missing_trial_list(corpus, tmp_path):
    root, _ = corpus
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        prepare_voxceleb1(root, tmp_path / "csv", tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        prepare_voxceleb1(root, tmp_path / "csv", (tmp_path / "nope.txt").as_uri())


def test_trial_names_missing_files(corpus, tmp_path):
    root, trials = corpus
    extra = "".join(
        f"\n0 id10004/t1/00001.wav id10099/gone/{i:05d}.wav" for i in range(7)
    )
    trials.write_text(TRIALS + extra)
    with pytest.raises(FileNotFoundError) as err:
        _prep(corpus, tmp_path)
    msg = str(err.value)
    assert "names 7 of 10 utterances" in msg
    assert "id10099/gone/00000.wav" in msg and "(2 more)" in msg


def test_train_speakers_overlap_and_absent(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"train_speakers overlap the trial list.*id10004"):
        _prep(corpus, tmp_path, train_speakers=["id10001", "id10004"])
    with pytest.raises(ValueError, match=r"1 speakers have no file.*id10042"):
        _prep(corpus, tmp_path, train_speakers=["id10001", "id10042"])
    report = _prep(corpus, tmp_path, train_speakers=["id10001", "id10003"])
    rows = _rows(report.csv_files["train"]) + _rows(report.csv_files["dev"])
    assert {r["spk_id"] for r in rows} == {"id10001", "id10003"}
    assert report.stats["excluded_not_train_speaker_files"] == 2


def test_no_training_speakers_left(corpus, tmp_path):
    root, trials = corpus
    trials.write_text(
        TRIALS + "\n0 id10001/v1/00001.wav id10002/v1/00001.wav\n0 id10003/v4/00001.wav id10002/v1/00001.wav"
    )
    with pytest.raises(ValueError, match="No training files left"):
        _prep(corpus, tmp_path)


def test_empty_split_is_an_error(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"Split 'dev' would be empty"):
        _prep(corpus, tmp_path, split_ratio=(100, 0))
    assert not (tmp_path / "csv" / "dev.csv").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"splits": ("train", "eval")}, "splits="),
        ({"split_ratio": (90,)}, "split_ratio="),
        ({"split_ratio": (0, 0)}, "split_ratio="),
        ({"seg_dur": 0}, "seg_dur="),
        ({"sample_rate": 16000.5}, "sample_rate="),
        ({"on_short": "pad"}, "on_short="),
        ({"amp_th": -1}, "amp_th="),
    ],
)
def test_bad_hyperparameters(corpus, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _prep(corpus, tmp_path, **kwargs)


# --------------------------------------------------------------------------
# the synthetic corpus generator, when present
# --------------------------------------------------------------------------
def test_prepare_generated_corpus(tmp_path):
    synthetic = pytest.importorskip("speechbrain_imlkd.data.synthetic")
    if not hasattr(synthetic, "generate_corpus"):
        pytest.skip("speechbrain_imlkd.data.synthetic.generate_corpus not written yet")
    root = tmp_path / "synth"
    meta = synthetic.generate_corpus(
        root,
        n_train_speakers=3,
        n_test_speakers=2,
        sessions_per_speaker=2,
        utterances_per_session=2,
        min_duration=1.0,
        max_duration=1.5,
        n_trials=4,
    )
    report = prepare_voxceleb1(
        root, tmp_path / "csv", root / "veri_test2.txt", seg_dur=1.0, split_ratio=(75, 25)
    )
    train_rows = _rows(report.csv_files["train"]) + _rows(report.csv_files["dev"])
    test_rows = _rows(report.csv_files["enrol"]) + _rows(report.csv_files["test"])
    assert {r["spk_id"] for r in train_rows} == set(meta["speakers"]["train"])
    assert {r["spk_id"] for r in test_rows} <= set(meta["speakers"]["test"])
    # Every generated training clip lasts >= 1 s: one row each, none skipped.
    assert len(train_rows) == 3 * 2 * 2
    assert report.stats["skipped_short"] == 0
    assert report.stats["excluded_trial_speakers"] == 2
