"""LibriSpeech preparation: training CSVs and held-out trial lists.

Two input layouts are accepted (both may sit anywhere under ``data_folder``,
which is walked recursively):

* the real one, ``<root>/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``
  (one or several subsets, e.g. ``train-clean-100``; ``subsets=`` restricts
  the walk to some of them), and
* a flat folder of ``<spk>-<chapter>-<utt>.flac`` files, e.g. the shared
  ``train-clean-100-one-per-speaker`` (one utterance per speaker).

Other files (``*.trans.txt``, ...) are ignored; ``.flac`` files whose name is
not ``<spk>-<chapter>-<utt>.flac`` are ignored with a warning.
``SPEAKERS.TXT`` (looked for in ``data_folder`` and its parent, or given as
``speakers_file``) provides each reader's sex, used to stratify the speaker
split.

Speakers are split into disjoint **train**, **dev** and **test** sets
(deterministic for ``seed``; test is drawn first, so changing
``n_dev_speakers`` never changes the test speakers). :func:`prepare_librispeech`
writes, in ``save_folder``:

* ``train.csv`` / ``dev.csv``: the student's training rows and their
  validation split, both from the *training* speakers only, cut into
  ``seg_dur`` second rows as in :mod:`speechbrain_imlkd.data.voxceleb`. A
  speaker with several usable files is split by file; a speaker with a
  single file is split by time region (its last segments go to
  ``dev.csv``), so training and validation rows never overlap. The number of
  validation files/segments follows ``split_ratio`` over all speakers
  (largest-remainder rounding; every speaker keeps at least one training
  unit, so every ``dev.csv`` speaker is a ``train.csv`` speaker).
* ``trials_dev.txt`` + ``enrol_dev.csv`` / ``test_dev.csv`` over the dev
  speakers (to choose knobs) and ``trials_test.txt`` + ``enrol.csv`` /
  ``test.csv`` over the test speakers (to report). Trial lines are
  ``<1|0> <enrol> <test>`` as in ``veri_test2.txt``, paths relative to the
  wav root ``<save_folder>/wav``.
* ``wav/``: the trial "utterances". Every trial utterance is a
  ``trial_window`` second **window** of a file, named
  ``idNNNNN/<chapter>/<spk>-<chapter>-<utt>_w<k>.wav`` and written there as
  a lossless copy of the window, so that
  :func:`speechbrain_imlkd.scoring.evaluate_model` (which embeds
  ``<wav root>/<trial path>`` whole) consumes the lists unchanged with
  ``data_folder=save_folder``. The enrol/test CSV rows have the trial path
  without ``.wav`` as ``ID`` and point at the *original* FLAC with the
  window's ``start``/``stop`` in samples (the same audio).
* ``speakers.json``: the speaker sets (and sexes); ``skipped.txt``: files
  (and speakers) left out, one ``<path> <seconds> <reason>`` line each;
  ``prepare_librispeech_options.json``: the options and counts of the run,
  so that a re-run with the same options does nothing; ``bad_audio.txt``:
  every unusable file, when there are some (the run then fails).

Speaker labels: LibriSpeech reader IDs are integers; every output writes
them as ``idNNNNN`` (zero-padded to five digits, see :func:`speaker_label`)
because trial paths must start with such a folder for
:func:`speechbrain_imlkd.data.trials.read_trials` and
:func:`~speechbrain_imlkd.data.trials.speaker_of`. The ``spk_id`` column uses
the same label, ready for SpeechBrain's ``CategoricalEncoder``.

Windows and target trials: each dev/test speaker gets ``n_windows`` disjoint
windows, one per file first (spread round-robin over chapters), then more
per file in the longest files, evenly spread in time. Target trials are the
pairs of a speaker's windows at the most distant level available
(``target_policy="most_distant"``): across chapters when the windows span
several chapters, else across files of one chapter, else between disjoint
windows of one file. A chapter is one recording session, so the last two
kinds are **same-session** targets: the report counts each kind and sets
``same_session_targets`` per list (always true for one file per speaker).
Non-target trials are ``nontarget_per_target`` times as many random pairs
of windows of different speakers (deterministic, no pair twice).

Trial speakers must hold ``n_windows`` windows. With
``trial_speaker_pool="eligible"`` (default) dev/test speakers are drawn among
those that do, so the lists have the requested number of speakers (the
others can only be training speakers; their count is reported). With
``"all"`` they are drawn among all speakers and those too short are left
out, listed in ``skipped.txt`` and counted.

Only audio headers are read (sample rate, channels, length, checked with
:mod:`speechbrain_imlkd.data.audio`), except for the windows, which are
decoded to be written.

File listing, speaker labels and ``SPEAKERS.TXT`` live in
:mod:`speechbrain_imlkd.data.librispeech_files`, windows and trial lists in
:mod:`speechbrain_imlkd.data.librispeech_trials`; their public names are
importable from this module too.

Example
-------
>>> import tempfile, pathlib, numpy as np, soundfile as sf
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for spk in range(1, 7):
...     f = root / "flat" / f"{spk}-10-0000.flac"
...     f.parent.mkdir(exist_ok=True)
...     sf.write(f, 0.1 * np.random.randn(16000 * 2), 16000)
>>> report = prepare_librispeech(
...     root / "flat", root / "prep", n_dev_speakers=2, n_test_speakers=2,
...     seg_dur=0.5, trial_window=0.5, n_windows=2, nontarget_per_target=1)
>>> t = report.stats["trials"]["test"]
>>> t["n_target"], t["n_nontarget"], t["same_session_targets"]
(2, 2, True)
>>> from speechbrain_imlkd.data.trials import read_trials
>>> read_trials(root / "prep" / "trials_test.txt").n_trials
4
>>> prepare_librispeech(
...     root / "flat", root / "prep", n_dev_speakers=2, n_test_speakers=2,
...     seg_dur=0.5, trial_window=0.5, n_windows=2,
...     nontarget_per_target=1).reused
True
"""

import argparse
import json
import logging
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from speechbrain_imlkd.data.librispeech_files import (  # noqa: F401 (public names of this module)
    AUTO,
    MAX_READER_ID,
    SEXES,
    SPEAKER_LABEL,
    SPEAKERS_TXT,
    UNKNOWN_SEX,
    LibriFile,
    _resolve_speakers_file,
    list_flac_files,
    read_speakers_file,
    speaker_label,
)
from speechbrain_imlkd.data.librispeech_trials import (
    TRIAL_FILES,
    WAV_ROOT,
    WINDOWS_MARKER,
    _reset_wav_root,
    _speaker_windows,
    _write_trial_list,
)
from speechbrain_imlkd.data.voxceleb import (
    PrepareReport,
    _format_list,
    _lengths,
    _reuse_previous,
    _save_options,
    _write_csv,
)
from speechbrain_imlkd.hashing import file_digest

logger = logging.getLogger(__name__)

OPTIONS_FILE = "prepare_librispeech_options.json"
SKIPPED_FILE = "skipped.txt"
SPEAKER_SETS_FILE = "speakers.json"
TRAIN_CSV = "train.csv"
DEV_CSV = "dev.csv"
POOL_MODES = ("eligible", "all")
TARGET_POLICIES = ("most_distant", "all")

DEFAULT_N_DEV_SPEAKERS = 25
DEFAULT_N_TEST_SPEAKERS = 50
DEFAULT_SEG_DUR = 3.0
DEFAULT_SPLIT_RATIO = (90, 10)
DEFAULT_TRIAL_WINDOW = 3.0
DEFAULT_N_WINDOWS = 4
DEFAULT_NONTARGET_PER_TARGET = 10.0
DEFAULT_SEED = 1234
DEFAULT_SAMPLE_RATE = 16000

# Bumped when the output changes for identical options.
_FORMAT_VERSION = 1


def _check_options(
    n_dev_speakers,
    n_test_speakers,
    n_train_speakers,
    seg_dur,
    split_ratio,
    trial_window,
    n_windows,
    nontarget_per_target,
    seed,
    sample_rate,
    trial_speaker_pool,
    target_policy,
):
    """Validates the hyperparameters, naming the offending one."""
    for name, value in (
        ("n_dev_speakers", n_dev_speakers),
        ("n_test_speakers", n_test_speakers),
    ):
        if not isinstance(value, int) or value < 0 or value == 1:
            raise ValueError(
                f"{name}={value!r}: expected 0 (no trial list) or an int >= 2 "
                "(non-target trials need two speakers)"
            )
    if n_dev_speakers + n_test_speakers == 0:
        raise ValueError("n_dev_speakers=0 and n_test_speakers=0: no trial list to make")
    if n_train_speakers is not None and (
        not isinstance(n_train_speakers, int) or n_train_speakers < 1
    ):
        raise ValueError(f"n_train_speakers={n_train_speakers!r}: expected None or an int >= 1")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r}: expected a positive int")
    for name, value in (("seg_dur", seg_dur), ("trial_window", trial_window)):
        if (
            not isinstance(value, (int, float))
            or not value > 0
            or round(value * sample_rate) < 1
        ):
            raise ValueError(f"{name}={value!r}: expected a positive duration in seconds")
    ratio = tuple(split_ratio)
    if len(ratio) != 2 or not all(isinstance(r, (int, float)) and r > 0 for r in ratio):
        raise ValueError(
            f"split_ratio={split_ratio!r}: expected two positive numbers "
            "(train, dev), e.g. (90, 10)"
        )
    if not isinstance(n_windows, int) or n_windows < 2:
        raise ValueError(
            f"n_windows={n_windows!r}: expected an int >= 2 (a target trial "
            "pairs two windows of a speaker)"
        )
    if nontarget_per_target is not None and (
        not isinstance(nontarget_per_target, (int, float)) or not nontarget_per_target > 0
    ):
        raise ValueError(
            f"nontarget_per_target={nontarget_per_target!r}: expected a "
            "positive number, or None for every non-target pair"
        )
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an int >= 0")
    if trial_speaker_pool not in POOL_MODES:
        raise ValueError(
            f"trial_speaker_pool={trial_speaker_pool!r}: expected one of {POOL_MODES}"
        )
    if target_policy not in TARGET_POLICIES:
        raise ValueError(f"target_policy={target_policy!r}: expected one of {TARGET_POLICIES}")
    return ratio


def _stratified_draw(speakers, sex_of, n, rng):
    """Draws ``n`` speakers keeping the sex proportions of ``speakers``.

    Quotas per sex are proportional to the group sizes (largest remainder,
    ties by group name); within a group speakers are shuffled by ``rng``.
    """
    if n == 0:
        return []
    groups = {}
    for spk in sorted(speakers):
        groups.setdefault(sex_of.get(spk, UNKNOWN_SEX), []).append(spk)
    names = sorted(groups)
    for g in names:
        rng.shuffle(groups[g])
    total = len(speakers)
    quota = {g: n * len(groups[g]) // total for g in names}
    remainder = {g: n * len(groups[g]) % total for g in names}
    by_remainder = sorted(names, key=lambda g: (-remainder[g], g))
    for g in by_remainder[: n - sum(quota.values())]:
        quota[g] += 1
    return sorted(s for g in names for s in groups[g][: quota[g]])


def _dev_allocation(units, ratio, rng):
    """Validation units (files or segments) per speaker.

    Each speaker's share ``units * dev / (train + dev)`` is rounded down,
    then the units missing to the rounded total go to the largest remainders
    (ties in ``rng`` order). A speaker always keeps one training unit.
    """
    dev, total = ratio[1], ratio[0] + ratio[1]
    speakers = sorted(units)
    rng.shuffle(speakers)
    exact = {s: units[s] * dev / total for s in speakers}
    alloc = {s: min(int(exact[s]), units[s] - 1) for s in speakers}
    target = int(round(sum(exact.values())))
    candidates = sorted(
        (s for s in speakers if alloc[s] < units[s] - 1),
        key=lambda s: -(exact[s] - int(exact[s])),
    )
    for s in candidates[: max(0, target - sum(alloc.values()))]:
        alloc[s] += 1
    return alloc


def _segment_rows(f, abs_path, seg, sample_rate, first, last):
    """Rows of segments ``first..last-1`` of a file cut into ``seg`` samples."""
    utt = f"{f.speaker}/{f.chapter}/{f.stem}"
    seconds = f"{seg / sample_rate:.6f}"
    for k in range(first, last):
        start = k * seg
        yield (f"{utt}_{start}_{start + seg}", seconds, abs_path, start, start + seg, f.speaker)


def _sha1_or_none(path):
    """SHA-1 of a file (SPEAKERS.TXT), or None without one."""
    return None if path is None else file_digest(path, "sha1")


def _expected_outputs(save_folder, lists, write_window_audio):
    """Files whose presence a re-run requires before reusing."""
    paths = [save_folder / TRAIN_CSV, save_folder / DEV_CSV, save_folder / SPEAKER_SETS_FILE]
    for name in lists:
        paths.extend(save_folder / f for f in TRIAL_FILES[name])
    if write_window_audio:
        paths.append(save_folder / WAV_ROOT / WINDOWS_MARKER)
    return paths


def prepare_librispeech(
    data_folder: Union[str, Path],
    save_folder: Union[str, Path],
    n_dev_speakers: int = DEFAULT_N_DEV_SPEAKERS,
    n_test_speakers: int = DEFAULT_N_TEST_SPEAKERS,
    n_train_speakers: Optional[int] = None,
    seg_dur: float = DEFAULT_SEG_DUR,
    split_ratio: Sequence[float] = DEFAULT_SPLIT_RATIO,
    trial_window: float = DEFAULT_TRIAL_WINDOW,
    n_windows: int = DEFAULT_N_WINDOWS,
    nontarget_per_target: Optional[float] = DEFAULT_NONTARGET_PER_TARGET,
    seed: int = DEFAULT_SEED,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    subsets: Optional[Sequence[str]] = None,
    speakers_file: Optional[Union[str, Path]] = AUTO,
    trial_speaker_pool: str = "eligible",
    target_policy: str = "most_distant",
    write_window_audio: bool = True,
    skip_prep: bool = False,
) -> PrepareReport:
    """Prepares LibriSpeech training CSVs and dev/test trial lists.

    See the module docstring for the layout of the outputs. A re-run with
    the same options does nothing (the audio itself is not fingerprinted:
    delete ``prepare_librispeech_options.json`` after editing the corpus).
    Score a model with ``evaluate_model(model, save_folder,
    {"dev": save_folder / "trials_dev.txt"}, out)``.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        LibriSpeech root (``<subset>/<spk>/<chapter>/*.flac``), one subset
        folder, or a flat folder of ``<spk>-<chapter>-<utt>.flac`` files.
    save_folder : str or pathlib.Path
        Where the outputs go (created if needed).
    n_dev_speakers : int
        Speakers of the dev trial list (0: no dev list).
    n_test_speakers : int
        Speakers of the test trial list (0: no test list).
    n_train_speakers : int or None
        Training speakers drawn (sex-stratified) from the remaining ones;
        ``None`` uses them all.
    seg_dur : float
        Length in seconds of the ``train.csv``/``dev.csv`` rows; training
        files shorter than that go to ``skipped.txt``.
    split_ratio : sequence of two numbers
        Train/validation proportions of the training speakers' files (or of
        the segments of a single-file speaker).
    trial_window : float
        Length in seconds of a trial utterance (a window).
    n_windows : int
        Disjoint windows per dev/test speaker (at least 2).
    nontarget_per_target : float or None
        Non-target trials per target trial, drawn at random without
        repetition; ``None`` takes every non-target pair.
    seed : int
        Seed of the speaker split, the validation split, the choice of
        files for windows and the non-target draw.
    sample_rate : int
        Required sample rate of every file.
    subsets : sequence of str or None
        Sub-folders of ``data_folder`` to use (default: all).
    speakers_file : str, pathlib.Path or None
        ``SPEAKERS.TXT`` used to stratify the split by sex; ``"auto"`` looks
        in ``data_folder`` and its parent (plain random split when absent);
        ``None`` never stratifies.
    trial_speaker_pool : str
        ``"eligible"``: dev/test speakers are drawn among those whose audio
        holds ``n_windows`` windows; ``"all"``: drawn among all speakers,
        those too short being skipped (listed in ``skipped.txt``).
    target_policy : str
        ``"most_distant"``: a speaker's target pairs are only those at the
        most distant level available (cross-chapter, else cross-file, else
        same file); ``"all"``: every pair of its windows.
    write_window_audio : bool
        Write the windows under ``<save_folder>/wav`` for
        :func:`~speechbrain_imlkd.scoring.evaluate_model`; False writes the
        CSVs only (the rows point at the original FLAC files).
    skip_prep : bool
        If True, do nothing and return the expected CSV paths.

    Returns
    -------
    PrepareReport
        ``csv_files`` maps ``train``, ``dev``, ``enrol_dev``, ``test_dev``,
        ``enrol``, ``test``, ``trials_dev``, ``trials_test`` to paths (those
        that exist for the requested lists); ``stats`` holds the counts
        (also in ``prepare_librispeech_options.json``), with per trial list
        ``n_target_cross_chapter``, ``n_target_same_chapter``,
        ``n_target_same_file`` and ``same_session_targets``.

    Raises
    ------
    FileNotFoundError
        Missing data folder, subset or speakers file.
    ValueError
        No FLAC files, a bad hyperparameter, too few speakers for the
        requested splits, a split left empty by short audio, or too many
        non-target trials requested.
    AudioError
        Unreadable, empty, multi-channel or wrong-rate audio, naming the file.

    Example
    -------
    >>> prepare_librispeech("/nonexistent", "/tmp/x", n_windows=1)
    Traceback (most recent call last):
    ...
    ValueError: n_windows=1: expected an int >= 2 (a target trial pairs two windows of a speaker)
    """
    ratio = _check_options(
        n_dev_speakers,
        n_test_speakers,
        n_train_speakers,
        seg_dur,
        split_ratio,
        trial_window,
        n_windows,
        nontarget_per_target,
        seed,
        sample_rate,
        trial_speaker_pool,
        target_policy,
    )
    save_folder = Path(os.path.abspath(save_folder))
    lists = [n for n, k in (("dev", n_dev_speakers), ("test", n_test_speakers)) if k]
    csv_files = {"train": save_folder / TRAIN_CSV, "dev": save_folder / DEV_CSV}
    for name in lists:
        trials_file, enrol_csv, test_csv = TRIAL_FILES[name]
        csv_files[f"trials_{name}"] = save_folder / trials_file
        csv_files[Path(enrol_csv).stem] = save_folder / enrol_csv
        csv_files[Path(test_csv).stem] = save_folder / test_csv
    if skip_prep:
        logger.info("skip_prep=True: using existing files in %s", save_folder)
        return PrepareReport(csv_files, {}, reused=True)

    data_root = Path(os.path.abspath(data_folder))
    if not data_root.exists():
        raise FileNotFoundError(f"Data folder not found: {data_root}")
    spk_file = _resolve_speakers_file(data_root, speakers_file)
    options = {
        "format_version": _FORMAT_VERSION,
        "data_folder": str(data_root),
        "subsets": None if subsets is None else list(subsets),
        "speakers_file": None if spk_file is None else str(spk_file),
        "speakers_file_sha1": _sha1_or_none(spk_file),
        "n_dev_speakers": n_dev_speakers,
        "n_test_speakers": n_test_speakers,
        "n_train_speakers": n_train_speakers,
        "seg_dur": seg_dur,
        "split_ratio": list(ratio),
        "trial_window": trial_window,
        "n_windows": n_windows,
        "nontarget_per_target": nontarget_per_target,
        "seed": seed,
        "sample_rate": sample_rate,
        "trial_speaker_pool": trial_speaker_pool,
        "target_policy": target_policy,
        "write_window_audio": write_window_audio,
    }
    opt_file = save_folder / OPTIONS_FILE
    outputs = _expected_outputs(save_folder, lists, write_window_audio)
    previous = _reuse_previous(opt_file, options, outputs, csv_files, "LibriSpeech preparation")
    if previous is not None:
        return previous
    save_folder.mkdir(parents=True, exist_ok=True)

    files = list_flac_files(data_root, subsets)
    lengths = _lengths(
        [f.rel for f in files], data_root, None, sample_rate, save_folder
    )
    length_of = dict(zip((f.rel for f in files), lengths))
    files_of = {}
    for f in files:
        files_of.setdefault(f.speaker, []).append(f)
    sex_of = {}
    if spk_file is not None:
        by_reader = read_speakers_file(spk_file)
        sex_of = {f.speaker: by_reader[f.reader] for f in files if f.reader in by_reader}
        missing = sorted(set(files_of) - set(sex_of))
        if missing:
            logger.warning(
                "%d speakers are not in %s (sex '%s' for stratification): %s",
                len(missing), spk_file, UNKNOWN_SEX, _format_list(missing),
            )
    else:
        logger.info("No %s: speakers are split at random, not by sex", SPEAKERS_TXT)

    win = int(round(trial_window * sample_rate))
    seg = int(round(seg_dur * sample_rate))
    windows_of = {}
    for spk in sorted(files_of):
        spk_files = files_of[spk]
        windows_of[spk] = _speaker_windows(
            spk_files,
            [length_of[f.rel] for f in spk_files],
            win,
            n_windows,
            random.Random(f"{seed}:windows:{spk}"),
        )
    all_speakers = sorted(files_of)
    eligible = [s for s in all_speakers if windows_of[s] is not None]
    pool = eligible if trial_speaker_pool == "eligible" else all_speakers
    n_trial = n_dev_speakers + n_test_speakers
    if len(pool) < n_trial or len(all_speakers) - n_trial < 1:
        raise ValueError(
            f"Too few speakers in {data_root}: n_dev_speakers={n_dev_speakers}"
            f" + n_test_speakers={n_test_speakers} = {n_trial} trial speakers "
            f"and at least 1 training speaker requested, but there are "
            f"{len(all_speakers)} speakers, {len(eligible)} of which hold "
            f"n_windows={n_windows} windows of trial_window={trial_window} s"
            + (
                " (trial_speaker_pool='eligible' draws trial speakers "
                f"among those {len(eligible)})"
                if trial_speaker_pool == "eligible"
                else ""
            )
        )
    sets = {}
    sets["test"] = _stratified_draw(pool, sex_of, n_test_speakers, random.Random(f"{seed}:test"))
    rest = [s for s in pool if s not in set(sets["test"])]
    sets["dev"] = _stratified_draw(rest, sex_of, n_dev_speakers, random.Random(f"{seed}:dev"))
    taken = set(sets["test"]) | set(sets["dev"])
    train_pool = [s for s in all_speakers if s not in taken]
    if n_train_speakers is not None:
        if n_train_speakers > len(train_pool):
            raise ValueError(
                f"n_train_speakers={n_train_speakers} but only {len(train_pool)} "
                f"of the {len(all_speakers)} speakers in {data_root} are left "
                f"after {n_trial} dev/test speakers"
            )
        sets["train"] = _stratified_draw(
            train_pool, sex_of, n_train_speakers, random.Random(f"{seed}:train")
        )
    else:
        sets["train"] = train_pool

    skipped = []  # (path, samples, reason)
    stats = {
        "n_files": len(files),
        "n_speakers": len(all_speakers),
        "sex_source": None if spk_file is None else str(spk_file),
        "trial_eligible_speakers": len(eligible),
        "unused_speakers": len(train_pool) - len(sets["train"]),
    }
    stats.update(
        _prepare_training(
            sets["train"], files_of, length_of, data_root, save_folder, seg,
            sample_rate, ratio, seed, skipped,
        )
    )

    wav_root = save_folder / WAV_ROOT
    if not write_window_audio:
        if (wav_root / WINDOWS_MARKER).is_file():
            shutil.rmtree(wav_root)  # stale windows of an earlier run
    else:
        _reset_wav_root(wav_root)
        wav_root.mkdir(parents=True)
        (wav_root / WINDOWS_MARKER).write_text(
            "Trial windows written by speechbrain_imlkd.data.librispeech; "
            "the folder is deleted on the next preparation.\n"
        )
    stats["trials"] = {}
    for k, name in enumerate(lists):
        kept = {}
        for spk in sets[name]:
            if windows_of[spk] is None:
                for f in files_of[spk]:
                    skipped.append(
                        (data_root / f.rel, length_of[f.rel],
                         f"{name} speaker {spk}: audio holds fewer than "
                         f"n_windows={n_windows} windows of {trial_window} s")
                    )
            else:
                kept[spk] = windows_of[spk]
        if len(kept) < 2:
            raise ValueError(
                f"The {name} trial list would have {len(kept)} speakers: "
                f"{len(sets[name]) - len(kept)} of its {len(sets[name])} "
                f"speakers hold fewer than n_windows={n_windows} windows of "
                f"trial_window={trial_window} s (listed in "
                f"{save_folder / SKIPPED_FILE})"
            )
        stats["trials"][name] = _write_trial_list(
            name, kept, data_root, save_folder, wav_root, sample_rate,
            target_policy, nontarget_per_target,
            np.random.default_rng([seed, k]), write_window_audio,
            n_skipped=len(sets[name]) - len(kept),
        )
        sets[name] = sorted(kept)

    _write_skipped(save_folder / SKIPPED_FILE, skipped, sample_rate)
    stats["skipped_files"] = len(skipped)
    sets_out = {
        name: {"speakers": sets[name], "sex": {s: sex_of.get(s, UNKNOWN_SEX) for s in sets[name]}}
        for name in ("train", "dev", "test")
        if name == "train" or name in lists
    }
    for name, entry in sets_out.items():
        sexes = list(entry["sex"].values())
        stats[f"{name}_speakers_by_sex"] = {x: sexes.count(x) for x in sorted(set(sexes))}
    (save_folder / SPEAKER_SETS_FILE).write_text(json.dumps(sets_out, indent=2))
    _save_options(opt_file, options, stats)
    logger.info("LibriSpeech preparation done in %s: %s", save_folder, stats)
    return PrepareReport(csv_files, stats, reused=False)


def _write_skipped(path, skipped, sample_rate):
    """Writes ``skipped.txt`` (always, so an old list never lingers)."""
    path.write_text(
        "".join(f"{p} {n / sample_rate:.3f} {reason}\n" for p, n, reason in skipped)
    )
    if skipped:
        logger.warning("Skipped %d files (listed with reasons in %s)", len(skipped), path)


def _prepare_training(
    speakers, files_of, length_of, data_root, save_folder, seg, sample_rate,
    ratio, seed, skipped,
):
    """Writes ``train.csv``/``dev.csv`` for the training speakers; returns counts.

    Files shorter than ``seg`` are appended to ``skipped``. Speakers with
    several usable files are split by file, single-file speakers by
    segment (the last ones go to validation).
    """
    usable = {}
    for spk in speakers:
        for f in files_of[spk]:
            n = length_of[f.rel]
            if n < seg:
                skipped.append(
                    (data_root / f.rel, n, f"train speaker {spk}: shorter than "
                     f"seg_dur={seg / sample_rate} s")
                )
            else:
                usable.setdefault(spk, []).append(f)
    if not usable:
        raise ValueError(
            f"No training audio left: all {len(speakers)} training speakers' "
            f"files in {data_root} are shorter than seg_dur={seg / sample_rate} s"
        )
    multi = {s: len(fs) for s, fs in usable.items() if len(fs) > 1}
    single = {s: length_of[fs[0].rel] // seg for s, fs in usable.items() if len(fs) == 1}
    dev_files = _dev_allocation(multi, ratio, random.Random(f"{seed}:dev_files"))
    dev_segments = _dev_allocation(single, ratio, random.Random(f"{seed}:dev_segments"))
    train_rows, dev_rows = [], []
    for spk in sorted(usable):
        fs = usable[spk]
        if spk in multi:
            order = sorted(fs, key=lambda f: f.rel)
            random.Random(f"{seed}:dev_files:{spk}").shuffle(order)
            held = {f.rel for f in order[: dev_files[spk]]}
            for f in fs:
                n_seg = length_of[f.rel] // seg
                rows = _segment_rows(f, str(data_root / f.rel), seg, sample_rate, 0, n_seg)
                (dev_rows if f.rel in held else train_rows).extend(rows)
        else:
            f = fs[0]
            n_seg = single[spk]
            cut = n_seg - dev_segments[spk]
            path = str(data_root / f.rel)
            train_rows.extend(_segment_rows(f, path, seg, sample_rate, 0, cut))
            dev_rows.extend(_segment_rows(f, path, seg, sample_rate, cut, n_seg))
    if not dev_rows:
        raise ValueError(
            f"dev.csv would be empty: the {len(usable)} training speakers give "
            f"{len(train_rows)} segments of seg_dur={seg / sample_rate} s, too "
            f"few for split_ratio={list(ratio)} (every speaker keeps one "
            "training file or segment)"
        )
    _write_csv(save_folder / TRAIN_CSV, train_rows)
    _write_csv(save_folder / DEV_CSV, dev_rows)
    logger.info(
        "Wrote %s (%d rows) and %s (%d rows) from %d training speakers",
        save_folder / TRAIN_CSV, len(train_rows), save_folder / DEV_CSV,
        len(dev_rows), len(usable),
    )
    return {
        "train_speakers": len(usable),
        "train_speakers_skipped": len(speakers) - len(usable),
        "train_rows": len(train_rows),
        "dev_rows": len(dev_rows),
        "dev_row_speakers": len({r[5] for r in dev_rows}),
        "train_split_by_file_speakers": len(multi),
        "train_split_by_time_speakers": len(single),
    }


def main(argv=None):
    """Command line: ``python -m speechbrain_imlkd.data.librispeech DATA SAVE``.

    Arguments
    ---------
    argv : list or None
        Arguments (default ``sys.argv[1:]``); ``--help`` lists them.

    Returns
    -------
    int
        Exit status 0 (the counts are printed as JSON); bad input exits with
        status 2 and the error message.

    Example
    -------
    >>> main(["/nonexistent/libri", "/tmp/out"])
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_imlkd.data.librispeech",
        description="Prepare LibriSpeech training CSVs and dev/test trial lists.",
    )
    parser.add_argument("data_folder", help="LibriSpeech root, subset folder or flat FLAC folder")
    parser.add_argument("save_folder", help="where the CSVs, trial lists and windows go")
    parser.add_argument("--n_dev_speakers", type=int, default=DEFAULT_N_DEV_SPEAKERS)
    parser.add_argument("--n_test_speakers", type=int, default=DEFAULT_N_TEST_SPEAKERS)
    parser.add_argument("--n_train_speakers", type=int, default=None)
    parser.add_argument("--seg_dur", type=float, default=DEFAULT_SEG_DUR)
    parser.add_argument(
        "--split_ratio", type=float, nargs=2, default=DEFAULT_SPLIT_RATIO, metavar=("TRAIN", "DEV")
    )
    parser.add_argument("--trial_window", type=float, default=DEFAULT_TRIAL_WINDOW)
    parser.add_argument("--n_windows", type=int, default=DEFAULT_N_WINDOWS)
    parser.add_argument(
        "--nontarget_per_target", type=float, default=DEFAULT_NONTARGET_PER_TARGET,
        help="non-target trials per target trial; 0 means every non-target pair",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--sample_rate", type=int, default=DEFAULT_SAMPLE_RATE)
    parser.add_argument("--subsets", nargs="+", default=None)
    parser.add_argument(
        "--speakers_file", default=AUTO,
        help="SPEAKERS.TXT for sex stratification; 'auto' (default) or 'none'",
    )
    parser.add_argument("--trial_speaker_pool", choices=POOL_MODES, default="eligible")
    parser.add_argument("--target_policy", choices=TARGET_POLICIES, default="most_distant")
    parser.add_argument(
        "--no_window_audio", action="store_true",
        help="write the CSVs only, not the window WAVs evaluate_model reads",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = prepare_librispeech(
            args.data_folder,
            args.save_folder,
            n_dev_speakers=args.n_dev_speakers,
            n_test_speakers=args.n_test_speakers,
            n_train_speakers=args.n_train_speakers,
            seg_dur=args.seg_dur,
            split_ratio=tuple(args.split_ratio),
            trial_window=args.trial_window,
            n_windows=args.n_windows,
            nontarget_per_target=args.nontarget_per_target or None,
            seed=args.seed,
            sample_rate=args.sample_rate,
            subsets=args.subsets,
            speakers_file=None if args.speakers_file.lower() == "none" else args.speakers_file,
            trial_speaker_pool=args.trial_speaker_pool,
            target_policy=args.target_policy,
            write_window_audio=not args.no_window_audio,
        )
    except (OSError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    print(json.dumps({"reused": report.reused, **report.stats}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
