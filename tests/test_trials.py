"""Tests for the trial-list parser (``speechbrain_imlkd.data.trials``)."""

import gzip
import time
from pathlib import Path

import numpy as np
import pytest

from speechbrain_imlkd.data.trials import (
    Trials,
    read_trials,
    speaker_of,
    trial_path_to_id,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voxceleb1"

GOOD = (
    "1 id10001/vidA/00001.wav id10001/vidB/00002.wav\n"
    "0 id10001/vidA/00001.wav id10002/vidC/00001.wav\n"
    "1 id10002/vidC/00001.wav id10002/vidD/00003.wav\n"
)


def _real(name):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"real VoxCeleb1 list {path} absent (needs ../shared/data)")
    return path


def _write(tmp_path, text, name="trials.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_real_veri_test2():
    path = _real("veri_test2.txt")
    # The public copy has no newline after its last trial: it must count.
    assert not path.read_bytes().endswith(b"\n")
    trials = read_trials(path)
    assert trials.n_trials == 37611
    assert trials.n_target == 18802
    assert trials.n_nontarget == 37611 - 18802
    assert trials.labels.dtype == np.int8
    assert len(trials.speakers) == 40
    assert len(trials.utterances) == 4708
    assert trials.utterances == sorted(set(trials.utterances))
    last = path.read_text().splitlines()[-1].split()
    assert (trials.enrol[-1], trials.test[-1]) == (last[1], last[2])
    assert "37611 trials (18802 target, 18809 non-target)" in trials.summary()


def test_real_veri_test_original():
    trials = read_trials(_real("veri_test.txt"))
    assert trials.n_trials == 37720


def test_real_hard_list_gz_is_fast():
    path = _real("list_test_hard_uncleaned.txt.gz")
    t0 = time.perf_counter()
    trials = read_trials(path)
    elapsed = time.perf_counter() - t0
    assert trials.n_trials == 552536
    assert trials.n_target + trials.n_nontarget == 552536
    # Measured ~0.7 s on one core; generous for a shared machine.
    assert elapsed < 6.0, f"parsing took {elapsed:.1f} s"


def test_small_list_counts_and_order(tmp_path):
    trials = read_trials(_write(tmp_path, GOOD))
    assert trials.labels.tolist() == [1, 0, 1]
    assert trials.enrol[1] == "id10001/vidA/00001.wav"
    assert trials.test[2] == "id10002/vidD/00003.wav"
    assert trials.speakers == {"id10001", "id10002"}
    assert trials.utterances == [
        "id10001/vidA/00001.wav",
        "id10001/vidB/00002.wav",
        "id10002/vidC/00001.wav",
        "id10002/vidD/00003.wav",
    ]
    assert trials.enrol_utterances == [
        "id10001/vidA/00001.wav",
        "id10002/vidC/00001.wav",
    ]
    assert (trials.n_target, trials.n_nontarget) == (2, 1)


@pytest.mark.parametrize(
    "text",
    [
        GOOD.rstrip("\n"),  # no trailing newline
        GOOD + "\n\n   \n",  # blank trailing lines
        GOOD.replace("\n", "\r\n"),  # Windows line endings
        GOOD.replace(" ", "\t"),  # tab separated
    ],
    ids=["no-final-newline", "blank-tail", "crlf", "tabs"],
)
def test_tolerated_layouts(tmp_path, text):
    trials = read_trials(_write(tmp_path, text))
    assert trials.n_trials == 3
    assert trials.test[-1] == "id10002/vidD/00003.wav"


def test_gzip_detected_from_content(tmp_path):
    path = tmp_path / "list.txt.gz"
    path.write_bytes(gzip.compress(GOOD.encode()))
    assert read_trials(path).n_trials == 3
    # Compression is read from the bytes, not the name.
    odd = tmp_path / "list.txt"
    odd.write_bytes(gzip.compress(GOOD.encode()))
    assert read_trials(odd).n_trials == 3


@pytest.mark.parametrize(
    "bad_line, line_no, reason",
    [
        ("1 id10001/vidA/00001.wav", 2, "expected 3 fields"),
        ("1 id10001/a/1.wav id10001/b/1.wav extra", 2, "got 4"),
        ("2 id10001/vidA/00001.wav id10002/vidC/00001.wav", 2, "label must be 0 or 1"),
        ("yes id10001/vidA/00001.wav id10002/vidC/00001.wav", 2, "'yes'"),
        ("1 vidA/00001.wav id10002/vidC/00001.wav", 2, "enrol path 'vidA/00001.wav'"),
        ("1 id10001/vidA/00001.wav /abs/id10002/1.wav", 2, "test path"),
        ("1 id1001/vidA/00001.wav id10002/vidC/00001.wav", 2, "idNNNNN"),
        ("", 2, "blank line between trials"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, line_no, reason):
    lines = GOOD.splitlines()
    lines.insert(line_no - 1, bad_line)
    path = _write(tmp_path, "\n".join(lines) + "\n", name="broken_list.txt")
    with pytest.raises(ValueError) as err:
        read_trials(path)
    msg = str(err.value)
    assert "broken_list.txt" in msg
    assert f"line {line_no}" in msg
    assert reason in msg


def test_malformed_last_line_without_newline(tmp_path):
    path = _write(tmp_path, GOOD + "1 id10001/vidA/00001.wav")
    with pytest.raises(ValueError, match=r"line 4: expected 3 fields"):
        read_trials(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank"])
def test_empty_list_is_an_error(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=r"trials.txt contains no trials"):
        read_trials(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_trials(tmp_path / "nope.txt")


def test_corrupt_gzip_and_binary(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(GOOD.encode())[:20])
    with pytest.raises(ValueError, match="bad.gz: corrupt gzip"):
        read_trials(path)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="bin.txt: not UTF-8"):
        read_trials(binary)


def test_path_helpers():
    assert trial_path_to_id("id10270/x6uYqmx31kE/00001.wav") == "id10270/x6uYqmx31kE/00001"
    assert trial_path_to_id("id10270/x/00001.flac") == "id10270/x/00001.flac"
    assert speaker_of("id10270/x6uYqmx31kE/00001.wav") == "id10270"


def test_trials_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        Trials(np.array([1], dtype=np.int8), ["id10001/a/1.wav"], [])
