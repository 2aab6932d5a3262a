"""Speaker resampling: input checks, speaker clusters, resampled metrics.

The core of the speaker bootstrap (see :mod:`speechbrain_imlkd.significance`
for the method): scores, labels and speakers are checked once, trials are
grouped by speaker, each system's scores are sorted once
(:class:`_SortedSystem`), and every resample (:func:`speaker_resamples`:
how many times each speaker is drawn) repeats the sorted scores by their
speaker's multiplicity, which keeps them sorted.

Example
-------
>>> scores = np.array([0.9, 0.1, 0.8, 0.2])
>>> is_target = np.array([True, False, True, False])
>>> system = _SortedSystem(scores, is_target, np.array([0, 0, 1, 1]))
>>> tgt, non = system.resample(np.array([2, 0]))  # speaker 0 drawn twice
>>> tgt.tolist(), non.tolist()
([0.9, 0.9], [0.1, 0.1])

Authors
 * speechbrain-imlkd contributors
"""

import numpy as np

from speechbrain_imlkd.scoring import compute_eer, compute_min_dcf
from speechbrain_imlkd.scoring.metrics import _binary_labels, _finite_floats, _to_numpy

#: Metrics that can be bootstrapped (lower is better for both).
METRICS = ("eer", "min_dcf")
#: A bootstrap over a single speaker cannot show any spread.
MIN_SPEAKERS = 2


# ---------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------
def _as_1d(x, name):
    """A 1-D numpy array from an array, a sequence or a (CPU/GPU) tensor."""
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_scores(scores, name, n=None):
    """Finite 1-D float scores (float32 kept, as ``compute_eer`` does)."""
    arr = _as_1d(scores, name)
    if n is not None and arr.size != n:
        raise ValueError(
            f"{name} has {arr.size} scores but there are {n} trials: the "
            "systems must be scored on the same trial list"
        )
    return _finite_floats(arr, name, position="trial")


def _check_labels(labels, n, name="labels"):
    """Boolean target mask from 0/1 labels, one per trial, both classes present."""
    lab = _as_1d(labels, name)
    if lab.size != n:
        raise ValueError(f"{name} has {lab.size} entries but there are {n} scores")
    is_target = _binary_labels(lab, name, position="trial")
    if is_target.all() or not is_target.any():
        raise ValueError(
            f"{name} hold {int(is_target.sum())} target and "
            f"{int((~is_target).sum())} non-target trials: EER and minDCF need both"
        )
    return is_target


def _check_speakers(speakers, n, name):
    """Speaker ids, one per trial, as a 1-D array."""
    spk = _as_1d(speakers, name)
    if spk.size != n:
        raise ValueError(f"{name} has {spk.size} entries but there are {n} trials")
    return spk


def _check_level(level):
    """Confidence level strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def _check_n_boot(n_boot):
    """A positive integer number of resamples."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)):
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    return int(n_boot)


def _metric_fn(metric, p_target, c_miss, c_fa):
    """``(target, non-target) -> float`` for the chosen metric."""
    if metric == "eer":
        return lambda tgt, non: compute_eer(tgt, non)[0]
    if metric == "min_dcf":
        return lambda tgt, non: compute_min_dcf(
            tgt, non, p_target=p_target, c_miss=c_miss, c_fa=c_fa
        )[0]
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _clusters(speakers, is_target, test_speakers):
    """Cluster index (0..S-1) of every trial, checking test speakers if given."""
    if test_speakers is not None:
        test = _check_speakers(test_speakers, is_target.size, "test_speakers")
        same = speakers == test
        for wrong, what in (
            (is_target & ~same, "target trials whose enrolment and test speakers differ"),
            (~is_target & same, "non-target trials whose enrolment and test speakers are the same"),
        ):
            if wrong.any():
                first = int(np.flatnonzero(wrong)[0])
                raise ValueError(
                    f"{int(wrong.sum())} {what}, first at trial {first} "
                    f"({speakers[first].item()!r} vs {test[first].item()!r}): the labels "
                    "disagree with the speakers (wrong speaker_fn or trial list?)"
                )
    try:
        names, codes = np.unique(speakers, return_inverse=True)
    except TypeError as e:
        raise ValueError(
            "speaker ids must be of one comparable type (all str or all int)"
        ) from e
    if names.size < MIN_SPEAKERS:
        raise ValueError(
            f"the trials come from {names.size} speaker(s); a speaker "
            f"bootstrap needs at least {MIN_SPEAKERS}"
        )
    return codes.reshape(-1), names.size


# ---------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------
def speaker_resamples(n_speakers, n_boot, seed=0):
    """How many times each speaker is drawn, resample after resample.

    Each resample draws ``n_speakers`` speakers uniformly with replacement.

    Arguments
    ---------
    n_speakers : int
        Number of speaker clusters.
    n_boot : int
        Number of resamples.
    seed : int, numpy.random.Generator or None
        Seed of ``numpy.random.default_rng`` (``None``: not reproducible).

    Yields
    ------
    numpy.ndarray
        ``int64`` multiplicity of every speaker, summing to ``n_speakers``.

    Example
    -------
    >>> counts = list(speaker_resamples(5, 3, seed=1))
    >>> len(counts), [int(c.sum()) for c in counts]
    (3, [5, 5, 5])
    """
    n_boot = _check_n_boot(n_boot)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        drawn = rng.integers(0, n_speakers, size=n_speakers)
        yield np.bincount(drawn, minlength=n_speakers)


class _SortedSystem:
    """One system's scores sorted once, ready for speaker resamples.

    Arguments
    ---------
    scores : numpy.ndarray
        Checked scores.
    is_target : numpy.ndarray
        Boolean target mask.
    clusters : numpy.ndarray
        Speaker cluster of every trial.
    """

    def __init__(self, scores, is_target, clusters):
        self.target, self.target_cluster = self._sorted(scores[is_target], clusters[is_target])
        self.nontarget, self.nontarget_cluster = self._sorted(
            scores[~is_target], clusters[~is_target]
        )

    @staticmethod
    def _sorted(scores, clusters):
        order = np.argsort(scores, kind="stable")
        return scores[order], clusters[order]

    def resample(self, counts):
        """Target and non-target scores of a resample, each still sorted.

        Repeating sorted scores keeps them sorted, so ``compute_eer``'s
        stable sort of ``[target, non-target]`` only merges two runs.
        """
        return (
            np.repeat(self.target, counts[self.target_cluster]),
            np.repeat(self.nontarget, counts[self.nontarget_cluster]),
        )


def _replicates(systems, counts_iter, metric_fn, n_with):
    """Metric of every system on every resample (``n_systems x n_boot``).

    ``n_with`` maps "target" / "non-target" to the number of speakers that
    have such trials, for the error message of a one-class resample.
    """
    out = []
    for b, counts in enumerate(counts_iter):
        row = []
        for system in systems:
            tgt, non = system.resample(counts)
            for kind, drawn in (("target", tgt), ("non-target", non)):
                if drawn.size == 0:
                    raise ValueError(
                        f"bootstrap resample {b} drew no {kind} trial: only "
                        f"{n_with[kind]} speaker(s) have {kind} trials; a "
                        "speaker bootstrap needs more of them"
                    )
            row.append(metric_fn(tgt, non))
        out.append(row)
    return np.array(out, dtype=np.float64).T


def _interval(values, level):
    """Percentile interval of ``values`` at ``level``."""
    alpha = 1.0 - level
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _prepare(scores_list, labels, speakers, test_speakers, names):
    """Checks inputs shared by both entry points; returns sorted systems."""
    first = _as_1d(scores_list[0], names[0])
    n = first.size
    checked = [_check_scores(s, name, n) for s, name in zip(scores_list, names)]
    is_target = _check_labels(labels, n)
    spk = _check_speakers(speakers, n, "speakers")
    clusters, n_speakers = _clusters(spk, is_target, test_speakers)
    with_counts = {
        "target": np.unique(clusters[is_target]).size,
        "non-target": np.unique(clusters[~is_target]).size,
    }
    systems = [_SortedSystem(s, is_target, clusters) for s in checked]
    return checked, is_target, n_speakers, systems, with_counts
