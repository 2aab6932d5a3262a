"""LibriSpeech trial lists: windows of each speaker's audio, trials, window files.

Part of :mod:`speechbrain_imlkd.data.librispeech`: each dev/test speaker
gets disjoint windows of its files (one per file first, spread over
chapters), target trials pair a speaker's windows at the most distant
level available (cross-chapter, same chapter, same file), non-target trials
are drawn among pairs of windows of different speakers, and every window is
written as a lossless WAV under the wav root for
:func:`speechbrain_imlkd.scoring.evaluate_model`.

Example
-------
>>> import random
>>> from speechbrain_imlkd.data.librispeech_files import LibriFile
>>> a = LibriFile("19/198/19-198-0001.flac", "19", "198", "19-198-0001")
>>> b = LibriFile("19/227/19-227-0000.flac", "19", "227", "19-227-0000")
>>> wins = _speaker_windows([a, b], [48000, 32000], 16000, 3, random.Random(0))
>>> [(f.chapter, start) for f, start, _ in wins]
[('198', 0), ('198', 32000), ('227', 8000)]
>>> _pair_kind(a, b), _window_id(a, 1)
('cross_chapter', 'id00019/198/19-198-0001_w1')

Authors
 * speechbrain-imlkd contributors
"""

import logging
import os
import shutil

import numpy as np
import soundfile as sf

from speechbrain_imlkd.data.audio import read_wav_checked
from speechbrain_imlkd.data.voxceleb import _write_csv

# Logged under the name of the preparation driver, as before the split,
# so that one logger covers all of it.
logger = logging.getLogger("speechbrain_imlkd.data.librispeech")

WAV_ROOT = "wav"
#: Marks a wav root written by prepare_librispeech, the only kind it may delete.
WINDOWS_MARKER = ".prepare_librispeech_windows"
#: Trial list name -> (trial file, enrol CSV, test CSV).
TRIAL_FILES = {
    "dev": ("trials_dev.txt", "enrol_dev.csv", "test_dev.csv"),
    "test": ("trials_test.txt", "enrol.csv", "test.csv"),
}
# Kinds of target pair, from the most to the least distant.
_CROSS_CHAPTER, _SAME_CHAPTER, _SAME_FILE = "cross_chapter", "same_chapter", "same_file"
_PAIR_KINDS = (_CROSS_CHAPTER, _SAME_CHAPTER, _SAME_FILE)
# WAV subtypes a window copy keeps bit-exactly; anything else is stored as float.
_LOSSLESS_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "PCM_U8", "PCM_S8")


def _speaker_windows(files, lengths, win, n_windows, rng):
    """Places ``n_windows`` disjoint windows of ``win`` samples in a speaker's files.

    One window per file first, visiting chapters round-robin (files of a
    chapter in ``rng`` order), then further windows in the files with the
    most room left; the windows of a file are evenly spread over it.

    Returns
    -------
    list of (LibriFile, start, stop) or None
        None when the files cannot hold ``n_windows`` windows.
    """
    usable = [(f, n) for f, n in zip(files, lengths) if n >= win]
    if sum(n // win for _, n in usable) < n_windows:
        return None
    by_chapter = {}
    for f, n in sorted(usable, key=lambda x: x[0].rel):
        by_chapter.setdefault(f.chapter, []).append((f, n))
    queues = []
    for chapter in sorted(by_chapter):
        items = by_chapter[chapter]
        rng.shuffle(items)
        queues.append(items)
    order = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    count = [0] * len(order)
    for i in range(min(n_windows, len(order))):
        count[i] = 1
    while sum(count) < n_windows:
        room = [n // win - c for (_, n), c in zip(order, count)]
        count[room.index(max(room))] += 1
    windows = []
    for (f, n), c in zip(order, count):
        if c == 1:
            starts = [(n - win) // 2]
        else:
            # k * (n - win) // (c - 1) steps by >= win since n >= c * win.
            starts = [k * (n - win) // (c - 1) for k in range(c)]
        windows.extend((f, s, s + win) for s in starts)
    return sorted(windows, key=lambda w: (w[0].rel, w[1]))


def _window_id(f, k):
    """Trial ID (path without ``.wav``) of the ``k``-th window of a file."""
    return f"{f.speaker}/{f.chapter}/{f.stem}_w{k}"


def _pair_kind(a, b):
    """How distant two windows of one speaker are (see ``_PAIR_KINDS``)."""
    if a.chapter != b.chapter:
        return _CROSS_CHAPTER
    if a.rel != b.rel:
        return _SAME_CHAPTER
    return _SAME_FILE


def _make_trials(windows_by_spk, target_policy, nontarget_per_target, rng):
    """Target and non-target pairs over the windows of a list's speakers.

    Returns ``(trials, counts)``: ``trials`` is a list of
    ``(label, enrol index, test index)`` into the flat window list (speaker
    order, then window order).
    """
    flat, spk_index = [], []
    for s, spk in enumerate(sorted(windows_by_spk)):
        flat.extend(windows_by_spk[spk])
        spk_index.extend([s] * len(windows_by_spk[spk]))
    trials, counts = [], {k: 0 for k in _PAIR_KINDS}
    offset = 0
    for spk in sorted(windows_by_spk):
        wins = windows_by_spk[spk]
        pairs = [
            (i, j, _pair_kind(wins[i][0], wins[j][0]))
            for i in range(len(wins))
            for j in range(i + 1, len(wins))
        ]
        if target_policy == "most_distant":
            best = min(_PAIR_KINDS.index(kind) for _, _, kind in pairs)
            pairs = [p for p in pairs if _PAIR_KINDS.index(p[2]) == best]
        for i, j, kind in pairs:
            trials.append((1, offset + i, offset + j))
            counts[kind] += 1
        offset += len(wins)
    n_target = len(trials)
    spk_index = np.asarray(spk_index)
    ii, jj = np.triu_indices(len(flat), 1)
    keep = spk_index[ii] != spk_index[jj]
    ii, jj = ii[keep], jj[keep]
    available = int(ii.shape[0])
    wanted = available if nontarget_per_target is None else int(
        round(nontarget_per_target * n_target)
    )
    if wanted < 1:
        raise ValueError(
            f"nontarget_per_target={nontarget_per_target} gives no non-target "
            f"trial for {n_target} targets; EER and minDCF need both kinds"
        )
    if wanted > available:
        raise ValueError(
            f"nontarget_per_target={nontarget_per_target} asks for {wanted} "
            f"non-target trials ({n_target} targets) but the "
            f"{len(windows_by_spk)} speakers' {len(flat)} windows give only "
            f"{available} distinct non-target pairs"
        )
    chosen = np.sort(rng.choice(available, size=wanted, replace=False))
    trials.extend((0, int(ii[c]), int(jj[c])) for c in chosen)
    return flat, trials, counts

def _reset_wav_root(wav_root):
    """Removes a previous run's windows; never touches a foreign folder."""
    if not wav_root.exists():
        return
    if (wav_root / WINDOWS_MARKER).is_file():
        shutil.rmtree(wav_root)
        return
    if wav_root.is_dir() and not any(wav_root.iterdir()):
        return
    raise ValueError(
        f"{wav_root} exists and was not written by prepare_librispeech (no "
        f"{WINDOWS_MARKER}): refusing to overwrite it; choose another save_folder"
    )


def _write_window(src, start, stop, dest, sample_rate):
    """Writes samples ``start:stop`` of ``src`` to ``dest`` as WAV, losslessly."""
    data = read_wav_checked(src, sample_rate, start=start, stop=stop).numpy()
    subtype = sf.info(str(src)).subtype
    if subtype not in _LOSSLESS_SUBTYPES:
        subtype = "FLOAT"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    sf.write(str(tmp), data, sample_rate, subtype=subtype, format="WAV")
    os.replace(tmp, dest)

def _write_trial_list(
    name, windows_by_spk, data_root, save_folder, wav_root, sample_rate,
    target_policy, nontarget_per_target, rng, write_window_audio, n_skipped,
):
    """Writes one trial list, its enrol/test CSVs and window audio; returns counts."""
    trials_file, enrol_csv, test_csv = TRIAL_FILES[name]
    # Window index k counts the windows of one file in time order.
    named = {}
    for spk, wins in windows_by_spk.items():
        per_file, out = {}, []
        for f, start, stop in wins:
            k = per_file.get(f.rel, 0)
            per_file[f.rel] = k + 1
            out.append((f, start, stop, _window_id(f, k)))
        named[spk] = out
    flat, trials, counts = _make_trials(named, target_policy, nontarget_per_target, rng)
    lines = [f"{label} {flat[e][3]}.wav {flat[t][3]}.wav\n" for label, e, t in trials]
    path = save_folder / trials_file
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, path)

    def rows(indices):
        for i in sorted(indices, key=lambda i: flat[i][3]):
            f, start, stop, wid = flat[i]
            seconds = f"{(stop - start) / sample_rate:.6f}"
            yield (wid, seconds, str(data_root / f.rel), start, stop, f.speaker)

    _write_csv(save_folder / enrol_csv, rows({e for _, e, _ in trials}))
    _write_csv(save_folder / test_csv, rows({t for _, _, t in trials}))
    if write_window_audio:
        for f, start, stop, wid in flat:
            _write_window(data_root / f.rel, start, stop, wav_root / f"{wid}.wav", sample_rate)
    n_target = sum(1 for t in trials if t[0] == 1)
    stats = {
        "trials_file": trials_file,
        "enrol_csv": enrol_csv,
        "test_csv": test_csv,
        "n_speakers": len(windows_by_spk),
        "speakers_skipped": n_skipped,
        "n_windows": len(flat),
        "n_trials": len(trials),
        "n_target": n_target,
        "n_nontarget": len(trials) - n_target,
        **{f"n_target_{kind}": counts[kind] for kind in _PAIR_KINDS},
        "same_session_targets": counts[_SAME_CHAPTER] + counts[_SAME_FILE] > 0,
    }
    logger.info(
        "Wrote %s: %d trials (%d target: %d cross-chapter, %d same-chapter, "
        "%d same-file) over %d speakers",
        path, len(trials), n_target, counts[_CROSS_CHAPTER],
        counts[_SAME_CHAPTER], counts[_SAME_FILE], len(windows_by_spk),
    )
    return stats
