"""The analysis entry point: :func:`run_analyses` on target trials of a trial list.

It loads the teacher and the students, cuts the same segments out of every
model's features, computes saliency maps
(:mod:`~speechbrain_imlkd.analysis.saliency`) and deletion / insertion
curves (:mod:`~speechbrain_imlkd.analysis.faithfulness`), and writes
``saliency_maps.png``, ``deletion_insertion.png`` and ``faithfulness.json``.

Example
-------
>>> _check_durations([1.0, 1.0])
Traceback (most recent call last):
...
ValueError: durations=[1.0, 1.0] contains duplicates

Authors
 * speechbrain-imlkd contributors 2025
"""

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_imlkd.analysis.common import TEACHER_NAME, _check_int, _duration_label
from speechbrain_imlkd.analysis.faithfulness import (
    UNITS,
    combine_curves,
    deletion_insertion_curves,
    faithfulness_table,
    plot_deletion_insertion,
)
from speechbrain_imlkd.analysis.saliency import (
    LEVELS,
    model_saliency,
    plot_saliency_maps,
    saliency_rank_correlation,
)
from speechbrain_imlkd.attribution import DEFAULT_METHOD, DEFAULT_STEPS
from speechbrain_imlkd.integrated_inputs import DEFAULT_DURATIONS

logger = get_logger(__name__)

#: Key of the results pooled over every duration in :func:`run_analyses`.
ALL_KEY = "all"
SALIENCY_PNG = "saliency_maps.png"
CURVES_PNG = "deletion_insertion.png"
RESULTS_JSON = "faithfulness.json"


def _check_durations(durations):
    """Positive, finite, distinct durations in seconds."""
    try:
        durations = [float(d) for d in durations]
    except (TypeError, ValueError) as err:
        raise ValueError(f"durations={durations!r}: expected a sequence of seconds") from err
    if not durations:
        raise ValueError("durations is empty: give at least one segment duration")
    for d in durations:
        if not math.isfinite(d) or d <= 0:
            raise ValueError(f"segment duration {d!r} must be positive and finite")
    if len(set(durations)) != len(durations):
        raise ValueError(f"durations={durations!r} contains duplicates")
    return durations


def _safe_name(name):
    """A model name usable as a folder name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name))


def _check_models(teacher_dir, student_dirs):
    """``{name: folder}``, teacher first; names checked."""
    if not isinstance(student_dirs, Mapping):
        raise ValueError(
            "student_dirs must be a {name: exported folder} mapping, got "
            f"{type(student_dirs).__name__}"
        )
    models = {TEACHER_NAME: teacher_dir}
    folders = {TEACHER_NAME}
    for name, folder in student_dirs.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"student name {name!r} must be a non-empty string")
        if name == TEACHER_NAME:
            raise ValueError(f"student name {name!r} is reserved for the teacher")
        if _safe_name(name) in folders:
            raise ValueError(f"student name {name!r} clashes with another model's folder name")
        folders.add(_safe_name(name))
        models[name] = folder
    return models


def _wav_folder(data_folder):
    """``<data_folder>/wav`` when it exists, else ``data_folder`` itself."""
    data_folder = Path(data_folder)
    if not data_folder.is_dir():
        raise FileNotFoundError(f"data_folder not found: {data_folder}")
    wav = data_folder / "wav"
    return wav if wav.is_dir() else data_folder


def _pick_trials(trials, n_segments, seed):
    """Target trials in a seeded order, one per distinct test utterance."""
    targets = np.flatnonzero(trials.labels == 1)
    if targets.size == 0:
        raise ValueError(f"{trials.source}: no target trials to analyse")
    picked, seen = [], set()
    for i in np.random.default_rng(seed).permutation(targets):
        if trials.test[i] in seen:
            continue
        seen.add(trials.test[i])
        picked.append((trials.enrol[i], trials.test[i]))
        if len(picked) == n_segments:
            break
    if len(picked) < n_segments:
        logger.info(
            "%s has %d usable target trials, fewer than n_segments=%d",
            trials.source, len(picked), n_segments,
        )
    return picked


def _frame_rate(model):
    """Feature frames per second of a loaded model (100 for a 10 ms hop)."""
    stft = getattr(model.compute_features, "compute_STFT", None)
    hop = getattr(stft, "hop_length", None)
    if not hop:
        raise ValueError(
            f"cannot tell the frame rate of {type(model.compute_features).__name__} features"
        )
    return model.sample_rate / hop


def _json_safe(value):
    """Numpy values to Python ones and NaN to None, for strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_analyses(
    teacher_dir,
    student_dirs,
    data_folder,
    trials_file,
    out_dir,
    durations=DEFAULT_DURATIONS,
    n_segments=4,
    steps=DEFAULT_STEPS,
    method=DEFAULT_METHOD,
    n_steps=20,
    offset=0.5,
    unit="frame",
    level="bins",
    seed=0,
    titles=None,
    run_opts=None,
):
    """Saliency maps and deletion / insertion faithfulness of teacher and students.

    Target trials are drawn from ``trials_file`` (seeded order, distinct
    test utterances). For every model, the enrolment utterance gives the
    reference embedding (the target speaker) and the test utterance gives
    one segment per duration, ``offset`` seconds into its features
    (computed over the whole utterance, as at test time). Each model's
    saliency (:func:`model_saliency`, target: cosine to its own reference)
    and curves (:func:`deletion_insertion_curves`) are computed on the same
    segments. A test utterance too short for a duration is skipped for that
    duration (the count is logged and stored).

    Arguments
    ---------
    teacher_dir : str or pathlib.Path
        Teacher folder in the hub layout, or a hub id.
    student_dirs : Mapping
        ``{name: exported folder}`` (e.g. ``{"imlkd": ..., "kd": ...}``);
        columns and curves follow this order, after the teacher.
    data_folder : str or pathlib.Path
        Corpus root (holding ``wav/``) or the ``wav/`` folder itself.
    trials_file : str or pathlib.Path
        Trial list (``veri_test2.txt`` format).
    out_dir : str or pathlib.Path
        Where the figures, ``faithfulness.json`` and the models' savedirs
        (``models/<name>``) go.
    durations : sequence of float
        Segment durations in seconds.
    n_segments : int
        Target trials analysed (at most; fewer if the list has fewer).
    steps : int
        IG path points.
    method : str
        IG quadrature.
    n_steps : int
        Fraction steps of the deletion / insertion curves.
    offset : float
        Start of the segments in the test utterances, in seconds.
    unit : str
        ``"frame"`` or ``"bin"``: what the curves delete and insert.
    level : str
        ``"bins"`` or ``"frames"``: how saliency agreement is measured.
    seed : int
        Seed of the trial choice and of the random control order.
    titles : Mapping or None
        ``{model: column title}`` for the saliency figure.
    run_opts : dict or None
        SpeechBrain run options for loading the models (e.g. the device).

    Returns
    -------
    dict
        The content of ``faithfulness.json``: ``settings``, ``models``,
        ``trials``, ``segments`` (per duration: tests used, ``skipped``),
        ``faithfulness`` (``{model: {"<d>s" | "all": areas}}``, see
        :func:`faithfulness_table`), ``saliency_agreement``
        (``{student: {"<d>s" | "all": {"mean", "per_segment"}}}``, Spearman
        with the teacher's maps), ``saliency_agreement_shown`` (the
        correlations annotated in the figure) and ``files``.

    Raises
    ------
    FileNotFoundError
        A model folder, the data folder, the trial list or a wav is missing.
    ValueError
        Bad arguments, no target trial, models with different features, or
        every test utterance too short for a duration.

    Example
    -------
    >>> run_analyses("teacher", {}, "data", "trials.txt", "out", durations=[1.0, -2.0])
    Traceback (most recent call last):
    ...
    ValueError: segment duration -2.0 must be positive and finite
    """
    from speechbrain_imlkd.data.audio import read_wav_checked
    from speechbrain_imlkd.data.trials import read_trials
    from speechbrain_imlkd.teacher import load_teacher

    durations = _check_durations(durations)
    n_segments = _check_int("n_segments", n_segments, 1)
    _check_int("n_steps", n_steps, 1)
    seed = _check_int("seed", seed, 0)
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: expected one of {UNITS}")
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: expected one of {LEVELS}")
    try:
        offset = float(offset)
    except (TypeError, ValueError) as err:
        raise ValueError(f"offset={offset!r}: expected seconds >= 0") from err
    if not math.isfinite(offset) or offset < 0:
        raise ValueError(f"offset={offset!r}: expected seconds >= 0")
    folders = _check_models(teacher_dir, student_dirs)
    wav_root = _wav_folder(data_folder)
    if not Path(trials_file).is_file():
        raise FileNotFoundError(f"trials_file not found: {trials_file}")
    trials = read_trials(trials_file)
    picked = _pick_trials(trials, n_segments, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    models = {}
    for name, folder in folders.items():
        savedir = out_dir / "models" / _safe_name(name)
        savedir.mkdir(parents=True, exist_ok=True)
        models[name] = load_teacher(folder, savedir, run_opts=run_opts)
    teacher = models[TEACHER_NAME]
    fps = _frame_rate(teacher)
    for name, model in models.items():
        same_rates = (model.sample_rate, model.n_mels) == (teacher.sample_rate, teacher.n_mels)
        if not same_rates or not math.isclose(_frame_rate(model), fps):
            raise ValueError(
                f"model {name!r} uses {model.n_mels} mels at {model.sample_rate} Hz, "
                f"{_frame_rate(model):g} frames/s; the teacher {teacher.n_mels} mels at "
                f"{teacher.sample_rate} Hz, {fps:g} frames/s: maps cannot be compared"
            )

    offset_frames = int(round(offset * fps))
    n_frames = {d: int(round(d * fps)) for d in durations}
    for d, n in n_frames.items():
        if n < 1:
            raise ValueError(f"segment duration {d} s is under one frame at {fps:g} frames/s")

    wavs = {
        path: read_wav_checked(wav_root / path, sample_rate=teacher.sample_rate)
        for path in sorted({p for pair in picked for p in pair})
    }
    # Whole-utterance features, normalised as at test time; segments are cut
    # from them so that every model sees the same frames.
    utt_feats = {
        name: {path: model.features(wav[None])[0] for path, wav in wavs.items()}
        for name, model in models.items()
    }
    usable = {d: [] for d in durations}
    for enrol, test in picked:
        total = utt_feats[TEACHER_NAME][test].shape[0]
        for d in durations:
            if offset_frames + n_frames[d] <= total:
                usable[d].append((enrol, test))
    segments_info = {}
    for d in durations:
        skipped = len(picked) - len(usable[d])
        if skipped:
            logger.info(
                "%d of %d test utterances shorter than %.3g s + offset %.3g s: skipped for "
                "that duration", skipped, len(picked), d, offset,
            )
        if not usable[d]:
            raise ValueError(
                f"no test utterance of the {len(picked)} picked from {trials_file} is long "
                f"enough for a {d:g} s segment at offset {offset:g} s"
            )
        segments_info[_duration_label(d)] = {
            "n_segments": len(usable[d]),
            "skipped": skipped,
            "tests": [test for _, test in usable[d]],
        }

    feats = {name: {} for name in models}
    maps = {name: {} for name in models}
    curves = {name: {} for name in models}
    for name, model in models.items():
        with torch.no_grad():
            ref = {
                enrol: model.embed(utt_feats[name][enrol][None])[0]
                for enrol in {e for pairs in usable.values() for e, _ in pairs}
            }
        for d in durations:
            start, stop = offset_frames, offset_frames + n_frames[d]
            seg = torch.stack([utt_feats[name][test][start:stop] for _, test in usable[d]])
            if name != TEACHER_NAME and seg.shape != feats[TEACHER_NAME][d].shape:
                raise ValueError(
                    f"model {name!r} gives segments of shape {tuple(seg.shape)}, the teacher "
                    f"{tuple(feats[TEACHER_NAME][d].shape)}"
                )
            reference = torch.stack([ref[enrol] for enrol, _ in usable[d]])
            feats[name][d] = seg
            maps[name][d] = model_saliency(
                model, seg, reference=reference, steps=steps, method=method
            )
            curves[name][d] = deletion_insertion_curves(
                model, seg, maps[name][d], reference, n_steps=n_steps, unit=unit, seed=seed
            )
        logger.info("Analysed %s on %d durations", name, len(durations))

    saliency_png = out_dir / SALIENCY_PNG
    shown = plot_saliency_maps(
        feats[TEACHER_NAME], maps, saliency_png, titles=titles, level=level, frames_per_second=fps
    )
    pooled = {name: combine_curves(curves[name].values()) for name in models}
    curves_png = plot_deletion_insertion(
        pooled, out_dir / CURVES_PNG,
        title=f"{sum(len(u) for u in usable.values())} segments of "
        + ", ".join(_duration_label(d) for d in durations),
    )
    faithfulness = faithfulness_table(
        {
            name: {
                **{_duration_label(d): c for d, c in curves[name].items()},
                ALL_KEY: pooled[name],
            }
            for name in models
        }
    )
    agreement = {}
    for name in models:
        if name == TEACHER_NAME:
            continue
        per_duration = {
            _duration_label(d): saliency_rank_correlation(
                maps[name][d], maps[TEACHER_NAME][d], level
            )
            for d in durations
        }
        per_duration[ALL_KEY] = np.concatenate(list(per_duration.values()))
        agreement[name] = {
            key: {
                "mean": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"),
                "per_segment": rho,
            }
            for key, rho in per_duration.items()
        }
    results = _json_safe(
        {
            "settings": {
                "durations": durations, "n_segments": n_segments, "steps": steps,
                "method": method, "n_steps": n_steps, "offset": offset, "unit": unit,
                "level": level, "seed": seed, "frames_per_second": fps,
            },
            "models": {name: str(folder) for name, folder in folders.items()},
            "trials": [{"enrol": e, "test": t} for e, t in picked],
            "segments": segments_info,
            "faithfulness": faithfulness,
            "saliency_agreement": agreement,
            "saliency_agreement_shown": shown,
            "files": {
                "saliency_maps": str(saliency_png),
                "deletion_insertion": str(curves_png),
                "results": str(out_dir / RESULTS_JSON),
            },
        }
    )
    with open(out_dir / RESULTS_JSON, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, allow_nan=False)
    return results
