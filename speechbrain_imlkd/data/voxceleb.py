"""VoxCeleb1 preparation into SpeechBrain CSV files.

Modelled on SpeechBrain's ``recipes/VoxCeleb/SpeakerRec/voxceleb_prepare.py``
with stricter input checks. The corpus is in the real VoxCeleb1 layout,
``<data_folder>/wav/idNNNNN/<video>/NNNNN.wav`` (``data_folder`` may also be
the ``wav`` folder itself). :func:`prepare_voxceleb1` writes, in
``save_folder``:

* ``train.csv`` / ``dev.csv``: training files of the speakers that are NOT in
  the trial list, split by file with ``split_ratio`` (deterministic for
  ``seed``), each file cut into ``seg_dur`` second segments (or one row per
  file with ``random_segment=True``);
* ``enrol.csv`` / ``test.csv``: one row per unique enrolment / test utterance
  of the trial list, covering the whole file, ``ID`` = trial path without
  ``.wav``;
* ``skipped_short.txt``: files shorter than one segment that were left out;
* ``prepare_voxceleb1_options.json``: the options and counts of the last run,
  so that a re-run with the same options does nothing.

All CSVs have the header ``ID,duration,wav,start,stop,spk_id``; ``start`` and
``stop`` are in samples, ``duration`` is the row's length in seconds, ``wav``
is an absolute path.

Example
-------
>>> import tempfile, pathlib, numpy as np, soundfile as sf
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for spk in ("id10001", "id10002", "id10003"):
...     for clip in ("00001", "00002"):
...         f = root / "wav" / spk / "vid" / f"{clip}.wav"
...         f.parent.mkdir(parents=True, exist_ok=True)
...         sf.write(f, 0.1 * np.random.randn(16000 * 2), 16000)
>>> _ = (root / "trials.txt").write_text(
...     "1 id10003/vid/00001.wav id10003/vid/00002.wav")
>>> report = prepare_voxceleb1(root, root / "csv", root / "trials.txt",
...                            split_ratio=(75, 25), seg_dur=1.0)
>>> report.stats["train_rows"], report.stats["dev_rows"], report.stats["test_rows"]
(6, 2, 1)
>>> prepare_voxceleb1(root, root / "csv", root / "trials.txt",
...                   split_ratio=(75, 25), seg_dur=1.0).reused
True
"""

import csv
import hashlib
import json
import logging
import os
import random
import re
import shutil
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np

from speechbrain.utils.data_utils import download_file

from speechbrain_imlkd.data.audio import (
    AudioError,
    audio_info,
    check_audio_info,
    read_wav_checked,
)
from speechbrain_imlkd.data.trials import (
    _read_text,
    read_trials,
    speaker_of,
    trial_path_to_id,
)
from speechbrain_imlkd.hashing import file_digest

logger = logging.getLogger(__name__)

ALL_SPLITS = ("train", "dev", "enrol", "test")
CSV_HEADER = ["ID", "duration", "wav", "start", "stop", "spk_id"]
OPTIONS_FILE = "prepare_voxceleb1_options.json"
SKIPPED_SHORT_FILE = "skipped_short.txt"
SKIPPED_SILENT_FILE = "skipped_silent.txt"
BAD_AUDIO_FILE = "bad_audio.txt"
# Bumped when the CSV content changes for identical options.
_FORMAT_VERSION = 1
_SPEAKER_RE = re.compile(r"id\d{5}")
_REL_PATH_RE = re.compile(r"id\d{5}/[^/\s]+/[^/\s]+")
_SHOW = 5  # how many offending items an error message lists


@dataclass
class PrepareReport:
    """What :func:`prepare_voxceleb1` produced.

    Arguments
    ---------
    csv_files : dict
        Split name -> path of its CSV.
    stats : dict
        Counts of the run (files, rows, speakers, exclusions, skips); empty
        with ``skip_prep=True``.
    reused : bool
        True when nothing was written because the CSVs were up to date (or
        ``skip_prep`` was set).

    Example
    -------
    >>> PrepareReport({"train": "train.csv"}, {}, True).reused
    True
    """

    csv_files: Dict[str, Path]
    stats: Dict[str, int] = field(default_factory=dict)
    reused: bool = False


def read_durations(path: Union[str, Path]) -> Dict[str, float]:
    """Reads a duration list such as ``vox1_dev_duration.txt.gz``.

    Each line is ``idNNNNN/<video>/<clip>[.wav] <seconds>``. The result can be
    passed as ``durations`` to :func:`prepare_voxceleb1`.

    Arguments
    ---------
    path : str or pathlib.Path
        Plain or gzip-compressed text file.

    Returns
    -------
    dict
        Path (as written) -> duration in seconds.

    Raises
    ------
    ValueError
        On a malformed line or a path listed twice (file and line named).

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "dur.txt"
    >>> _ = f.write_text("id10001/a/00001 4.5\\nid10001/a/00002 x\\n")
    >>> read_durations(f)
    Traceback (most recent call last):
    ...
    ValueError: ...dur.txt, line 2: duration 'x' is not a number
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Duration list not found: {path}")
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"Duration list {path} is empty")
    durations = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        where = f"Duration list {path}, line {lineno}"
        if len(fields) != 2:
            raise ValueError(
                f"{where}: expected '<path> <seconds>', got {line!r}"
            )
        key, value = fields
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(f"{where}: duration {value!r} is not a number")
        if key in durations:
            raise ValueError(f"{where}: {key!r} listed twice")
        durations[key] = seconds
    return durations


def list_wav_files(wav_folder: Union[str, Path]) -> List[str]:
    """Lists ``idNNNNN/<video>/<clip>.wav`` files under a VoxCeleb ``wav`` folder.

    Entries that do not follow the layout are ignored, with their count and
    the first few names logged as a warning.

    Arguments
    ---------
    wav_folder : str or pathlib.Path
        The ``wav`` folder.

    Returns
    -------
    list of str
        Sorted paths relative to ``wav_folder``, with ``/`` separators.

    Example
    -------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "id10001" / "vid").mkdir(parents=True)
    >>> _ = (root / "id10001" / "vid" / "00001.wav").write_bytes(b"")
    >>> _ = (root / "README").write_text("not audio")
    >>> list_wav_files(root)
    ['id10001/vid/00001.wav']
    """
    found, ignored = [], []
    with os.scandir(wav_folder) as speakers:
        for spk in speakers:
            if not (spk.is_dir() and _SPEAKER_RE.fullmatch(spk.name)):
                ignored.append(spk.name)
                continue
            with os.scandir(spk.path) as videos:
                for vid in videos:
                    if not vid.is_dir():
                        ignored.append(f"{spk.name}/{vid.name}")
                        continue
                    with os.scandir(vid.path) as clips:
                        for clip in clips:
                            rel = f"{spk.name}/{vid.name}/{clip.name}"
                            if clip.name.endswith(".wav") and clip.is_file():
                                found.append(rel)
                            else:
                                ignored.append(rel)
    if ignored:
        logger.warning(
            "Ignored %d entries of %s outside the idNNNNN/<video>/<clip>.wav "
            "layout, e.g. %s",
            len(ignored),
            wav_folder,
            sorted(ignored)[:_SHOW],
        )
    return sorted(found)


def _resolve_wav_folder(data_folder, need_audio):
    """Finds the ``wav`` folder from ``data_folder`` (corpus root or ``wav``)."""
    root = Path(os.path.abspath(data_folder))
    if (root / "wav").is_dir():
        return root / "wav"
    if root.is_dir():
        with os.scandir(root) as it:
            if any(e.is_dir() and _SPEAKER_RE.fullmatch(e.name) for e in it):
                return root
        if need_audio:
            raise ValueError(
                f"Data folder {root} holds no VoxCeleb1 audio: expected "
                f"{root}/wav/idNNNNN/<video>/NNNNN.wav or idNNNNN folders "
                "directly inside it"
            )
    elif need_audio:
        if root.exists():
            raise NotADirectoryError(f"Data folder is not a folder: {root}")
        raise FileNotFoundError(f"Data folder not found: {root}")
    # With given durations nothing is read: only the CSV paths need a root.
    return root if root.name == "wav" else root / "wav"


def _fetch_trial_list(source, save_folder):
    """Returns a local path for the trial list, downloading a URL once."""
    source = str(source)
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https", "file"):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"verification_pairs_file not found: {source}"
            )
        return path
    dest = save_folder / (Path(parsed.path).name or "trials.txt")
    if dest.is_file():
        logger.info("Trial list %s already downloaded to %s", source, dest)
        return dest
    # A partial download must never be mistaken for the list.
    part = dest.with_name(dest.name + ".part")
    try:
        if scheme == "file":
            local = url2pathname(parsed.path)
            if not Path(local).is_file():
                raise FileNotFoundError(
                    f"verification_pairs_file not found: {source}"
                )
            shutil.copyfile(local, part)
        else:
            download_file(source, str(part), replace_existing=True)
    except (urllib.error.URLError, OSError) as e:
        if part.exists():
            part.unlink()
        if isinstance(e, FileNotFoundError):
            raise
        raise OSError(f"Could not download trial list {source}: {e}") from e
    if not part.is_file():
        raise OSError(f"Could not download trial list {source} to {part}")
    os.replace(part, dest)
    logger.info("Downloaded trial list %s to %s", source, dest)
    return dest


def _normalise_durations(durations, sample_rate):
    """Maps ``{path: seconds}`` to ``{utterance ID: samples}`` with checks."""
    frames = {}
    for key, seconds in durations.items():
        key = str(key)
        utt = trial_path_to_id(key)
        if not _REL_PATH_RE.fullmatch(utt):
            raise ValueError(
                f"durations: key {key!r} is not a path 'idNNNNN/<video>/"
                "<clip>[.wav]' relative to the wav/ folder"
            )
        seconds = float(seconds)
        if not np.isfinite(seconds) or seconds <= 0:
            raise ValueError(
                f"durations: {key!r} has invalid duration {seconds!r} "
                "(must be a positive number of seconds)"
            )
        if utt in frames:
            raise ValueError(f"durations: {utt!r} is given twice")
        frames[utt] = int(round(seconds * sample_rate))
    return frames


def _durations_fingerprint(frames):
    """Order-independent digest of the normalised durations."""
    h = hashlib.sha1()
    for utt in sorted(frames):
        h.update(f"{utt} {frames[utt]}\n".encode())
    return h.hexdigest()


def _check_options(splits, split_ratio, seg_dur, sample_rate, on_short, amp_th):
    """Validates the hyperparameters, naming the offending one."""
    splits = tuple(splits)
    unknown = [s for s in splits if s not in ALL_SPLITS]
    if unknown or not splits:
        raise ValueError(
            f"splits={splits!r}: each split must be one of {ALL_SPLITS}"
        )
    ratio = tuple(split_ratio)
    if len(ratio) != 2 or min(ratio) < 0 or sum(ratio) <= 0:
        raise ValueError(
            f"split_ratio={split_ratio!r}: expected two non-negative "
            "numbers (train, dev) with a positive sum, e.g. (90, 10)"
        )
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r}: expected a positive int")
    if not seg_dur or seg_dur <= 0 or round(seg_dur * sample_rate) < 1:
        raise ValueError(f"seg_dur={seg_dur!r}: expected a positive duration")
    if on_short not in ("skip", "error"):
        raise ValueError(f"on_short={on_short!r}: expected 'skip' or 'error'")
    if amp_th is not None and amp_th < 0:
        raise ValueError(f"amp_th={amp_th!r}: expected None or >= 0")
    return splits, ratio


def _format_list(items):
    """First few items of a list, for error messages."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:_SHOW])
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return shown + more


def _lengths(rel_paths, wav_folder, frames_by_id, sample_rate, save_folder):
    """Length in samples of each file, from ``durations`` or audio headers.

    Every file is checked before any error is raised so that one run reports
    all unusable files (first few in the message, all in ``bad_audio.txt``).
    """
    if frames_by_id is not None:
        return [frames_by_id[trial_path_to_id(p)] for p in rel_paths]
    lengths, bad = [], []
    for rel in rel_paths:
        try:
            info = audio_info(wav_folder / rel)
            check_audio_info(info, sample_rate=sample_rate, min_samples=1)
            lengths.append(info.frames)
        except (AudioError, FileNotFoundError) as e:
            bad.append(e)
            lengths.append(0)
    if bad:
        report = save_folder / BAD_AUDIO_FILE
        report.write_text("".join(f"{e}\n" for e in bad))
        if len(bad) == 1:
            raise bad[0]
        raise AudioError(
            wav_folder,
            f"{len(bad)} unusable audio files (all listed in {report}):\n  "
            + "\n  ".join(str(e) for e in bad[:_SHOW]),
        )
    return lengths


def _write_csv(path, rows):
    """Writes rows under ``CSV_HEADER`` atomically (temp file + rename).

    ``rows`` may be a generator: rows are streamed, never all held in
    memory. Returns the number of rows written.
    """
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            for row in rows:
                writer.writerow(row)
                n += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return n


def _utterance_rows(rel_paths, lengths, wav_folder, sample_rate):
    """One full-length row per utterance, ID = path without ``.wav``."""
    return [
        (
            trial_path_to_id(rel),
            f"{n / sample_rate:.6f}",
            str(wav_folder / rel),
            0,
            n,
            speaker_of(rel),
        )
        for rel, n in zip(rel_paths, lengths)
    ]


def _segment_rows(rel_paths, lengths, wav_folder, seg, sample_rate, random_segment):
    """Yields training rows: ``seg``-sample chunks, or whole files."""
    seg_seconds = f"{seg / sample_rate:.6f}"
    for rel, n in zip(rel_paths, lengths):
        utt = trial_path_to_id(rel)
        wav = str(wav_folder / rel)
        spk = speaker_of(rel)
        if random_segment:
            yield (utt, f"{n / sample_rate:.6f}", wav, 0, n, spk)
            continue
        for start in range(0, n - seg + 1, seg):
            yield (
                f"{utt}_{start}_{start + seg}",
                seg_seconds,
                wav,
                start,
                start + seg,
                spk,
            )


def _drop_silent(rows, amp_th, silent):
    """Yields the rows whose mean absolute amplitude reaches ``amp_th``.

    The IDs of the other rows are appended to the list ``silent``.
    """
    cache_wav, cache_sig = None, None
    for row in rows:
        wav, start, stop = row[2], row[3], row[4]
        if wav != cache_wav:
            # Rows of one file are consecutive: decode each file once.
            cache_sig = read_wav_checked(wav, sample_rate=None).numpy()
            cache_wav = wav
        if float(np.mean(np.abs(cache_sig[start:stop]))) < amp_th:
            silent.append(row[0])
        else:
            yield row


def prepare_voxceleb1(
    data_folder: Union[str, Path],
    save_folder: Union[str, Path],
    verification_pairs_file: Union[str, Path],
    splits: Sequence[str] = ALL_SPLITS,
    split_ratio: Sequence[float] = (90, 10),
    seg_dur: float = 3.0,
    amp_th: Optional[float] = None,
    sample_rate: int = 16000,
    skip_prep: bool = False,
    random_segment: bool = False,
    seed: int = 1234,
    on_short: str = "skip",
    durations: Optional[Mapping[str, float]] = None,
    train_speakers: Optional[Iterable[str]] = None,
) -> PrepareReport:
    """Prepares VoxCeleb1 train/dev/enrol/test CSV files.

    Speakers of the trial list never appear in ``train``/``dev``: their files
    are excluded (the count is logged and stored in the report). A re-run
    with the same options, trial list and durations does nothing; any change
    redoes the work. The audio files themselves are not fingerprinted:
    delete ``prepare_voxceleb1_options.json`` after editing the corpus in
    place.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        VoxCeleb1 root holding ``wav/idNNNNN/<video>/NNNNN.wav``, or the
        ``wav`` folder itself.
    save_folder : str or pathlib.Path
        Where the CSVs and reports are written (created if needed).
    verification_pairs_file : str or pathlib.Path
        Trial list (e.g. ``veri_test2.txt``): a local path, or an
        ``http(s)://`` / ``file://`` URL downloaded once into ``save_folder``.
    splits : sequence of str
        Any of ``"train"``, ``"dev"``, ``"enrol"``, ``"test"``.
    split_ratio : sequence of two numbers
        Train/dev proportions of the training files, split by file. The split
        is made over all training files before short files are skipped, so a
        file lands in the same split whichever ``splits`` are requested.
    seg_dur : float
        Segment length in seconds for ``train``/``dev``; files shorter than
        one segment are handled per ``on_short``.
    amp_th : float or None
        If set, train/dev rows whose mean absolute amplitude is below it are
        dropped (their IDs go to ``skipped_silent.txt``), as in SpeechBrain's
        recipe (which uses 5e-4). This decodes every training file, so it is
        off by default and cannot be combined with ``durations``.
    sample_rate : int
        Required sample rate of every file.
    skip_prep : bool
        If True, do nothing and return the expected CSV paths.
    random_segment : bool
        If True, ``train``/``dev`` get one full-length row per file (segments
        are drawn at loading time) instead of fixed chunks.
    seed : int
        Seed of the train/dev shuffle.
    on_short : str
        ``"skip"``: leave out training files shorter than ``seg_dur`` (count
        logged, list in ``skipped_short.txt``); ``"error"``: raise.
    durations : mapping or None
        ``{path relative to wav/ (with or without .wav): seconds}`` describing
        the whole corpus. When given, no audio is listed or read: the training
        files are the keys, lengths come from the values, the data folder
        only prefixes the CSV paths and need not exist, and sample rate,
        channel and readability checks are NOT made. Every trial utterance
        must be a key. Meant for preparing at full scale from
        ``vox1_dev_duration.txt.gz`` (see :func:`read_durations`).
    train_speakers : iterable of str or None
        Restrict training to these speakers. Raises if any of them is in the
        trial list or has no file.

    Returns
    -------
    PrepareReport
        CSV paths, counts and whether the previous output was reused.

    Raises
    ------
    FileNotFoundError
        Missing data folder, trial list, or trial utterances.
    ValueError
        Empty data folder, bad hyperparameter, malformed trial list, speaker
        overlap, an empty split, or (with ``on_short="error"``) short files.
    AudioError
        Unreadable, empty, multi-channel or wrong-rate audio, naming the file.

    Example
    -------
    >>> prepare_voxceleb1("/nonexistent", "/tmp/x", "/nonexistent/t.txt",
    ...                   seg_dur=-1)
    Traceback (most recent call last):
    ...
    ValueError: seg_dur=-1: expected a positive duration
    """
    splits, ratio = _check_options(
        splits, split_ratio, seg_dur, sample_rate, on_short, amp_th
    )
    if durations is not None and amp_th is not None:
        raise ValueError(
            "amp_th needs the audio but durations=... means no audio is "
            "read: set amp_th=None or durations=None"
        )
    save_folder = Path(os.path.abspath(save_folder))
    csv_files = {s: save_folder / f"{s}.csv" for s in splits}
    if skip_prep:
        logger.info("skip_prep=True: using existing CSVs in %s", save_folder)
        return PrepareReport(csv_files, {}, reused=True)
    save_folder.mkdir(parents=True, exist_ok=True)

    trial_file = _fetch_trial_list(verification_pairs_file, save_folder)
    frames_by_id = (
        _normalise_durations(durations, sample_rate)
        if durations is not None
        else None
    )
    if train_speakers is not None:
        train_speakers = sorted(set(train_speakers))
    wav_folder = _resolve_wav_folder(data_folder, need_audio=durations is None)
    options = {
        "format_version": _FORMAT_VERSION,
        "wav_folder": str(wav_folder),
        "verification_pairs_file": str(verification_pairs_file),
        "trial_list_sha1": file_digest(trial_file, "sha1"),
        "splits": list(splits),
        "split_ratio": list(ratio),
        "seg_dur": seg_dur,
        "amp_th": amp_th,
        "sample_rate": sample_rate,
        "random_segment": random_segment,
        "seed": seed,
        "on_short": on_short,
        "durations_sha1": (
            None
            if frames_by_id is None
            else _durations_fingerprint(frames_by_id)
        ),
        "train_speakers": train_speakers,
    }
    opt_file = save_folder / OPTIONS_FILE
    previous = _reuse_previous(
        opt_file, options, csv_files.values(), csv_files, "VoxCeleb1 preparation"
    )
    if previous is not None:
        return previous

    trials = read_trials(trial_file)
    stats = {"trials": trials.n_trials}
    test_speakers = trials.speakers
    if train_speakers is not None:
        overlap = sorted(set(train_speakers) & test_speakers)
        if overlap:
            raise ValueError(
                f"train_speakers overlap the trial list {trial_file}: "
                f"{len(overlap)} speakers ({_format_list(overlap)}) would be "
                "both trained on and tested"
            )

    if "enrol" in splits or "test" in splits:
        _check_trial_files(trials, wav_folder, frames_by_id, trial_file)
        for split, utts in (
            ("enrol", trials.enrol_utterances),
            ("test", trials.test_utterances),
        ):
            if split not in splits:
                continue
            lengths = _lengths(
                utts, wav_folder, frames_by_id, sample_rate, save_folder
            )
            _write_csv(
                csv_files[split],
                _utterance_rows(utts, lengths, wav_folder, sample_rate),
            )
            stats[f"{split}_rows"] = len(utts)
            logger.info("Wrote %s (%d utterances)", csv_files[split], len(utts))

    if "train" in splits or "dev" in splits:
        stats.update(
            _prepare_training(
                wav_folder=wav_folder,
                save_folder=save_folder,
                csv_files=csv_files,
                splits=splits,
                ratio=ratio,
                seg=int(round(seg_dur * sample_rate)),
                amp_th=amp_th,
                sample_rate=sample_rate,
                random_segment=random_segment,
                seed=seed,
                on_short=on_short,
                frames_by_id=frames_by_id,
                test_speakers=test_speakers,
                train_speakers=train_speakers,
            )
        )

    _save_options(opt_file, options, stats)
    logger.info("VoxCeleb1 preparation done in %s: %s", save_folder, stats)
    return PrepareReport(csv_files, stats, reused=False)


def _load_previous(opt_file):
    """Options JSON of the previous run, or None if absent or unreadable."""
    if not opt_file.is_file():
        return None
    try:
        return json.loads(opt_file.read_text())
    except (ValueError, OSError) as e:
        logger.warning("Ignoring unreadable %s (%s): preparing again", opt_file, e)
        return None


def _reuse_previous(opt_file, options, outputs, csv_files, what):
    """The previous run's report when it had these options and left its outputs.

    Otherwise removes its options file: a crash of the new run must not
    leave old options next to new outputs.

    Arguments
    ---------
    opt_file : Path
        Written by :func:`_save_options` at the end of the previous run.
    options : dict
        This run's options (compared as JSON, so tuples equal lists).
    outputs : iterable of Path
        Files the previous run must have left.
    csv_files : dict
        The files of the returned report.
    what : str
        The preparation, for the log.

    Returns
    -------
    PrepareReport or None
        ``reused=True`` with the previous counts, or None (prepare again).
    """
    previous = _load_previous(opt_file)
    if (
        previous is not None
        and previous.get("options") == json.loads(json.dumps(options))
        and all(p.is_file() for p in outputs)
    ):
        logger.info("%s in %s is up to date (same options): skipping", what, opt_file.parent)
        return PrepareReport(csv_files, previous.get("stats", {}), reused=True)
    if opt_file.exists():
        opt_file.unlink()
    return None


def _save_options(opt_file, options, stats):
    """Writes the options and counts of a finished run (atomically, last)."""
    tmp = opt_file.with_name(opt_file.name + ".tmp")
    tmp.write_text(json.dumps({"options": options, "stats": stats}, indent=2))
    os.replace(tmp, opt_file)


def _check_trial_files(trials, wav_folder, frames_by_id, trial_file):
    """Raises if any trial utterance is absent from disk (or ``durations``)."""
    if frames_by_id is None:
        missing = [
            u for u in trials.utterances if not (wav_folder / u).is_file()
        ]
        where = f"under {wav_folder}"
    else:
        missing = [
            u for u in trials.utterances if trial_path_to_id(u) not in frames_by_id
        ]
        where = "in the given durations"
    if missing:
        raise FileNotFoundError(
            f"Trial list {trial_file} names {len(missing)} of "
            f"{len(trials.utterances)} utterances that are not {where}: "
            f"{_format_list(missing)}"
        )


def _prepare_training(
    wav_folder,
    save_folder,
    csv_files,
    splits,
    ratio,
    seg,
    amp_th,
    sample_rate,
    random_segment,
    seed,
    on_short,
    frames_by_id,
    test_speakers,
    train_speakers,
):
    """Writes ``train.csv``/``dev.csv``; returns their counts."""
    if frames_by_id is None:
        all_files = list_wav_files(wav_folder)
        if not all_files:
            raise ValueError(
                f"No wav files found in {wav_folder} (expected "
                "idNNNNN/<video>/<clip>.wav)"
            )
    else:
        all_files = sorted(utt + ".wav" for utt in frames_by_id)

    files = [f for f in all_files if speaker_of(f) not in test_speakers]
    n_excluded = len(all_files) - len(files)
    excluded_spk = {speaker_of(f) for f in all_files} & test_speakers
    logger.info(
        "Excluded %d files of %d trial-list speakers from train/dev",
        n_excluded,
        len(excluded_spk),
    )
    stats = {
        "excluded_trial_speaker_files": n_excluded,
        "excluded_trial_speakers": len(excluded_spk),
    }
    if train_speakers is not None:
        available = {speaker_of(f) for f in files}
        absent = [s for s in train_speakers if s not in available]
        if absent:
            raise ValueError(
                f"train_speakers: {len(absent)} speakers have no file in "
                f"{wav_folder}: {_format_list(absent)}"
            )
        wanted = set(train_speakers)
        n_before = len(files)
        files = [f for f in files if speaker_of(f) in wanted]
        stats["excluded_not_train_speaker_files"] = n_before - len(files)
        logger.info(
            "Kept %d files of the %d given train_speakers (%d other files "
            "left out)",
            len(files),
            len(wanted),
            n_before - len(files),
        )
    if not files:
        raise ValueError(
            f"No training files left in {wav_folder} after excluding the "
            f"{len(test_speakers)} trial-list speakers"
        )

    random.Random(seed).shuffle(files)
    n_train = int(len(files) * ratio[0] / (ratio[0] + ratio[1]))
    assigned = {"train": files[:n_train], "dev": files[n_train:]}

    skipped_short = []
    silent_all = []
    for split in ("train", "dev"):
        if split not in splits:
            continue
        split_files = sorted(assigned[split])
        lengths = _lengths(
            split_files, wav_folder, frames_by_id, sample_rate, save_folder
        )
        keep_files, keep_lengths = [], []
        for rel, n in zip(split_files, lengths):
            if n < seg:
                skipped_short.append((rel, n))
            else:
                keep_files.append(rel)
                keep_lengths.append(n)
        if skipped_short and on_short == "error":
            raise ValueError(
                f"{len(skipped_short)} training files are shorter than "
                f"seg_dur={seg / sample_rate} s (on_short='error'): "
                + _format_list(
                    f"{wav_folder / r} ({n / sample_rate:.3f} s)"
                    for r, n in skipped_short
                )
            )
        rows = _segment_rows(
            keep_files, keep_lengths, wav_folder, seg, sample_rate, random_segment
        )
        if amp_th is not None:
            rows = _drop_silent(rows, amp_th, silent_all)
        n_rows = _write_csv(csv_files[split], rows)
        if n_rows == 0:
            csv_files[split].unlink()
            raise ValueError(
                f"Split {split!r} would be empty: {len(split_files)} files "
                f"assigned with split_ratio={list(ratio)}, "
                f"{len(split_files) - len(keep_files)} shorter than "
                f"seg_dur={seg / sample_rate} s"
                + ("" if amp_th is None else f", amp_th={amp_th}")
            )
        stats[f"{split}_files"] = len(keep_files)
        stats[f"{split}_rows"] = n_rows
        stats[f"{split}_speakers"] = len({speaker_of(f) for f in keep_files})
        logger.info(
            "Wrote %s (%d rows from %d files)",
            csv_files[split],
            n_rows,
            len(keep_files),
        )

    short_file = save_folder / SKIPPED_SHORT_FILE
    short_file.write_text(
        "".join(
            f"{wav_folder / r} {n / sample_rate:.6f}\n" for r, n in skipped_short
        )
    )
    stats["skipped_short"] = len(skipped_short)
    if skipped_short:
        logger.warning(
            "Skipped %d training files shorter than seg_dur=%s s (listed in %s)",
            len(skipped_short),
            seg / sample_rate,
            short_file,
        )
    silent_file = save_folder / SKIPPED_SILENT_FILE
    if amp_th is not None:
        silent_file.write_text("".join(f"{r}\n" for r in silent_all))
        stats["skipped_silent"] = len(silent_all)
        if silent_all:
            logger.warning(
                "Dropped %d train/dev segments with mean |amplitude| < %s "
                "(listed in %s)",
                len(silent_all),
                amp_th,
                silent_file,
            )
    elif silent_file.exists():
        silent_file.unlink()
    if "train" in splits and "dev" in splits:
        orphan = {speaker_of(f) for f in assigned["dev"]} - {
            speaker_of(f) for f in assigned["train"]
        }
        if orphan:
            logger.warning(
                "%d dev speakers have no train file: %s",
                len(orphan),
                _format_list(sorted(orphan)),
            )
    return stats
