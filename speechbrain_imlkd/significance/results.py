"""Results of the speaker bootstrap and their formatting for tables.

:class:`BootstrapResult` (one metric with its interval),
:class:`PairedResult` (the difference between two systems on the same
trials), :class:`MethodSummary` (a method's seed-averaged metric and its
comparison with a reference) and :func:`format_ci`.

Example
-------
>>> r = BootstrapResult("min_dcf", 0.41, 0.38, 0.45, 0.95, 1000, 40, 500, 600)
>>> format_ci(r), format_ci(r, digits=2)
('0.410 [0.380, 0.450]', '0.41 [0.38, 0.45]')

Authors
 * speechbrain-imlkd contributors
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from speechbrain_imlkd.significance.resampling import METRICS

#: EERs are printed as percentages.
PERCENT = 100.0
#: Decimals printed by :func:`format_ci` for an EER (in %) and a minDCF.
EER_DIGITS = 2
DCF_DIGITS = 3


@dataclass
class BootstrapResult:
    """A metric with its speaker-bootstrap percentile interval.

    Arguments
    ---------
    metric : str
        ``"eer"`` (a fraction) or ``"min_dcf"`` (normalised).
    estimate : float
        The metric on the full trial list.
    low : float
        Lower end of the interval.
    high : float
        Upper end of the interval.
    level : float
        Confidence level, e.g. 0.95.
    n_boot : int
        Number of resamples.
    n_speakers : int
        Number of speaker clusters resampled.
    n_target : int
        Target trials in the full list.
    n_nontarget : int
        Non-target trials in the full list.
    replicates : numpy.ndarray
        The metric of every resample (``n_boot`` values).

    Example
    -------
    >>> r = BootstrapResult("eer", 0.1, 0.08, 0.12, 0.95, 100, 40, 500, 600)
    >>> format_ci(r)
    '10.00% [8.00, 12.00]'
    """

    metric: str
    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_speakers: int
    n_target: int
    n_nontarget: int
    replicates: np.ndarray = field(default=None, repr=False)


@dataclass
class PairedResult:
    """Difference of one metric between two systems scored on the same trials.

    Arguments
    ---------
    metric : str
        ``"eer"`` or ``"min_dcf"``.
    estimate_a : float
        System A's metric on the full trial list.
    estimate_b : float
        System B's metric on the full trial list.
    difference : float
        ``estimate_a - estimate_b`` (negative: A has the lower error).
    low : float
        Lower end of the percentile interval of the difference.
    high : float
        Upper end of that interval.
    p_a_better : float
        Fraction of resamples where A's metric is below B's, ties counting
        one half: near 1, A is reliably better; near 0.5, no evidence.
    level : float
        Confidence level.
    n_boot : int
        Number of resamples.
    n_speakers : int
        Number of speaker clusters resampled.
    n_target : int
        Target trials.
    n_nontarget : int
        Non-target trials.
    replicates_a : numpy.ndarray
        System A's metric on every resample.
    replicates_b : numpy.ndarray
        System B's metric on the same resamples.

    Example
    -------
    >>> r = PairedResult("eer", 0.08, 0.1, -0.02, -0.03, -0.01, 0.99,
    ...                  0.95, 100, 40, 500, 600)
    >>> format_ci(r)
    '-2.00% [-3.00, -1.00]'
    """

    metric: str
    estimate_a: float
    estimate_b: float
    difference: float
    low: float
    high: float
    p_a_better: float
    level: float
    n_boot: int
    n_speakers: int
    n_target: int
    n_nontarget: int
    replicates_a: np.ndarray = field(default=None, repr=False)
    replicates_b: np.ndarray = field(default=None, repr=False)


def format_ci(result, digits=None) -> str:
    """Formats an estimate and its interval for a table.

    An EER (or an EER difference) is printed in percent, ``"12.34% [10.10,
    14.60]"``; a minDCF as a plain number, ``"0.412 [0.380, 0.455]"``. A
    :class:`PairedResult` prints the difference A - B.

    Arguments
    ---------
    result : BootstrapResult or PairedResult
        What to print.
    digits : int, optional
        Decimals; default :data:`EER_DIGITS` for an EER, :data:`DCF_DIGITS`
        for a minDCF.

    Returns
    -------
    str
        ``"<estimate>[%] [<low>, <high>]"``.

    Example
    -------
    >>> format_ci(BootstrapResult("eer", 0.123, 0.101, 0.146, 0.95, 1000, 40, 1, 1), digits=1)
    '12.3% [10.1, 14.6]'
    >>> format_ci(BootstrapResult("min_dcf", 0.4123, 0.38, 0.455, 0.95, 1000, 40, 1, 1))
    '0.412 [0.380, 0.455]'
    """
    if result.metric not in METRICS:
        raise ValueError(f"unknown metric {result.metric!r}; expected one of {METRICS}")
    value = result.difference if isinstance(result, PairedResult) else result.estimate
    is_eer = result.metric == "eer"
    scale = PERCENT if is_eer else 1.0
    if digits is None:
        digits = EER_DIGITS if is_eer else DCF_DIGITS
    unit = "%" if is_eer else ""

    def fmt(x):
        # Avoid "-0.00" for differences that round to zero.
        text = f"{x * scale:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text

    return f"{fmt(value)}{unit} [{fmt(result.low)}, {fmt(result.high)}]"


@dataclass
class MethodSummary:
    """One method's seed-averaged metric, its interval and its comparison.

    Arguments
    ---------
    name : str
        The method.
    n_seeds : int
        Number of runs (seeds) averaged.
    mean : float
        Mean over seeds of the metric on the full trial list.
    seed_std : float
        Standard deviation over seeds (0 for one seed).
    low : float
        Lower end of the speaker-bootstrap interval of the seed mean.
    high : float
        Upper end of that interval.
    difference : float or None
        ``mean - reference mean`` (None for the reference itself).
    diff_low : float or None
        Lower end of the interval of the difference.
    diff_high : float or None
        Upper end of the interval of the difference.
    p_better : float or None
        Fraction of resamples where this method's seed mean is below the
        reference's (ties half).
    per_seed : list of float
        The metric of every seed.

    Example
    -------
    >>> MethodSummary("kd", 1, 0.1, 0.0, 0.08, 0.12).p_better is None
    True
    """

    name: str
    n_seeds: int
    mean: float
    seed_std: float
    low: float
    high: float
    difference: Optional[float] = None
    diff_low: Optional[float] = None
    diff_high: Optional[float] = None
    p_better: Optional[float] = None
    per_seed: List[float] = field(default_factory=list)
