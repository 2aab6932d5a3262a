"""Whole-model evaluation: embeddings, scores, metrics, DET plot and ``results.json``.

Example
-------
>>> _safe_name("VoxCeleb1-O (cleaned)")
'VoxCeleb1-O__cleaned_'

Authors
 * speechbrain-imlkd contributors
"""

import json
import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from speechbrain_imlkd.scoring.metrics import verification_metrics
from speechbrain_imlkd.scoring.normalisation import read_cohort_csv
from speechbrain_imlkd.scoring.plots import plot_det
from speechbrain_imlkd.scoring.trial_scores import (
    DET_FILE,
    NORM_METHODS,
    RESULTS_FILE,
    score_trials,
    write_scores,
)

logger = logging.getLogger(__name__)

#: Top-level fields of ``results.json`` before any ``extra`` ones.
RESULT_FIELDS = (
    "model_dir",
    "model_key",
    "norm",
    "mean_subtraction",
    "cohort_csv",
    "cohort_size",
    "top_k",
    "chunk_seconds",
    "trials",
    "det_png",
)


def _safe_name(name):
    """A trial-list name usable in a file name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name))


def _wav_folder(data_folder):
    """``<data_folder>/wav`` when it exists, else ``data_folder`` itself."""
    data_folder = Path(data_folder)
    if not data_folder.is_dir():
        raise FileNotFoundError(f"data_folder not found: {data_folder}")
    wav = data_folder / "wav"
    return wav if wav.is_dir() else data_folder


def evaluate_model(
    model,
    data_folder,
    trials,
    output_folder,
    norm="none",
    cohort_csv=None,
    cohort_size=None,
    top_k=None,
    mean_subtraction=False,
    batch_size=16,
    chunk_seconds=None,
    cache_dir=None,
    model_key=None,
    run_opts=None,
    sample_rate=16000,
    p_targets=(0.01, 0.05),
    cohort_seed=1234,
    progress=True,
    extra=None,
) -> dict:
    """Scores a model on one or more trial lists and writes the results.

    Embeddings of the union of all lists' utterances are extracted once (and
    cached), scored by cosine similarity with the chosen normalisation, and
    written to ``output_folder``: ``scores_<list>.txt`` per list
    (``<label> <enrol> <test> <score>``), ``results.json`` and ``det.png``
    (one DET curve per list).

    Arguments
    ---------
    model : str, pathlib.Path, EncoderClassifier or callable
        An exported model folder (loaded with
        :func:`speechbrain_imlkd.embeddings.load_model`, cached under its
        :func:`~speechbrain_imlkd.embeddings.model_fingerprint`) or an encoder
        (``encode_batch(wavs, wav_lens)`` or a callable; pass ``model_key`` to
        cache its embeddings).
    data_folder : str or pathlib.Path
        Corpus root holding ``wav/`` (or the ``wav`` folder itself).
    trials : str, pathlib.Path or mapping
        A trial list, or ``{name: trial list}``.
    output_folder : str or pathlib.Path
        Where the results go (created).
    norm : str
        ``"none"``, ``"snorm"`` or ``"asnorm"``.
    cohort_csv : str or pathlib.Path or None
        Training CSV whose rows form the cohort (s-norm, AS-norm, mean
        subtraction).
    cohort_size : int or None
        Rows drawn from ``cohort_csv`` (``None``: all).
    top_k : int or None
        AS-norm top-k.
    mean_subtraction : bool
        Subtract the cohort mean embedding before scoring.
    batch_size : int
        Utterances per forward pass.
    chunk_seconds : float or None
        Full-length embeddings (``None``) or mean over windows of this length.
    cache_dir : str or pathlib.Path or None
        Embedding cache folder (default ``<output_folder>/embedding_cache``).
    model_key : str or None
        Cache key of an encoder object (ignored for a folder).
    run_opts : dict or None
        SpeechBrain run options used to load a model folder.
    sample_rate : int
        Expected sample rate of the audio.
    p_targets : sequence of float
        Priors of the reported minDCFs.
    cohort_seed : int
        Seed of the cohort draw.
    progress : bool
        Show progress bars.
    extra : mapping or None
        More top-level fields of ``results.json`` (e.g. the model's
        ``parameters``), written with the rest, after them; a name that
        ``results.json`` already uses is refused.

    Returns
    -------
    dict
        The content of ``results.json``: settings and, under ``"trials"``,
        per list ``eer`` (fraction), ``min_dcf_<p>``, thresholds, counts and
        file names, then the ``extra`` fields.

    Raises
    ------
    FileNotFoundError
        On a missing trial list, audio file, cohort CSV or model folder.
    ValueError
        On malformed trial lists (with line numbers), inconsistent
        normalisation settings, or a list without target or non-target trials.

    Example
    -------
    >>> import tempfile, pathlib, numpy as np, soundfile as sf, torch
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for spk, f0 in (("id10001", 5.0), ("id10002", 9.0)):
    ...     for clip in ("00001", "00002"):
    ...         f = root / "wav" / spk / "v" / f"{clip}.wav"
    ...         f.parent.mkdir(parents=True, exist_ok=True)
    ...         x = np.sin(np.arange(1600) / f0) + 0.01 * np.random.randn(1600)
    ...         sf.write(f, x, 16000)
    >>> _ = (root / "trials.txt").write_text(
    ...     "1 id10001/v/00001.wav id10001/v/00002.wav\\n"
    ...     "0 id10001/v/00001.wav id10002/v/00001.wav\\n")
    >>> spectrum = lambda w, l: torch.fft.rfft(w).abs()[:, :64]
    >>> res = evaluate_model(spectrum, root, {"toy": root / "trials.txt"},
    ...                      root / "out", progress=False, extra={"parameters": 0})
    >>> res["trials"]["toy"]["eer"], res["trials"]["toy"]["n_trials"], res["parameters"]
    (0.0, 2, 0)
    >>> tuple(res) == RESULT_FIELDS + ("parameters",)
    True
    >>> sorted(p.name for p in (root / "out").iterdir())
    ['det.png', 'results.json', 'scores_toy.txt']
    """
    from speechbrain_imlkd.data.trials import read_trials
    from speechbrain_imlkd.embeddings import (
        extract_embeddings,
        load_model,
        model_fingerprint,
    )

    if norm not in NORM_METHODS:
        raise ValueError(f"norm must be one of {NORM_METHODS}, got {norm!r}")
    need_cohort = norm != "none" or mean_subtraction
    if need_cohort and cohort_csv is None:
        raise ValueError(
            f"norm={norm!r}, mean_subtraction={mean_subtraction} needs cohort_csv"
        )
    if norm == "asnorm":
        if top_k is None:
            raise ValueError("norm='asnorm' needs top_k")
        if cohort_size is not None and cohort_size < top_k:
            raise ValueError(f"cohort_size={cohort_size} is smaller than top_k={top_k}")
    extra = dict(extra or {})
    taken = sorted(set(extra) & set(RESULT_FIELDS))
    if taken:
        raise ValueError(f"extra fields {taken} would replace fields of {RESULTS_FILE}")
    if not isinstance(trials, Mapping):
        trials = {Path(trials).name.split(".")[0]: trials}
    output_folder = Path(output_folder)
    wav_folder = _wav_folder(data_folder)

    # Parse everything (and fail on bad input) before any model work.
    parsed = {name: read_trials(path) for name, path in trials.items()}
    for name, tr in parsed.items():
        if tr.n_target == 0 or tr.n_nontarget == 0:
            raise ValueError(
                f"Trial list {trials[name]} has {tr.n_target} target and "
                f"{tr.n_nontarget} non-target trials; EER and minDCF need both"
            )
    cohort_rows = None
    if need_cohort:
        cohort_rows = read_cohort_csv(cohort_csv, cohort_size, cohort_seed, data_folder)
        if norm == "asnorm" and len(cohort_rows[0]) < top_k:
            raise ValueError(
                f"The cohort from {cohort_csv} has {len(cohort_rows[0])} rows, "
                f"fewer than top_k={top_k}"
            )

    model_dir = None
    if isinstance(model, (str, Path)):
        model_dir = Path(model)
        model_key = model_fingerprint(model_dir)
        model = load_model(model_dir, run_opts=run_opts)
    cache = output_folder / "embedding_cache" if cache_dir is None else Path(cache_dir)
    if model_key is None:
        logger.info("No model_key for this encoder: embeddings are not cached")
        cache = None

    utts = sorted(set().union(*(tr.utterances for tr in parsed.values())))
    common = dict(
        batch_size=batch_size,
        cache_dir=cache,
        model_key=model_key,
        chunk_seconds=chunk_seconds,
        sample_rate=sample_rate,
        progress=progress,
    )
    wavs = {u: wav_folder / u for u in utts}
    emb = extract_embeddings(model, utts, wavs, desc="Trial embeddings", **common)
    cohort = None
    if cohort_rows is not None:
        ids, cohort_wavs, segs = cohort_rows
        cohort_emb = extract_embeddings(
            model, ids, cohort_wavs, segments=segs, desc="Cohort embeddings",
            **common,
        )
        cohort = np.stack([cohort_emb[u] for u in ids])

    output_folder.mkdir(parents=True, exist_ok=True)
    results = dict(
        model_dir=None if model_dir is None else str(model_dir),
        model_key=model_key,
        norm=norm,
        mean_subtraction=bool(mean_subtraction),
        cohort_csv=None if cohort_csv is None else str(cohort_csv),
        cohort_size=None if cohort is None else int(cohort.shape[0]),
        top_k=top_k if norm == "asnorm" else None,
        chunk_seconds=chunk_seconds,
        trials={},
        det_png=DET_FILE,
    )
    curves = {}
    for name, tr in parsed.items():
        scores = score_trials(
            emb, tr.enrol, tr.test, norm, cohort, top_k, mean_subtraction
        )
        metrics = verification_metrics(scores, tr.labels, p_targets)
        scores_file = f"scores_{_safe_name(name)}.txt"
        write_scores(output_folder / scores_file, tr.labels, tr.enrol, tr.test, scores)
        results["trials"][name] = dict(
            trials_file=str(trials[name]), scores_file=scores_file, **metrics
        )
        is_t = tr.labels == 1
        curves[name] = (scores[is_t], scores[~is_t])
        logger.info(
            "%s: EER %.3f%%, %s",
            name,
            100 * metrics["eer"],
            ", ".join(
                f"minDCF({p:g}) {metrics[f'min_dcf_{p:g}']:.4f}" for p in p_targets
            ),
        )
    plot_det(curves, output_folder / DET_FILE, title=None)
    results.update(extra)
    tmp = output_folder / (RESULTS_FILE + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, output_folder / RESULTS_FILE)
    return results
