"""Speaker-bootstrap intervals of EER / minDCF and paired comparisons.

:func:`bootstrap_ci` (one system), :func:`paired_comparison` (two systems
on the same trials, same resamples) and :func:`compare_methods` (several
methods, several seeds each, against a reference); the method is described
in :mod:`speechbrain_imlkd.significance`.

Example
-------
>>> labels = [1, 0, 0] * 4
>>> spk = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3
>>> good = [0.9, 0.1, 0.2, 0.8, 0.3, 0.4, 0.9, 0.2, 0.1, 0.9, 0.5, 0.4]
>>> bad = [0.5, 0.6, 0.2, 0.8, 0.3, 0.7, 0.6, 0.7, 0.1, 0.4, 0.5, 0.4]
>>> r = paired_comparison(good, bad, labels, spk, n_boot=100)
>>> r.difference < 0, r.p_a_better > 0.5
(True, True)

Authors
 * speechbrain-imlkd contributors
"""

import numpy as np

from speechbrain_imlkd.significance.resampling import (
    _check_labels,
    _check_level,
    _check_n_boot,
    _interval,
    _metric_fn,
    _prepare,
    _replicates,
    speaker_resamples,
)
from speechbrain_imlkd.significance.results import (
    BootstrapResult,
    MethodSummary,
    PairedResult,
)

#: Default number of bootstrap resamples.
DEFAULT_N_BOOT = 1000
#: Default confidence level of the intervals.
DEFAULT_LEVEL = 0.95
#: Default prior of the minDCF (the VoxCeleb / NIST SRE 2008 figure).
DEFAULT_P_TARGET = 0.01
#: Credit given to a resample where both systems score exactly the same.
TIE_CREDIT = 0.5


def bootstrap_ci(
    scores,
    labels,
    enrol_speakers,
    test_speakers=None,
    metric="eer",
    n_boot=DEFAULT_N_BOOT,
    level=DEFAULT_LEVEL,
    seed=0,
    p_target=DEFAULT_P_TARGET,
    c_miss=1.0,
    c_fa=1.0,
) -> BootstrapResult:
    """Speaker-bootstrap percentile interval of the EER or minDCF.

    Speakers (the enrolment speaker of each trial) are drawn with
    replacement; each drawn speaker brings all its trials, once per draw.
    See the module docstring for why speakers and not trials.

    Arguments
    ---------
    scores : array-like or torch.Tensor
        1-D trial scores.
    labels : array-like or torch.Tensor
        1-D, 1 for target trials, 0 for non-target.
    enrol_speakers : array-like
        Enrolment speaker of each trial (the bootstrap cluster), e.g.
        ``speakers_of_trials(trials.enrol)``.
    test_speakers : array-like, optional
        Test speaker of each trial. Only used as a check: target trials must
        pair one speaker and non-target trials two different ones.
    metric : str
        ``"eer"`` or ``"min_dcf"``.
    n_boot : int
        Number of resamples.
    level : float
        Confidence level, in (0, 1).
    seed : int, numpy.random.Generator or None
        Seed of the resampling (same seed, same interval).
    p_target : float
        minDCF prior.
    c_miss : float
        minDCF cost of a miss.
    c_fa : float
        minDCF cost of a false alarm.

    Returns
    -------
    BootstrapResult
        Estimate on the full list, interval, and the resampled values.

    Raises
    ------
    ValueError
        On mismatched lengths, labels other than 0/1 or a missing class,
        non-finite scores, fewer than 2 speakers, labels contradicting
        ``test_speakers``, an unknown metric, ``level`` outside (0, 1),
        ``n_boot`` not a positive integer, bad DCF costs, or a resample
        without any target (non-target) trial.

    Example
    -------
    >>> labels = [1, 0, 0] * 4
    >>> spk = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3
    >>> scores = [0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.6, 0.2, 0.1, 0.9, 0.5, 0.4]
    >>> r = bootstrap_ci(scores, labels, spk, n_boot=50, seed=3)
    >>> r.estimate, r.n_speakers, r.replicates.shape
    (0.0625, 4, (50,))
    >>> bootstrap_ci(scores, labels, spk, level=95)
    Traceback (most recent call last):
    ...
    ValueError: level must be in (0, 1), got 95
    """
    level = _check_level(level)
    n_boot = _check_n_boot(n_boot)
    metric_fn = _metric_fn(metric, p_target, c_miss, c_fa)
    (s,), is_target, n_speakers, systems, with_counts = _prepare(
        [scores], labels, enrol_speakers, test_speakers, ["scores"]
    )
    estimate = metric_fn(s[is_target], s[~is_target])
    reps = _replicates(
        systems, speaker_resamples(n_speakers, n_boot, seed), metric_fn, with_counts
    )[0]
    low, high = _interval(reps, level)
    return BootstrapResult(
        metric=metric,
        estimate=float(estimate),
        low=low,
        high=high,
        level=level,
        n_boot=n_boot,
        n_speakers=n_speakers,
        n_target=int(is_target.sum()),
        n_nontarget=int((~is_target).sum()),
        replicates=reps,
    )


def paired_comparison(
    scores_a,
    scores_b,
    labels,
    speakers,
    n_boot=DEFAULT_N_BOOT,
    seed=0,
    metric="eer",
    level=DEFAULT_LEVEL,
    labels_b=None,
    test_speakers=None,
    p_target=DEFAULT_P_TARGET,
    c_miss=1.0,
    c_fa=1.0,
) -> PairedResult:
    """Compares two systems scored on the SAME trials with a speaker bootstrap.

    Both systems are evaluated on identical speaker resamples, so the
    interval is that of the difference itself, not of two independent
    estimates (which would be far wider: most of the spread comes from the
    choice of speakers, and both systems share it).

    Arguments
    ---------
    scores_a : array-like or torch.Tensor
        System A's score of every trial.
    scores_b : array-like or torch.Tensor
        System B's score of the same trials, in the same order.
    labels : array-like
        1 for target trials, 0 for non-target.
    speakers : array-like
        Enrolment speaker of every trial (the bootstrap cluster).
    n_boot : int
        Number of resamples.
    seed : int, numpy.random.Generator or None
        Seed of the resampling.
    metric : str
        ``"eer"`` or ``"min_dcf"``.
    level : float
        Confidence level of the interval of the difference, in (0, 1).
    labels_b : array-like, optional
        B's labels when read from its own scores file: must equal ``labels``
        trial for trial (catches two files in different trial orders).
    test_speakers : array-like, optional
        Test speaker of every trial, checked against the labels.
    p_target : float
        minDCF prior.
    c_miss : float
        minDCF cost of a miss.
    c_fa : float
        minDCF cost of a false alarm.

    Returns
    -------
    PairedResult
        ``difference = A - B`` with its interval and ``p_a_better``.

    Raises
    ------
    ValueError
        When the score arrays differ in length, ``labels_b`` disagrees with
        ``labels``, or on any input :func:`bootstrap_ci` rejects.

    Example
    -------
    >>> labels = [1, 0, 0] * 4
    >>> spk = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3
    >>> b = [0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.6, 0.2, 0.1, 0.9, 0.5, 0.4]
    >>> r = paired_comparison(b, b, labels, spk, n_boot=50)
    >>> r.difference, r.low, r.high, r.p_a_better
    (0.0, 0.0, 0.0, 0.5)
    >>> paired_comparison(b, b[:-1], labels, spk)
    Traceback (most recent call last):
    ...
    ValueError: scores_b has 11 scores but there are 12 trials: the systems must be scored on the same trial list
    """
    level = _check_level(level)
    n_boot = _check_n_boot(n_boot)
    metric_fn = _metric_fn(metric, p_target, c_miss, c_fa)
    (a, b), is_target, n_speakers, systems, with_counts = _prepare(
        [scores_a, scores_b], labels, speakers, test_speakers, ["scores_a", "scores_b"]
    )
    if labels_b is not None:
        other = _check_labels(labels_b, a.size, "labels_b")
        wrong = other != is_target
        if wrong.any():
            first = int(np.flatnonzero(wrong)[0])
            raise ValueError(
                f"labels_b disagrees with labels on {int(wrong.sum())} trial(s), "
                f"first at trial {first}: the two systems were not scored on "
                "the same trial list in the same order"
            )
    est_a = metric_fn(a[is_target], a[~is_target])
    est_b = metric_fn(b[is_target], b[~is_target])
    reps_a, reps_b = _replicates(
        systems, speaker_resamples(n_speakers, n_boot, seed), metric_fn, with_counts
    )
    p_a_better = float(np.mean(reps_a < reps_b) + TIE_CREDIT * np.mean(reps_a == reps_b))
    low, high = _interval(reps_a - reps_b, level)
    return PairedResult(
        metric=metric,
        estimate_a=float(est_a),
        estimate_b=float(est_b),
        difference=float(est_a - est_b),
        low=low,
        high=high,
        p_a_better=p_a_better,
        level=level,
        n_boot=n_boot,
        n_speakers=n_speakers,
        n_target=int(is_target.sum()),
        n_nontarget=int((~is_target).sum()),
        replicates_a=reps_a,
        replicates_b=reps_b,
    )


def compare_methods(
    scores_by_method,
    labels,
    speakers,
    reference=None,
    n_boot=DEFAULT_N_BOOT,
    seed=0,
    metric="eer",
    level=DEFAULT_LEVEL,
    p_target=DEFAULT_P_TARGET,
):
    """Seed-averaged metrics of several methods on one trial list, with intervals.

    Every run (each seed of each method) is scored on the same speaker
    resamples; a method's value on a resample is the mean over its seeds,
    so its interval holds the trial-sampling noise of the seed mean, and
    the comparison with ``reference`` is paired (same resamples, same
    trials). The spread over seeds is reported beside it: a method "beats"
    another only when the difference is outside both.

    Arguments
    ---------
    scores_by_method : dict
        ``{method: [scores of seed 1, scores of seed 2, ...]}``, every array
        over the same trials in the same order.
    labels : array-like
        1 for target trials, 0 for non-target.
    speakers : array-like
        Enrolment speaker of every trial (the bootstrap cluster).
    reference : str, optional
        The method every other one is compared with (e.g. ``"kd"``).
    n_boot : int
        Number of resamples.
    seed : int
        Seed of the resampling.
    metric : str
        ``"eer"`` or ``"min_dcf"``.
    level : float
        Confidence level, in (0, 1).
    p_target : float
        minDCF prior.

    Returns
    -------
    dict
        ``{method: MethodSummary}`` in the input order.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> labels = np.tile([1, 0, 0, 0], 50)
    >>> spk = np.repeat(np.arange(20), 10)
    >>> good = [labels * 2.0 + rng.normal(size=200) for _ in range(2)]
    >>> bad = [labels * 0.5 + rng.normal(size=200) for _ in range(2)]
    >>> out = compare_methods({"kd": bad, "imlkd": good}, labels, spk, reference="kd", n_boot=200)
    >>> out["imlkd"].mean < out["kd"].mean, out["imlkd"].p_better > 0.95
    (True, True)
    """
    level = _check_level(level)
    n_boot = _check_n_boot(n_boot)
    metric_fn = _metric_fn(metric, p_target, 1.0, 1.0)
    if reference is not None and reference not in scores_by_method:
        raise ValueError(f"reference method {reference!r} is not among {sorted(scores_by_method)}")
    names, flat, owners = [], [], []
    for name, runs in scores_by_method.items():
        runs = list(runs)
        if not runs:
            raise ValueError(f"method {name!r} has no run")
        for k, scores in enumerate(runs):
            flat.append(scores)
            owners.append(name)
            names.append(f"{name} run {k}")
    checked, is_target, n_speakers, systems, with_counts = _prepare(
        flat, labels, speakers, None, names
    )
    full = np.array([metric_fn(s[is_target], s[~is_target]) for s in checked])
    reps = _replicates(
        systems, speaker_resamples(n_speakers, n_boot, seed), metric_fn, with_counts
    )
    owners = np.array(owners)
    means = {name: reps[owners == name].mean(axis=0) for name in scores_by_method}
    out = {}
    for name in scores_by_method:
        per_seed = full[owners == name]
        low, high = _interval(means[name], level)
        summary = MethodSummary(
            name=name,
            n_seeds=int(per_seed.size),
            mean=float(per_seed.mean()),
            seed_std=float(per_seed.std(ddof=1)) if per_seed.size > 1 else 0.0,
            low=low,
            high=high,
            per_seed=[float(v) for v in per_seed],
        )
        if reference is not None and name != reference:
            diff = means[name] - means[reference]
            summary.difference = float(per_seed.mean() - full[owners == reference].mean())
            summary.diff_low, summary.diff_high = _interval(diff, level)
            summary.p_better = float(
                np.mean(diff < 0) + TIE_CREDIT * np.mean(diff == 0)
            )
        out[name] = summary
    return out
