"""Speaker-verification scoring: EER, minDCF, DET curves, cosine, s-norm, AS-norm.

All error rates come from ONE sort of the pooled scores, so that the 552,536
trials of VoxCeleb1-H are scored in a fraction of a second with O(N) memory,
where ``speechbrain.utils.metric_stats.minDCF`` builds a thresholds x N matrix
(about 18 GB on the 37,611 trials of VoxCeleb1-O).

Conventions (those of ``speechbrain.utils.metric_stats``)
---------------------------------------------------------
* A trial is accepted when ``score > threshold``: at threshold ``t`` the miss
  rate is ``#(target <= t) / #target`` and the false-alarm rate
  ``#(non-target > t) / #non-target``.
* Candidate thresholds are the distinct scores (SpeechBrain also tries the
  midpoints between consecutive distinct scores, which give exactly the same
  rates). Equal scores are one group: no threshold ever splits them.
* EER: the operating point minimising ``|P_fa - P_miss|`` (first one, i.e.
  lowest threshold, on ties); the EER is ``(P_fa + P_miss) / 2`` there.
  SpeechBrain compares rates rounded to float32, and sequentially; this
  module resolves near-ties exactly as it does (so that tiny trial lists,
  where exact ties are common, give the same operating point), while the
  returned values are exact (float64) rates at that point.
* minDCF differs from SpeechBrain's in two documented ways:

  1. it is **normalised**: ``DCF = (c_miss p_target P_miss + c_fa (1 -
     p_target) P_fa) / min(c_miss p_target, c_fa (1 - p_target))``, the usual
     VoxCeleb/NIST figure; SpeechBrain returns the unnormalised cost, i.e.
     ours times ``min(c_miss p_target, c_fa (1 - p_target))``;
  2. the "accept everything" operating point (``P_miss = 0, P_fa = 1``,
     threshold ``-inf``) is a candidate, as in NIST's and Kaldi's tools.
     SpeechBrain omits it; it can only win when ``c_fa (1 - p_target) <
     c_miss p_target`` and no threshold beats accepting everything, never
     at ``p_target`` 0.01 or 0.05 with unit costs.
* S-norm / AS-norm use the unbiased standard deviation (``ddof=1``) of the
  cohort scores, as ``torch.std`` in SpeechBrain's verification recipe.

Example
-------
>>> import numpy as np
>>> tgt = np.array([0.9, 0.8, 0.7, 0.3])
>>> non = np.array([0.4, 0.2, 0.1, 0.0, -0.2])
>>> eer, thr = compute_eer(tgt, non)
>>> round(eer, 4), thr  # at 0.3: 1/4 targets missed, 1/5 non-targets accepted
(0.225, 0.3)
>>> metrics = verification_metrics(np.r_[tgt, non], np.r_[np.ones(4), np.zeros(5)])
>>> metrics["n_target"], metrics["n_nontarget"], round(metrics["min_dcf_0.01"], 4)
(4, 5, 0.25)
"""

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: Normalisation methods understood by :func:`score_trials`.
NORM_METHODS = ("none", "snorm", "asnorm")


# ---------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------
def _to_numpy(x):
    """Returns a numpy view of a torch tensor, array or sequence."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, no import
        x = x.detach().cpu()
        if not x.dtype.is_floating_point or x.dtype in _TORCH_HALF():
            x = x.double()
        x = x.numpy()
    return np.asarray(x)


def _TORCH_HALF():
    """The torch dtypes numpy cannot hold (imported lazily)."""
    import torch

    return (torch.float16, torch.bfloat16)


def _as_scores(x, name):
    """Converts scores to a finite, non-empty 1-D float array.

    Float32 input stays float32 (so thresholds are the very values a
    float32 pipeline produced); anything else becomes float64.
    """
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of scores, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(
            f"{name} is empty: EER and minDCF need at least one target and "
            "one non-target trial"
        )
    if arr.dtype != np.float32:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be numeric, got {arr.dtype}") from e
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite score(s) "
            f"(NaN or inf); first at index {first}: {arr[first]}"
        )
    return arr


def _check_costs(p_target, c_miss, c_fa):
    """Validates the DCF parameters."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError(
            f"c_miss and c_fa must be positive, got c_miss={c_miss}, c_fa={c_fa}"
        )


# ---------------------------------------------------------------------------
# One sort -> every operating point
# ---------------------------------------------------------------------------
@dataclass
class OperatingPoints:
    """Miss and false-alarm counts at every distinct score, from one sort.

    Operating point ``j`` uses threshold ``thresholds[j]``: targets scoring
    ``<= thresholds[j]`` are missed, non-targets scoring above it are false
    alarms. The last point rejects every trial.

    Arguments
    ---------
    thresholds : numpy.ndarray
        Distinct scores, ascending (``m`` values).
    n_miss : numpy.ndarray
        ``int64``, number of targets scoring ``<= thresholds[j]``.
    n_fa : numpy.ndarray
        ``int64``, number of non-targets scoring ``> thresholds[j]``.
    n_target : int
        Number of target trials.
    n_nontarget : int
        Number of non-target trials.

    Example
    -------
    >>> op = operating_points([0.5, 0.9], [0.1, 0.5])
    >>> op.thresholds.tolist(), op.n_miss.tolist(), op.n_fa.tolist()
    ([0.1, 0.5, 0.9], [0, 1, 2], [1, 0, 0])
    """

    thresholds: np.ndarray
    n_miss: np.ndarray
    n_fa: np.ndarray
    n_target: int
    n_nontarget: int

    @property
    def p_miss(self):
        """Exact (float64) miss rates."""
        return self.n_miss / self.n_target

    @property
    def p_fa(self):
        """Exact (float64) false-alarm rates."""
        return self.n_fa / self.n_nontarget

    def _rates32(self):
        """Rates rounded to float32 the way SpeechBrain computes them."""
        frr = self.n_miss.astype(np.float32) / np.float32(self.n_target)
        far = self.n_fa.astype(np.float32) / np.float32(self.n_nontarget)
        return frr, far


def operating_points(target_scores, nontarget_scores) -> OperatingPoints:
    """Computes miss / false-alarm counts at all distinct scores with one sort.

    Arguments
    ---------
    target_scores : array-like or torch.Tensor
        1-D scores of same-speaker trials.
    nontarget_scores : array-like or torch.Tensor
        1-D scores of different-speaker trials.

    Returns
    -------
    OperatingPoints
        Counts at every distinct score (ties grouped).

    Raises
    ------
    ValueError
        If a set is empty, not 1-D, or holds NaN or inf.

    Example
    -------
    >>> operating_points([1.0, 1.0], [1.0]).n_miss.tolist()
    [2]
    >>> operating_points([], [0.0])
    Traceback (most recent call last):
    ...
    ValueError: target_scores is empty: EER and minDCF need at least one target and one non-target trial
    """
    tgt = _as_scores(target_scores, "target_scores")
    non = _as_scores(nontarget_scores, "nontarget_scores")
    dtype = np.result_type(tgt.dtype, non.dtype)
    n_t, n_n = tgt.size, non.size
    scores = np.concatenate([tgt.astype(dtype), non.astype(dtype)])
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    del scores
    is_target = order < n_t
    del order
    # Last position of each group of equal scores: a threshold sits there.
    last = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    last = np.append(last, sorted_scores.size - 1)
    cum_target = np.cumsum(is_target, dtype=np.int64)
    n_miss = cum_target[last]
    n_fa = n_n - ((last + 1) - n_miss)
    return OperatingPoints(
        thresholds=sorted_scores[last],
        n_miss=n_miss,
        n_fa=n_fa,
        n_target=n_t,
        n_nontarget=n_n,
    )


def _eer_from(op: OperatingPoints) -> Tuple[float, float]:
    """EER and threshold, selecting the point as SpeechBrain's loop does.

    SpeechBrain walks the sorted list ``[u0, (u0+u1)/2, u1, ...]`` of
    distinct scores and midpoints and keeps index ``i`` when the float32
    ``|FAR - FRR|`` there is strictly below the float64 value of the kept one.
    ``|FAR - FRR|`` is V-shaped along the list, so only the few indices near
    its minimum can ever be kept: that walk is replayed exactly on them.
    """
    frr32, far32 = op._rates32()
    d32 = np.abs(far32 - frr32)
    d64 = np.abs(far32.astype(np.float64) - frr32.astype(np.float64))
    u = op.thresholds
    m = u.size
    g = d32.min()
    # A few float32 ulps cover every index whose float32 gap could compete.
    cand = np.flatnonzero(d32 <= g + 8 * np.spacing(g))
    start = max(int(cand[0]) - 1, 0)
    stop = min(2 * int(cand[-1]) + 1, 2 * m - 2)

    def point_of(i):
        """(operating point, threshold value) of list index ``i``."""
        j = i // 2
        if i % 2 == 0:
            return j, u[j]
        mid = (u[j] + u[j + 1]) / u.dtype.type(2)
        # A midpoint that rounds onto the next score takes its rates.
        return (j + 1 if mid >= u[j + 1] else j), mid

    best_j, best_t = point_of(2 * start)
    for i in range(2 * start + 1, stop + 1):
        j, t = point_of(i)
        if d32[j] < d64[best_j]:
            best_j, best_t = j, t
    eer = (op.n_fa[best_j] / op.n_nontarget + op.n_miss[best_j] / op.n_target) / 2
    return float(eer), float(best_t)


def _min_dcf_from(op: OperatingPoints, p_target, c_miss, c_fa):
    """Normalised minDCF and threshold (first minimum, as ``torch.min``)."""
    _check_costs(p_target, c_miss, c_fa)
    frr32, far32 = op._rates32()
    # Select in float32 with SpeechBrain's operation order, so near-ties
    # pick the same threshold; report the exact float64 cost there.
    c32 = (np.float32(c_miss) * frr32) * np.float32(p_target) + (
        np.float32(c_fa) * far32
    ) * np.float32(1 - p_target)
    j = int(np.argmin(c32))
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    dcf = (
        c_miss * p_target * op.n_miss[j] / op.n_target
        + c_fa * (1 - p_target) * op.n_fa[j] / op.n_nontarget
    ) / c_def
    threshold = float(op.thresholds[j])
    accept_all = c_fa * (1 - p_target) / c_def
    if accept_all < dcf:
        dcf, threshold = accept_all, -math.inf
    return float(dcf), threshold


def compute_eer(target_scores, nontarget_scores) -> Tuple[float, float]:
    """Equal error rate, from one sort of the scores.

    Same definition as ``speechbrain.utils.metric_stats.EER`` (see the module
    docstring), in O(N log N) time and O(N) memory.

    Arguments
    ---------
    target_scores : array-like or torch.Tensor
        1-D scores of same-speaker trials.
    nontarget_scores : array-like or torch.Tensor
        1-D scores of different-speaker trials.

    Returns
    -------
    eer : float
        The equal error rate, a fraction in [0, 1].
    threshold : float
        The threshold of that operating point (accept when ``score > threshold``).

    Raises
    ------
    ValueError
        If a set is empty or holds NaN or inf.

    Example
    -------
    >>> compute_eer([0.6, 0.7, 0.8, 0.5], [0.4, 0.3, 0.2, 0.1])
    (0.0, 0.4)
    >>> compute_eer([0.5], [float("nan")])
    Traceback (most recent call last):
    ...
    ValueError: nontarget_scores contains 1 non-finite score(s) (NaN or inf); first at index 0: nan
    """
    return _eer_from(operating_points(target_scores, nontarget_scores))


def compute_min_dcf(
    target_scores, nontarget_scores, p_target=0.01, c_miss=1.0, c_fa=1.0
) -> Tuple[float, float]:
    """Normalised minimum detection cost, from one sort of the scores.

    ``min_t (c_miss p_target P_miss(t) + c_fa (1 - p_target) P_fa(t)) /
    min(c_miss p_target, c_fa (1 - p_target))``; SpeechBrain's ``minDCF``
    returns the unnormalised numerator (see the module docstring).

    Arguments
    ---------
    target_scores : array-like or torch.Tensor
        1-D scores of same-speaker trials.
    nontarget_scores : array-like or torch.Tensor
        1-D scores of different-speaker trials.
    p_target : float
        Prior probability of a target trial.
    c_miss : float
        Cost of a miss.
    c_fa : float
        Cost of a false alarm.

    Returns
    -------
    min_dcf : float
        The normalised minDCF (1.0 is the cost of the best trivial system).
    threshold : float
        The threshold reaching it (accept when ``score > threshold``;
        ``-inf`` when accepting everything is best).

    Raises
    ------
    ValueError
        On empty or non-finite scores, or costs outside their ranges.

    Example
    -------
    >>> compute_min_dcf([0.6, 0.7, 0.8, 0.5], [0.4, 0.3, 0.2, 0.1])
    (0.0, 0.4)
    >>> compute_min_dcf([0.5, 0.5], [0.5], p_target=0.05)
    (1.0, 0.5)
    """
    return _min_dcf_from(
        operating_points(target_scores, nontarget_scores), p_target, c_miss, c_fa
    )


def det_curve(target_scores, nontarget_scores):
    """Miss and false-alarm rates at every distinct threshold (one sort).

    Arguments
    ---------
    target_scores : array-like or torch.Tensor
        1-D scores of same-speaker trials.
    nontarget_scores : array-like or torch.Tensor
        1-D scores of different-speaker trials.

    Returns
    -------
    p_miss : numpy.ndarray
        Miss rates, non-decreasing, from 0 (accept all) to 1 (reject all).
    p_fa : numpy.ndarray
        False-alarm rates, non-increasing, from 1 to 0.
    thresholds : numpy.ndarray
        ``-inf`` (accept all) then the distinct scores, ascending.

    Example
    -------
    >>> p_miss, p_fa, thr = det_curve([0.5, 0.9], [0.1, 0.5])
    >>> p_miss.tolist(), p_fa.tolist(), thr.tolist()
    ([0.0, 0.0, 0.5, 1.0], [1.0, 0.5, 0.0, 0.0], [-inf, 0.1, 0.5, 0.9])
    """
    op = operating_points(target_scores, nontarget_scores)
    p_miss = np.concatenate([[0.0], op.p_miss])
    p_fa = np.concatenate([[1.0], op.p_fa])
    thresholds = np.concatenate([[-np.inf], op.thresholds.astype(np.float64)])
    return p_miss, p_fa, thresholds


def _split_by_label(scores, labels):
    """Checks scores/labels and returns (target, non-target) scores."""
    s = _to_numpy(scores)
    lab = _to_numpy(labels)
    if s.ndim != 1 or lab.ndim != 1 or s.shape != lab.shape:
        raise ValueError(
            "scores and labels must be 1-D and of equal length, got shapes "
            f"{s.shape} and {lab.shape}"
        )
    bad = ~np.isin(lab, (0, 1))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"labels must be 0 or 1; {int(bad.sum())} are not, first at "
            f"index {first}: {lab[first]!r}"
        )
    is_t = lab.astype(bool)
    return s[is_t], s[~is_t]


def verification_metrics(scores, labels, p_targets=(0.01, 0.05)) -> dict:
    """EER and minDCF at several priors, from a single sort.

    Arguments
    ---------
    scores : array-like or torch.Tensor
        1-D trial scores.
    labels : array-like or torch.Tensor
        1-D, 1 for target trials and 0 for non-target trials.
    p_targets : sequence of float
        Priors at which to report ``min_dcf_<p>`` (with unit costs).

    Returns
    -------
    dict
        ``eer`` (fraction), ``eer_threshold``, ``min_dcf_<p>`` and
        ``min_dcf_<p>_threshold`` for each prior, ``n_trials``, ``n_target``,
        ``n_nontarget``.

    Raises
    ------
    ValueError
        On mismatched lengths, labels other than 0/1, no target or no
        non-target trial, or non-finite scores.

    Example
    -------
    >>> m = verification_metrics([0.9, 0.1, 0.8, 0.2], [1, 0, 1, 0])
    >>> m["eer"], m["min_dcf_0.01"], m["min_dcf_0.05"], m["n_trials"]
    (0.0, 0.0, 0.0, 4)
    >>> verification_metrics([0.9, 0.8], [1, 1])
    Traceback (most recent call last):
    ...
    ValueError: nontarget_scores is empty: EER and minDCF need at least one target and one non-target trial
    """
    target, nontarget = _split_by_label(scores, labels)
    op = operating_points(target, nontarget)
    eer, eer_thr = _eer_from(op)
    out = dict(eer=eer, eer_threshold=eer_thr)
    for p in p_targets:
        dcf, thr = _min_dcf_from(op, p, 1.0, 1.0)
        out[f"min_dcf_{p:g}"] = dcf
        out[f"min_dcf_{p:g}_threshold"] = thr
    out.update(
        n_trials=op.n_target + op.n_nontarget,
        n_target=op.n_target,
        n_nontarget=op.n_nontarget,
    )
    return out


# ---------------------------------------------------------------------------
# Cosine scoring and score normalisation
# ---------------------------------------------------------------------------
def _as_matrix(x, name):
    """2-D finite float32 array of embeddings (rows)."""
    arr = _to_numpy(x)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty N x D matrix, got shape {arr.shape}"
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def l2_normalise(x, mean=None):
    """Subtracts an optional mean vector, then scales rows to unit norm.

    Arguments
    ---------
    x : array-like
        ``N x D`` embeddings.
    mean : array-like or None
        ``D`` vector subtracted first (mean subtraction).

    Returns
    -------
    numpy.ndarray
        ``N x D`` float32 unit vectors (a zero row stays zero).

    Example
    -------
    >>> x = l2_normalise([[4.0, 5.0], [1.0, 1.0]], mean=[1.0, 1.0])
    >>> x.astype(float).round(4).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    x = np.array(x, dtype=np.float32)
    if mean is not None:
        x -= np.asarray(mean, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def cosine_scores(
    enrol_emb, test_emb, enrol_index=None, test_index=None, chunk_size=65536
):
    """Cosine similarity of enrol/test embedding pairs, in chunks of trials.

    Arguments
    ---------
    enrol_emb : array-like
        ``E x D`` enrolment embeddings.
    test_emb : array-like
        ``T x D`` test embeddings.
    enrol_index : array-like or None
        Trial -> row of ``enrol_emb``; ``None`` pairs rows one to one.
    test_index : array-like or None
        Trial -> row of ``test_emb``; ``None`` pairs rows one to one.
    chunk_size : int
        Trials per chunk (bounds the gathered ``chunk x D`` copies).

    Returns
    -------
    numpy.ndarray
        float64 score per trial.

    Example
    -------
    >>> s = cosine_scores([[1.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [1.0, 1.0]])
    >>> s.round(4).tolist()
    [1.0, 0.7071]
    >>> cosine_scores([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], [0, 0]).tolist()
    [1.0, 0.0]
    """
    e = l2_normalise(_as_matrix(enrol_emb, "enrol_emb"))
    t = l2_normalise(_as_matrix(test_emb, "test_emb"))
    ei, ti = _trial_indices(e, t, enrol_index, test_index)
    out = np.empty(ei.size, dtype=np.float64)
    for s in range(0, ei.size, chunk_size):
        sl = slice(s, s + chunk_size)
        out[sl] = np.einsum("ij,ij->i", e[ei[sl]], t[ti[sl]])
    return out


def _trial_indices(e, t, enrol_index, test_index):
    """Validated trial -> row index arrays."""
    ei = np.arange(e.shape[0]) if enrol_index is None else enrol_index
    ti = np.arange(t.shape[0]) if test_index is None else test_index
    ei, ti = np.asarray(ei, dtype=np.int64), np.asarray(ti, dtype=np.int64)
    if ei.shape != ti.shape or ei.ndim != 1:
        raise ValueError(
            f"enrol and test sides give {ei.shape} and {ti.shape} trials; "
            "they must match (pass enrol_index/test_index to reuse rows)"
        )
    for name, idx, n in (("enrol", ei, e.shape[0]), ("test", ti, t.shape[0])):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{name}_index out of range for {n} embeddings")
    if e.shape[1] != t.shape[1]:
        raise ValueError(
            f"Embedding sizes differ: enrol {e.shape[1]}, test {t.shape[1]}"
        )
    return ei, ti


def cohort_statistics(
    embeddings, cohort, top_k=None, chunk_size=None, max_chunk_bytes=64 << 20
):
    """Mean and standard deviation of each embedding's cosine scores to a cohort.

    Arguments
    ---------
    embeddings : array-like
        ``U x D`` embeddings (one per unique utterance).
    cohort : array-like
        ``C x D`` cohort (training) embeddings.
    top_k : int or None
        Keep only the ``top_k`` highest cohort scores of each row (adaptive
        normalisation); ``None`` keeps the whole cohort.
    chunk_size : int or None
        Rows per chunk; ``None`` picks it so that a ``chunk x C`` block stays
        under ``max_chunk_bytes``.
    max_chunk_bytes : int
        Memory bound of one block of scores.

    Returns
    -------
    mean : numpy.ndarray
        ``U`` means.
    std : numpy.ndarray
        ``U`` unbiased standard deviations (``ddof=1``, as ``torch.std`` in
        SpeechBrain's verification recipe).

    Raises
    ------
    ValueError
        If the cohort is smaller than ``top_k`` or than 2, or ``top_k < 2``.

    Example
    -------
    >>> cohort = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    >>> mean, std = cohort_statistics([[1.0, 0.0]], cohort)
    >>> mean.round(4).tolist(), std.round(4).tolist()
    ([0.0], [1.0])
    >>> cohort_statistics([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], top_k=3)
    Traceback (most recent call last):
    ...
    ValueError: The cohort has 2 embeddings, fewer than top_k=3
    """
    x = l2_normalise(_as_matrix(embeddings, "embeddings"))
    c = l2_normalise(_as_matrix(cohort, "cohort"))
    n_c = c.shape[0]
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"Embedding sizes differ: {x.shape[1]} vs cohort {c.shape[1]}")
    if top_k is not None:
        if top_k < 2:
            raise ValueError(
                f"top_k must be at least 2 (a std needs 2 scores), got {top_k}"
            )
        if n_c < top_k:
            raise ValueError(
                f"The cohort has {n_c} embeddings, fewer than top_k={top_k}"
            )
    if n_c < 2:
        raise ValueError(f"The cohort needs at least 2 embeddings, got {n_c}")
    if chunk_size is None:
        chunk_size = max(1, max_chunk_bytes // (4 * n_c))
    mean = np.empty(x.shape[0], dtype=np.float64)
    std = np.empty(x.shape[0], dtype=np.float64)
    for s in range(0, x.shape[0], chunk_size):
        block = x[s : s + chunk_size] @ c.T
        if top_k is not None and top_k < n_c:
            block = np.partition(block, n_c - top_k, axis=1)[:, n_c - top_k :]
        block = block.astype(np.float64)
        mean[s : s + chunk_size] = block.mean(1)
        std[s : s + chunk_size] = block.std(1, ddof=1)
    return mean, std


def asnorm(
    scores,
    enrol_emb,
    test_emb,
    cohort,
    top_k=None,
    enrol_index=None,
    test_index=None,
):
    """Symmetric (adaptive) score normalisation over a cohort.

    ``s' = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2`` where ``mu, sd`` are
    the statistics of the enrolment (test) embedding's cosine scores to the
    cohort (its ``top_k`` highest with AS-norm). Statistics are computed once
    per embedding row, as matrix products, so pass unique embeddings with
    ``enrol_index`` / ``test_index`` for large trial lists.

    Arguments
    ---------
    scores : array-like
        Raw score of each trial.
    enrol_emb : array-like
        Enrolment embeddings (one per trial, or rows indexed by ``enrol_index``).
    test_emb : array-like
        Test embeddings (one per trial, or rows indexed by ``test_index``).
    cohort : array-like
        ``C x D`` cohort embeddings (already mean-subtracted if scores were).
    top_k : int or None
        AS-norm cohort size per side; ``None`` is plain s-norm.
    enrol_index : array-like or None
        Trial -> row of ``enrol_emb``.
    test_index : array-like or None
        Trial -> row of ``test_emb``.

    Returns
    -------
    numpy.ndarray
        Normalised float64 scores.

    Example
    -------
    >>> cohort = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    >>> asnorm([0.5], [[1.0, 0.0]], [[0.0, 1.0]], cohort).round(4).tolist()
    [0.3943]
    >>> asnorm([0.5], [[1.0, 0.0]], [[0.0, 1.0]], cohort, top_k=2).round(4).tolist()
    [0.0]
    """
    s = _to_numpy(scores).astype(np.float64).ravel()
    e = _as_matrix(enrol_emb, "enrol_emb")
    t = _as_matrix(test_emb, "test_emb")
    ei, ti = _trial_indices(e, t, enrol_index, test_index)
    if ei.size != s.size:
        raise ValueError(f"{s.size} scores but {ei.size} trials")
    mu_e, sd_e = cohort_statistics(e, cohort, top_k)
    mu_t, sd_t = cohort_statistics(t, cohort, top_k)
    return 0.5 * ((s - mu_e[ei]) / sd_e[ei] + (s - mu_t[ti]) / sd_t[ti])


def snorm(scores, enrol_emb, test_emb, cohort, enrol_index=None, test_index=None):
    """Symmetric score normalisation over the whole cohort.

    Same as :func:`asnorm` with ``top_k=None``.

    Arguments
    ---------
    scores : array-like
        Raw score of each trial.
    enrol_emb : array-like
        Enrolment embeddings (one per trial, or rows indexed by ``enrol_index``).
    test_emb : array-like
        Test embeddings (one per trial, or rows indexed by ``test_index``).
    cohort : array-like
        ``C x D`` cohort embeddings.
    enrol_index : array-like or None
        Trial -> row of ``enrol_emb``.
    test_index : array-like or None
        Trial -> row of ``test_emb``.

    Returns
    -------
    numpy.ndarray
        Normalised float64 scores.

    Example
    -------
    >>> cohort = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    >>> snorm([1.0], [[1.0, 0.0]], [[1.0, 0.0]], cohort).round(4).tolist()
    [1.0]
    """
    return asnorm(scores, enrol_emb, test_emb, cohort, None, enrol_index, test_index)


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


# ---------------------------------------------------------------------------
# Score files, DET plots and whole-model evaluation
# ---------------------------------------------------------------------------
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


def _det_systems(systems, trial_list):
    """Resolves plot_det's inputs to ``{label: (target, nontarget)}``."""
    if not isinstance(systems, Mapping):
        systems = {Path(s).name: s for s in systems}
    out = {}
    for label, value in systems.items():
        if isinstance(value, (tuple, list)) and len(value) == 2:
            out[label] = value
            continue
        value = Path(value)
        if value.is_dir():
            results = json.loads((value / RESULTS_FILE).read_text())
            lists = results["trials"]
            name = trial_list or next(iter(lists))
            if name not in lists:
                raise KeyError(
                    f"{value / RESULTS_FILE} has no trial list {name!r} "
                    f"(has {sorted(lists)})"
                )
            value = value / lists[name]["scores_file"]
        labels, scores = read_scores(value)
        out[label] = (scores[labels == 1], scores[labels == 0])
    return out


def plot_det(systems, out_png, trial_list=None, title=None, max_points=4000):
    """Draws the DET curves of several systems on one plot (probit axes).

    Arguments
    ---------
    systems : mapping or sequence
        ``{label: value}`` or a sequence of result folders (labelled by
        folder name); a value is a ``(target_scores, nontarget_scores)`` pair,
        a scores file, or a result folder of :func:`evaluate_model`.
    out_png : str or pathlib.Path
        Output image.
    trial_list : str or None
        Which trial list of a result folder to draw (default: its first).
    title : str or None
        Plot title.
    max_points : int
        Points kept per curve (evenly along the curve) to keep files small.

    Returns
    -------
    pathlib.Path
        The image written.

    Example
    -------
    >>> import tempfile, pathlib, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "det.png"
    >>> toy = (rng.normal(2, 1, 200), rng.normal(0, 1, 2000))
    >>> plot_det({"toy": toy}, out).is_file()
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _det_systems(systems, trial_list)
    ticks = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (tgt, non) in curves.items():
        p_miss, p_fa, _ = det_curve(tgt, non)
        if p_miss.size > max_points:
            keep = np.linspace(0, p_miss.size - 1, max_points).round()
            keep = np.unique(keep.astype(int))
            p_miss, p_fa = p_miss[keep], p_fa[keep]
        eer, _ = compute_eer(tgt, non)
        ax.plot(
            _probit(p_fa), _probit(p_miss), label=f"{label} (EER {100 * eer:.2f}%)"
        )
    lim = _probit(np.array([ticks[0] / 2, ticks[-1] + 0.1]))
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xticks(_probit(ticks))
    ax.set_yticks(_probit(ticks))
    labels = [f"{100 * t:g}" for t in ticks]
    ax.set_xticklabels(labels)
    ax.set_yticklabels(labels)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.plot(lim, lim, color="0.8", lw=0.8, ls="--")
    ax.grid(True, color="0.9")
    ax.legend(loc="lower left", fontsize="small")
    if title:
        ax.set_title(title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out_png


def _probit(p):
    """Inverse normal CDF, with rates of 0 and 1 pushed off to the plot edge."""
    from scipy.special import ndtri

    return ndtri(np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6))


#: File names written by :func:`evaluate_model` in its output folder.
RESULTS_FILE = "results.json"
DET_FILE = "det.png"
COHORT_COLUMNS = ("ID", "wav", "start", "stop")


def read_cohort_csv(csv_path, cohort_size=None, seed=1234, data_folder=None):
    """Reads (a random subset of) a training CSV as cohort segments.

    Arguments
    ---------
    csv_path : str or pathlib.Path
        CSV with at least ``ID,wav,start,stop`` (the training CSV of data
        preparation: ``ID,duration,wav,start,stop,spk_id``).
    cohort_size : int or None
        Number of rows drawn without replacement; ``None`` keeps every row.
    seed : int
        Seed of the draw (the cohort is reproducible).
    data_folder : str or pathlib.Path or None
        Replaces ``$data_root`` in ``wav`` (SpeechBrain's placeholder).

    Returns
    -------
    ids : list of str
        Row IDs, in file order.
    wav_paths : dict
        ``{ID: wav path}``.
    segments : dict
        ``{ID: (start, stop)}`` in samples.

    Raises
    ------
    ValueError
        On a missing column, bad ``start``/``stop`` (with the line number),
        duplicate IDs, or ``cohort_size`` larger than the CSV.

    Example
    -------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
    >>> _ = f.write_text("ID,duration,wav,start,stop,spk_id\\n"
    ...                  "a,1.0,$data_root/a.wav,0,16000,id1\\n"
    ...                  "b,1.0,/x/b.wav,16000,x,id2\\n")
    >>> read_cohort_csv(f)
    Traceback (most recent call last):
    ...
    ValueError: ...train.csv, line 3: start/stop must be integers with 0 <= start < stop, got start='16000', stop='x'
    """
    import csv

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"Cohort CSV not found: {csv_path}")
    ids, wavs, segments = [], {}, {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COHORT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"Cohort CSV {csv_path} lacks column(s) {missing}; expected "
                "ID,duration,wav,start,stop,spk_id"
            )
        for lineno, row in enumerate(reader, start=2):
            try:
                start, stop = int(row["start"]), int(row["stop"])
                if not 0 <= start < stop:
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(
                    f"Cohort CSV {csv_path}, line {lineno}: start/stop must be "
                    "integers with 0 <= start < stop, got "
                    f"start={row['start']!r}, stop={row['stop']!r}"
                ) from None
            utt = row["ID"]
            if utt in wavs:
                raise ValueError(
                    f"Cohort CSV {csv_path}, line {lineno}: duplicate ID {utt!r}"
                )
            wav = row["wav"]
            if data_folder is not None:
                wav = wav.replace("$data_root", str(data_folder))
            ids.append(utt)
            wavs[utt] = wav
            segments[utt] = (start, stop)
    if not ids:
        raise ValueError(f"Cohort CSV {csv_path} has no rows")
    if cohort_size is not None:
        if cohort_size > len(ids):
            raise ValueError(
                f"cohort_size={cohort_size} but the cohort CSV {csv_path} has "
                f"only {len(ids)} rows (use cohort_size: null for all of them)"
            )
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(ids), cohort_size, replace=False))
        ids = [ids[i] for i in pick]
    return ids, {u: wavs[u] for u in ids}, {u: segments[u] for u in ids}


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

    Returns
    -------
    dict
        The content of ``results.json``: settings and, under ``"trials"``,
        per list ``eer`` (fraction), ``min_dcf_<p>``, thresholds, counts and
        file names.

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
    ...                      root / "out", progress=False)
    >>> res["trials"]["toy"]["eer"], res["trials"]["toy"]["n_trials"]
    (0.0, 2)
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
    tmp = output_folder / (RESULTS_FILE + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, output_folder / RESULTS_FILE)
    return results
