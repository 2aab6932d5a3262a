"""Scoring trial lists from embeddings, and score files.

:func:`score_trials` scores ``enrol``/``test`` pairs of utterances by cosine
similarity, optionally normalised; :func:`write_scores` and
:func:`read_scores` keep them as ``<label> <enrol> <test> <score>`` lines.

Example
-------
>>> emb = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
>>> score_trials(emb, ["a"], ["a"]).tolist()
[1.0]

Authors
 * speechbrain-imlkd contributors
"""

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from speechbrain_imlkd.scoring.normalisation import (
    _as_matrix,
    cohort_statistics,
    cosine_scores,
    l2_normalise,
)

#: Normalisation methods understood by :func:`score_trials`.
NORM_METHODS = ("none", "snorm", "asnorm")
#: File names written by :func:`~speechbrain_imlkd.scoring.evaluate_model` in its output folder.
RESULTS_FILE = "results.json"
DET_FILE = "det.png"


def score_trials(
    embeddings: Mapping[str, np.ndarray],
    enrol: Sequence[str],
    test: Sequence[str],
    norm="none",
    cohort=None,
    top_k=None,
    mean_subtraction=False,
):
    """Scores trials by cosine similarity, optionally normalised.

    Arguments
    ---------
    embeddings : mapping
        ``{utterance: vector}`` covering every enrol and test utterance.
    enrol : sequence of str
        Enrolment utterance of each trial.
    test : sequence of str
        Test utterance of each trial.
    norm : str
        ``"none"``, ``"snorm"`` (whole cohort) or ``"asnorm"`` (``top_k``).
    cohort : array-like or None
        ``C x D`` cohort embeddings, needed by s-norm, AS-norm and mean
        subtraction.
    top_k : int or None
        AS-norm cohort size (required by ``"asnorm"``).
    mean_subtraction : bool
        Subtract the cohort mean from every embedding before scoring.

    Returns
    -------
    numpy.ndarray
        float64 score per trial.

    Raises
    ------
    KeyError
        If an utterance has no embedding.
    ValueError
        On an unknown ``norm`` or a missing cohort / ``top_k``.

    Example
    -------
    >>> emb = {"a": [1.0, 0.0], "b": [1.0, 1.0], "c": [0.0, 1.0]}
    >>> score_trials(emb, ["a", "a"], ["b", "c"]).round(4).tolist()
    [0.7071, 0.0]
    >>> score_trials(emb, ["a"], ["b"], norm="znorm")
    Traceback (most recent call last):
    ...
    ValueError: norm must be one of ('none', 'snorm', 'asnorm'), got 'znorm'
    """
    if norm not in NORM_METHODS:
        raise ValueError(f"norm must be one of {NORM_METHODS}, got {norm!r}")
    if (norm != "none" or mean_subtraction) and cohort is None:
        raise ValueError(
            f"norm={norm!r} with mean_subtraction={mean_subtraction} needs "
            "cohort embeddings (set cohort_csv)"
        )
    if norm == "asnorm" and top_k is None:
        raise ValueError("norm='asnorm' needs top_k")
    enrol, test = list(enrol), list(test)
    if len(enrol) != len(test):
        raise ValueError(f"{len(enrol)} enrol but {len(test)} test utterances")
    utts = sorted(set(enrol).union(test))
    missing = [u for u in utts if u not in embeddings]
    if missing:
        raise KeyError(
            f"No embedding for {len(missing)} utterance(s), e.g. {missing[:5]}"
        )
    row = {u: i for i, u in enumerate(utts)}
    matrix = np.stack([np.asarray(embeddings[u]) for u in utts])
    matrix = _as_matrix(matrix, "embeddings")
    mean = None
    if cohort is not None:
        cohort = _as_matrix(cohort, "cohort")
        if mean_subtraction:
            mean = cohort.mean(0)
            cohort = cohort - mean
    matrix = l2_normalise(matrix, mean)
    ei = np.fromiter((row[u] for u in enrol), dtype=np.int64, count=len(enrol))
    ti = np.fromiter((row[u] for u in test), dtype=np.int64, count=len(test))
    scores = cosine_scores(matrix, matrix, ei, ti)
    if norm == "none":
        return scores
    # Both sides share one matrix: compute cohort statistics once per utterance.
    mu, sd = cohort_statistics(matrix, cohort, top_k if norm == "asnorm" else None)
    return 0.5 * ((scores - mu[ei]) / sd[ei] + (scores - mu[ti]) / sd[ti])



def write_scores(path, labels, enrol, test, scores):
    """Writes ``<label> <enrol> <test> <score>`` lines.

    Arguments
    ---------
    path : str or pathlib.Path
        Output file (written atomically).
    labels : array-like
        0/1 label of each trial.
    enrol : sequence of str
        Enrolment path of each trial.
    test : sequence of str
        Test path of each trial.
    scores : array-like
        Score of each trial.

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "scores.txt"
    >>> write_scores(f, [1, 0], ["a.wav", "a.wav"], ["b.wav", "c.wav"], [0.5, -0.25])
    >>> print(f.read_text(), end="")
    1 a.wav b.wav 0.500000
    0 a.wav c.wav -0.250000
    >>> read_scores(f)[1].tolist()
    [0.5, -0.25]
    """
    path = Path(path)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if not (len(labels) == len(enrol) == len(test) == len(scores)):
        raise ValueError(
            f"{path}: labels, enrol, test and scores lengths differ: "
            f"{len(labels)}, {len(enrol)}, {len(test)}, {len(scores)}"
        )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(
            f"{int(lab)} {e} {t} {s:.6f}\n"
            for lab, e, t, s in zip(labels.tolist(), enrol, test, scores.tolist())
        )
    os.replace(tmp, path)


def read_scores(path):
    """Reads a scores file written by :func:`write_scores`.

    Arguments
    ---------
    path : str or pathlib.Path
        The scores file.

    Returns
    -------
    labels : numpy.ndarray
        ``int8`` labels.
    scores : numpy.ndarray
        float64 scores.

    Raises
    ------
    ValueError
        Naming the file and line of a malformed line.

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "s.txt"
    >>> _ = f.write_text("1 a b 0.5\\n0 a c oops\\n")
    >>> read_scores(f)
    Traceback (most recent call last):
    ...
    ValueError: ...s.txt, line 2: expected '<0|1> <enrol> <test> <score>', got '0 a c oops'
    """
    labels, scores = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            try:
                if len(fields) != 4 or fields[0] not in ("0", "1"):
                    raise ValueError
                score = float(fields[3])
            except ValueError:
                raise ValueError(
                    f"Malformed scores file {path}, line {lineno}: expected "
                    f"'<0|1> <enrol> <test> <score>', got {line.rstrip()!r}"
                ) from None
            labels.append(int(fields[0]))
            scores.append(score)
    return np.array(labels, dtype=np.int8), np.array(scores, dtype=np.float64)
