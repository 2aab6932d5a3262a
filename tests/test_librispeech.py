"""Tests for the LibriSpeech preparation (speechbrain_imlkd.data.librispeech)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import speechbrain_imlkd.data.librispeech as ls
from speechbrain_imlkd.data.audio import AudioError, read_wav_checked
from speechbrain_imlkd.data.dataset import train_dev_datasets
from speechbrain_imlkd.data.librispeech import (
    OPTIONS_FILE,
    SKIPPED_FILE,
    TRIAL_FILES,
    list_flac_files,
    prepare_librispeech,
    read_speakers_file,
)
from speechbrain_imlkd.data.trials import read_trials, speaker_of, trial_path_to_id

SR = 16000
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "librispeech"
FLAT = SHARED / "train-clean-100-one-per-speaker"

# reader -> {chapter: [seconds of each file]}. Subset 100: two chapters each;
# subset 360: one chapter with two files, or one file.
TWO_CHAPTERS = {100 + k: {"1": [1.5, 1.5], "2": [1.5, 1.5]} for k in range(10)}
ONE_CHAPTER = {200 + k: {"7": [1.5, 1.5]} for k in range(6)}
ONE_FILE = {300 + k: {"9": [3.0]} for k in range(6)}
# Small settings so that the synthetic files are short.
SMALL = dict(
    n_dev_speakers=3, n_test_speakers=3, seg_dur=0.5, trial_window=0.5,
    n_windows=3, nontarget_per_target=1,
)


def _write_flac(path, seconds, seed, sr=SR, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    x = 0.1 * rng.standard_normal(n)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(path, x, sr, format="FLAC", subtype="PCM_16")


def _write_tree(root):
    """The real layout: SPEAKERS.TXT and two subsets."""
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    seed = 0
    for subset, table in (
        ("train-clean-100", TWO_CHAPTERS),
        ("train-clean-360", {**ONE_CHAPTER, **ONE_FILE}),
    ):
        for reader, chapters in table.items():
            sex = "F" if reader % 2 else "M"
            lines.append(f"{reader} | {sex} | {subset} | 1.0 | Reader {reader}")
            for chapter, secs in chapters.items():
                folder = root / subset / str(reader) / chapter
                for u, s in enumerate(secs):
                    _write_flac(folder / f"{reader}-{chapter}-{u:04d}.flac", s, seed)
                    seed += 1
                (folder / f"{reader}-{chapter}.trans.txt").write_text("TEXT\n")
    (root / "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _write_tree(tmp_path_factory.mktemp("libri") / "LibriSpeech")


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    save = tmp_path_factory.mktemp("prep")
    return save, prepare_librispeech(tree, save, **SMALL)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _chapter(utt_id):
    return utt_id.split("/")[1]


def _trial_rows(save, name):
    """Trials of a list and the enrol/test CSV rows by ID."""
    trials_file, enrol_csv, test_csv = TRIAL_FILES[name]
    trials = read_trials(save / trials_file)
    rows = {r["ID"]: r for r in _rows(save / enrol_csv)}
    rows.update({r["ID"]: r for r in _rows(save / test_csv)})
    return trials, rows


# --------------------------------------------------------------------------
# speaker sets, CSVs and trial lists
# --------------------------------------------------------------------------
def test_speakers_disjoint_and_csvs_consistent(prepared):
    save, report = prepared
    train = _rows(save / "train.csv")
    dev = _rows(save / "dev.csv")
    train_spk = {r["spk_id"] for r in train}
    assert {r["spk_id"] for r in dev} <= train_spk
    trial_spk = {}
    for name in ("dev", "test"):
        trials, rows = _trial_rows(save, name)
        trial_spk[name] = trials.speakers
        assert len(trials.speakers) == SMALL[f"n_{name}_speakers"]
        # Every trial path is a CSV row of the right speaker.
        for utt in trials.utterances:
            row = rows[trial_path_to_id(utt)]
            assert row["spk_id"] == speaker_of(utt)
        assert set(rows) == {trial_path_to_id(u) for u in trials.utterances}
    assert not trial_spk["dev"] & trial_spk["test"]
    assert not train_spk & (trial_spk["dev"] | trial_spk["test"])
    sets = json.loads((save / "speakers.json").read_text())
    assert set(sets["train"]["speakers"]) == train_spk
    assert set(sets["test"]["speakers"]) == trial_spk["test"]
    n_all = len(TWO_CHAPTERS) + len(ONE_CHAPTER) + len(ONE_FILE)
    assert len(train_spk) == n_all - 6 == report.stats["train_speakers"]
    assert report.stats["train_rows"] == len(train)
    assert report.stats["dev_rows"] == len(dev)


def test_train_and_dev_rows_never_overlap(prepared):
    save, _ = prepared
    spans = {}
    for split in ("train", "dev"):
        for r in _rows(save / f"{split}.csv"):
            start, stop = int(r["start"]), int(r["stop"])
            assert stop - start == int(SMALL["seg_dur"] * SR)
            assert float(r["duration"]) == pytest.approx(SMALL["seg_dur"])
            spans.setdefault(r["wav"], []).append((start, stop, split))
    split_of_file = {}
    for wav, segs in spans.items():
        segs.sort()
        for (a0, a1, _), (b0, _, _) in zip(segs, segs[1:]):
            assert a1 <= b0, f"overlapping rows in {wav}"
        kinds = {s for _, _, s in segs}
        split_of_file[wav] = kinds
    # Multi-file speakers are split by file, single-file ones by time.
    mixed = [w for w, k in split_of_file.items() if len(k) == 2]
    assert mixed and all("-9-" in Path(w).name for w in mixed)
    for w in mixed:
        segs = sorted(spans[w])
        first_dev = min(s for s, _, k in segs if k == "dev")
        assert all(s < first_dev for s, _, k in segs if k == "train")


def test_label_encoder_accepts_train_and_dev(prepared, tmp_path):
    save, report = prepared
    train, dev, enc = train_dev_datasets(
        save / "train.csv", save / "dev.csv", tmp_path / "label_encoder.txt"
    )
    assert len(enc) == report.stats["train_speakers"]
    assert dev[0]["sig"].shape[0] == int(SMALL["seg_dur"] * SR)


def test_windows_disjoint_and_audio_is_the_csv_segment(prepared):
    save, _ = prepared
    for name in ("dev", "test"):
        trials, rows = _trial_rows(save, name)
        by_file = {}
        for r in rows.values():
            by_file.setdefault(r["wav"], []).append((int(r["start"]), int(r["stop"])))
        for wav, spans in by_file.items():
            spans.sort()
            for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
                assert a1 <= b0, f"overlapping windows in {wav}"
        for utt in trials.utterances:
            row = rows[trial_path_to_id(utt)]
            window = read_wav_checked(save / "wav" / utt)
            original = read_wav_checked(row["wav"], start=int(row["start"]), stop=int(row["stop"]))
            assert torch.equal(window, original)
            assert window.shape[0] == int(SMALL["trial_window"] * SR)


def test_targets_cross_chapter_only_when_possible(prepared):
    save, report = prepared
    chapters_of = {}
    for table in (TWO_CHAPTERS, ONE_CHAPTER, ONE_FILE):
        for reader, chapters in table.items():
            chapters_of[f"id{reader:05d}"] = chapters
    for name in ("dev", "test"):
        trials, rows = _trial_rows(save, name)
        stats = report.stats["trials"][name]
        kinds = {"cross_chapter": 0, "same_chapter": 0, "same_file": 0}
        for label, e, t in zip(trials.labels, trials.enrol, trials.test):
            if label == 0:
                assert speaker_of(e) != speaker_of(t)
                continue
            assert speaker_of(e) == speaker_of(t)
            chapters = chapters_of[speaker_of(e)]
            same_file = rows[trial_path_to_id(e)]["wav"] == rows[trial_path_to_id(t)]["wav"]
            if len(chapters) > 1:
                assert _chapter(e) != _chapter(t)
                kinds["cross_chapter"] += 1
            elif sum(len(v) for v in chapters.values()) > 1:
                assert not same_file
                kinds["same_chapter"] += 1
            else:
                assert same_file
                kinds["same_file"] += 1
        for kind, n in kinds.items():
            assert stats[f"n_target_{kind}"] == n
        assert stats["same_session_targets"] == (kinds["same_chapter"] + kinds["same_file"] > 0)
        assert stats["n_target"] == trials.n_target
        per_target = SMALL["nontarget_per_target"]
        assert stats["n_nontarget"] == trials.n_nontarget == per_target * trials.n_target
        pairs = list(zip(trials.enrol, trials.test))
        assert len(set(pairs)) == len(pairs)


def test_cross_chapter_subset_has_no_same_session_targets(tree, tmp_path):
    report = prepare_librispeech(tree, tmp_path, subsets=["train-clean-100"], **SMALL)
    for name in ("dev", "test"):
        stats = report.stats["trials"][name]
        assert stats["same_session_targets"] is False
        assert stats["n_target"] == stats["n_target_cross_chapter"] > 0
    assert report.stats["n_speakers"] == len(TWO_CHAPTERS)


def test_single_file_speakers_are_same_session(tmp_path):
    for k in range(8):
        _write_flac(tmp_path / "flat" / f"{k + 1}-50-0000.flac", 2.0, k)
    report = prepare_librispeech(
        tmp_path / "flat", tmp_path / "out", n_dev_speakers=2, n_test_speakers=3,
        seg_dur=0.5, trial_window=0.5, n_windows=4, nontarget_per_target=1,
    )
    stats = report.stats["trials"]["test"]
    assert stats["same_session_targets"] is True
    assert stats["n_target"] == stats["n_target_same_file"] == 3 * 6
    assert report.stats["sex_source"] is None
    # Four 0.5 s windows fill the 2 s file exactly: evenly spread, disjoint.
    rows = _rows(tmp_path / "out" / "enrol.csv") + _rows(tmp_path / "out" / "test.csv")
    one = sorted(rows, key=lambda r: r["ID"])[0]["wav"]
    spans = sorted({(int(r["start"]), int(r["stop"])) for r in rows if r["wav"] == one})
    assert spans == [(k * SR // 2, (k + 1) * SR // 2) for k in range(4)]


def test_sex_stratified_split(tree, tmp_path):
    report = prepare_librispeech(tree, tmp_path, **{**SMALL, "n_test_speakers": 10})
    assert report.stats["sex_source"] == str(tree / "SPEAKERS.TXT")
    # 22 speakers, 11 F / 11 M: a proportional draw of 10 is 5 / 5.
    assert report.stats["test_speakers_by_sex"] == {"F": 5, "M": 5}
    sexes = read_speakers_file(tree / "SPEAKERS.TXT")
    sets = json.loads((tmp_path / "speakers.json").read_text())
    for spk, sex in sets["test"]["sex"].items():
        assert sexes[str(int(spk[2:]))] == sex


def test_deterministic_for_seed(tree, tmp_path):
    outputs = []
    for run, seed in (("a", 7), ("b", 7), ("c", 8)):
        prepare_librispeech(tree, tmp_path / run, seed=seed, **SMALL)
        outputs.append(
            {
                name: (tmp_path / run / name).read_text()
                for name in ("train.csv", "dev.csv", "trials_dev.txt", "trials_test.txt",
                             "enrol.csv", "test.csv", "speakers.json")
            }
        )
    assert outputs[0] == outputs[1]
    assert outputs[0]["speakers.json"] != outputs[2]["speakers.json"]


def test_test_speakers_do_not_depend_on_n_dev(tree, tmp_path):
    a = prepare_librispeech(tree, tmp_path / "a", **SMALL)
    b = prepare_librispeech(tree, tmp_path / "b", **{**SMALL, "n_dev_speakers": 4})
    assert a.stats["trials"]["dev"]["n_speakers"] == 3
    assert b.stats["trials"]["dev"]["n_speakers"] == 4
    ta = read_trials(tmp_path / "a" / "trials_test.txt").speakers
    tb = read_trials(tmp_path / "b" / "trials_test.txt").speakers
    assert ta == tb


def test_rerun_reuses_and_option_change_redoes(tree, tmp_path):
    first = prepare_librispeech(tree, tmp_path, **SMALL)
    assert not first.reused
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.csv")}
    again = prepare_librispeech(tree, tmp_path, **SMALL)
    assert again.reused and again.stats == first.stats
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.csv")}
    saved = json.loads((tmp_path / OPTIONS_FILE).read_text())
    assert saved["stats"]["trials"]["test"]["same_session_targets"] in (True, False)
    changed = prepare_librispeech(tree, tmp_path, **{**SMALL, "nontarget_per_target": 2})
    assert not changed.reused
    trials = read_trials(tmp_path / "trials_test.txt")
    assert trials.n_nontarget == 2 * trials.n_target
    # A deleted output is rebuilt even with the same options.
    (tmp_path / "trials_dev.txt").unlink()
    assert not prepare_librispeech(tree, tmp_path, **{**SMALL, "nontarget_per_target": 2}).reused


def test_evaluate_model_consumes_the_lists(prepared, tmp_path):
    from speechbrain_imlkd.scoring import evaluate_model

    save, report = prepared
    spectrum = lambda w, l: torch.fft.rfft(w).abs()[:, :64]  # noqa: E731
    res = evaluate_model(
        spectrum, save,
        {name: save / TRIAL_FILES[name][0] for name in ("dev", "test")},
        tmp_path / "eval", progress=False,
    )
    for name in ("dev", "test"):
        assert res["trials"][name]["n_trials"] == report.stats["trials"][name]["n_trials"]
        assert 0.0 <= res["trials"][name]["eer"] <= 1.0


def test_cli(tree, tmp_path, capsys):
    argv = [str(tree), str(tmp_path), "--n_dev_speakers", "2", "--n_test_speakers", "3",
            "--seg_dur", "0.5", "--trial_window", "0.5", "--n_windows", "3",
            "--nontarget_per_target", "0", "--no_window_audio"]
    assert ls.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reused"] is False
    # 0 means every non-target pair: 3 speakers x 3 windows.
    assert out["trials"]["test"]["n_nontarget"] == 9 * 8 // 2 - 3 * 3
    assert not (tmp_path / "wav").exists()
    with pytest.raises(SystemExit) as e:
        ls.main([str(tmp_path / "nowhere"), str(tmp_path / "x")])
    assert e.value.code == 2


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_librispeech(tmp_path / "nowhere", tmp_path / "out", **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=f"No LibriSpeech FLAC files.*{empty}"):
        prepare_librispeech(empty, tmp_path / "out", **SMALL)
    with pytest.raises(FileNotFoundError, match="train-other-500"):
        list_flac_files(empty, subsets=["train-other-500"])


def test_misplaced_file_is_an_error(tmp_path):
    _write_flac(tmp_path / "c" / "19" / "198" / "20-198-0000.flac", 1.0, 0)
    with pytest.raises(ValueError, match="20-198-0000.flac.*speaker 20"):
        list_flac_files(tmp_path / "c")


def test_too_few_speakers_names_the_numbers(tree, tmp_path):
    numbers = r"n_dev_speakers=10 \+ n_test_speakers=15 = 25.*22 speakers"
    with pytest.raises(ValueError, match=numbers):
        prepare_librispeech(
            tree, tmp_path, **{**SMALL, "n_dev_speakers": 10, "n_test_speakers": 15}
        )
    with pytest.raises(ValueError, match="n_train_speakers=30 but only 16"):
        prepare_librispeech(tree, tmp_path, n_train_speakers=30, **SMALL)


def test_short_trial_speakers(tmp_path):
    flat = tmp_path / "flat"
    for k in range(8):
        _write_flac(flat / f"{k + 1}-50-0000.flac", 2.0, k)
    for k in range(8, 11):
        _write_flac(flat / f"{k + 1}-50-0000.flac", 0.7, k)
    common = dict(n_dev_speakers=2, n_test_speakers=4, seg_dur=0.5, trial_window=0.5,
                  n_windows=3, nontarget_per_target=1)
    # "eligible": the short speakers can only be training speakers.
    report = prepare_librispeech(flat, tmp_path / "elig", **common)
    assert report.stats["trial_eligible_speakers"] == 8
    assert report.stats["trials"]["test"]["n_speakers"] == 4
    assert report.stats["trials"]["test"]["speakers_skipped"] == 0
    # "all": short trial speakers are skipped, listed and counted.
    report = prepare_librispeech(
        flat, tmp_path / "all", trial_speaker_pool="all", seed=3, **common
    )
    skipped_spk = sum(report.stats["trials"][n]["speakers_skipped"] for n in ("dev", "test"))
    short = {"id00009", "id00010", "id00011"}
    train_spk = {r["spk_id"] for r in _rows(tmp_path / "all" / "train.csv")}
    assert skipped_spk == len(short - train_spk) > 0
    listed = (tmp_path / "all" / SKIPPED_FILE).read_text().splitlines()
    window_lines = [line for line in listed if "n_windows=3" in line]
    assert len(window_lines) == skipped_spk
    assert all(" 0.700 " in line for line in window_lines)
    assert report.stats["skipped_files"] == len(listed)
    kept = set()
    for name in ("dev", "test"):
        kept |= read_trials(tmp_path / "all" / TRIAL_FILES[name][0]).speakers
    assert not kept & short
    # Too short for every speaker: the list would be empty.
    with pytest.raises(ValueError, match="trial list would have .* speakers"):
        prepare_librispeech(flat, tmp_path / "x", trial_speaker_pool="all",
                            **{**common, "trial_window": 0.9})
    with pytest.raises(ValueError, match="n_windows=3 windows of trial_window=0.9"):
        prepare_librispeech(flat, tmp_path / "y", **{**common, "trial_window": 0.9})


def test_short_training_files_are_skipped(tmp_path):
    flat = tmp_path / "flat"
    for k in range(6):
        _write_flac(flat / f"{k + 1}-50-0000.flac", 2.0, k)
    for k in range(6, 8):
        _write_flac(flat / f"{k + 1}-50-0000.flac", 0.3, k)
    common = dict(n_dev_speakers=2, n_test_speakers=2, trial_window=0.5, n_windows=2,
                  nontarget_per_target=1)
    report = prepare_librispeech(flat, tmp_path / "out", seg_dur=0.5, **common)
    lines = (tmp_path / "out" / SKIPPED_FILE).read_text().splitlines()
    assert len(lines) == 2 == report.stats["skipped_files"]
    assert all("shorter than seg_dur=0.5" in line and " 0.300 " in line for line in lines)
    assert report.stats["train_speakers_skipped"] == 2
    assert report.stats["train_speakers"] == 2
    train_spk = {r["spk_id"] for r in _rows(tmp_path / "out" / "train.csv")}
    assert not train_spk & {"id00007", "id00008"}
    # 2 s files give one 1.5 s segment, which each speaker keeps for training.
    with pytest.raises(ValueError, match="dev.csv would be empty"):
        prepare_librispeech(flat, tmp_path / "out2", seg_dur=1.5, **common)
    with pytest.raises(ValueError, match="4 training speakers' files .* shorter than seg_dur=2.5"):
        prepare_librispeech(flat, tmp_path / "out3", seg_dur=2.5, **common)


@pytest.mark.parametrize("kind", ["corrupt", "rate", "stereo"])
def test_bad_audio_names_the_file(tmp_path, kind):
    flat = tmp_path / "flat"
    for k in range(6):
        _write_flac(flat / f"{k + 1}-50-0000.flac", 2.0, k)
    bad = flat / "7-50-0000.flac"
    if kind == "corrupt":
        bad.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    elif kind == "rate":
        _write_flac(bad, 2.0, 9, sr=8000)
    else:
        _write_flac(bad, 2.0, 9, channels=2)
    with pytest.raises(AudioError, match="7-50-0000.flac"):
        prepare_librispeech(flat, tmp_path / "out", **SMALL)


@pytest.mark.parametrize(
    "option, value",
    [
        ("n_dev_speakers", 1), ("n_test_speakers", -1), ("seg_dur", 0),
        ("trial_window", -1.0), ("n_windows", 1), ("split_ratio", (90, 0)),
        ("nontarget_per_target", 0), ("seed", -1), ("trial_speaker_pool", "some"),
        ("target_policy", "near"), ("n_train_speakers", 0),
    ],
)
def test_bad_hyperparameters_are_named(tmp_path, option, value):
    with pytest.raises(ValueError, match=option):
        prepare_librispeech(tmp_path, tmp_path / "out", **{**SMALL, option: value})


def test_too_many_nontargets(tree, tmp_path):
    with pytest.raises(ValueError, match="nontarget_per_target=100 asks for"):
        prepare_librispeech(tree, tmp_path, **{**SMALL, "nontarget_per_target": 100})


def test_foreign_wav_folder_is_not_deleted(tree, tmp_path):
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        prepare_librispeech(tree, tmp_path, **SMALL)
    assert (tmp_path / "wav" / "mine.txt").is_file()


# --------------------------------------------------------------------------
# the shared real folder: 251 speakers, one utterance each
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flat_prepared(tmp_path_factory):
    if not FLAT.is_dir():
        pytest.skip(f"real LibriSpeech folder {FLAT} absent (needs ../shared/data)")
    save = tmp_path_factory.mktemp("flat")
    # Headers only: no window audio, so nothing is decoded.
    report = prepare_librispeech(FLAT, save, n_dev_speakers=25, n_test_speakers=50,
                                 write_window_audio=False)
    return save, report


def test_shared_flat_folder(flat_prepared):
    save, report = flat_prepared
    stats = report.stats
    assert stats["n_speakers"] == stats["n_files"] == 251
    assert stats["sex_source"] == str(SHARED / "SPEAKERS.TXT")
    test = stats["trials"]["test"]
    # 50 speakers x C(4, 2) window pairs, all same-session.
    assert test["n_speakers"] == 50 and test["n_target"] == 300
    assert test["n_target_same_file"] == 300 and test["same_session_targets"] is True
    assert test["n_nontarget"] == 3000
    assert abs(stats["test_speakers_by_sex"]["F"] - stats["test_speakers_by_sex"]["M"]) <= 2
    durations = {f.name: sf.info(str(f)).duration for f in FLAT.glob("*.flac")}
    trials, rows = _trial_rows(save, "test")
    for row in rows.values():
        assert durations[Path(row["wav"]).name] >= 4 * 3.0
    train_spk = {r["spk_id"] for r in _rows(save / "train.csv")}
    dev_spk = read_trials(save / "trials_dev.txt").speakers
    assert not train_spk & trials.speakers and not train_spk & dev_spk
    assert not dev_spk & trials.speakers
    # Each speaker's single file is split by time region.
    assert stats["train_split_by_time_speakers"] == stats["train_speakers"]
    n_rows = stats["train_rows"] + stats["dev_rows"]
    assert stats["dev_rows"] == pytest.approx(0.1 * n_rows, abs=1)


def test_target_policy_all_keeps_every_pair(tree, tmp_path):
    report = prepare_librispeech(
        tree, tmp_path, target_policy="all", speakers_file=None, **SMALL
    )
    assert report.stats["sex_source"] is None
    for name in ("dev", "test"):
        stats = report.stats["trials"][name]
        # C(3, 2) pairs of each speaker's three windows, same-session or not.
        assert stats["n_target"] == 3 * SMALL[f"n_{name}_speakers"]
        assert stats["same_session_targets"] is True
