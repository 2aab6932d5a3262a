"""Verification metrics: EER, minDCF and DET points, all from one sort of the scores.

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

Authors
 * speechbrain-imlkd contributors
"""

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np


def _to_numpy(x):
    """Returns a numpy view of a torch tensor, array or sequence.

    Half-precision tensors (which numpy cannot hold, or holds too coarsely)
    become float64; other dtypes are kept.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, no import
        x = x.detach().cpu()
        if x.dtype in _TORCH_HALF():
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
    return _finite_floats(arr, name)


def _finite_floats(arr, name, position="index"):
    """Numeric scores as float32 (kept) or float64, all of them finite.

    ``position`` is what the messages call an entry's index (``"index"``,
    ``"trial"``).
    """
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
            f"(NaN or inf); first at {position} {first}: {arr[first]}"
        )
    return arr


def _binary_labels(labels, name="labels", position="index"):
    """Boolean target mask of a 1-D array of 0/1 labels.

    ``position`` is what the messages call an entry's index.
    """
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be 0 or 1; {int(bad.sum())} are not, first at "
            f"{position} {first}: {labels[first:first + 1].tolist()[0]!r}"
        )
    return labels.astype(bool)


def _check_costs(p_target, c_miss, c_fa):
    """Validates the DCF parameters."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError(
            f"c_miss and c_fa must be positive, got c_miss={c_miss}, c_fa={c_fa}"
        )



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
    is_t = _binary_labels(lab)
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
