"""Confidence intervals and paired comparisons for verification results.

EER and minDCF are computed on one trial list; how far they would move on
another list drawn the same way is estimated here with a **speaker
bootstrap**: speakers, not trials, are drawn with replacement, and every
trial of a drawn speaker comes along as many times as that speaker was drawn.

Why speakers and not trials
---------------------------
Trials that share a speaker are correlated: they reuse the same enrolment
recordings, the same voice, the same channel, so a speaker whose scores sit
unusually low pulls all of its trials down together. Resampling trials
independently treats a list of ``N`` trials as ``N`` independent draws and
understates the spread, the more so the more trials each speaker has
(VoxCeleb1-O: 37,611 trials from only 40 speakers). Resampling whole speakers
keeps each speaker's trials together, so the interval reflects how much the
metric depends on which speakers happened to be in the test set.

Which speaker a trial belongs to
--------------------------------
A trial joins the cluster of its **enrolment speaker**. A target trial has a
single speaker (enrolment = test); a non-target trial involves two, and is
counted with its enrolment speaker, a common choice for speaker-verification
bootstraps (each enrolment model with its target and impostor trials forms a
block). The correlation that a non-target trial shares through its *test*
speaker is not modelled, so the interval may still be slightly narrow when
one impostor appears in very many trials.

Method
------
* Percentile intervals: the ``(1 - level) / 2`` and ``(1 + level) / 2``
  quantiles of the metric over ``n_boot`` resamples; the point estimate is
  the metric on the full trial list.
* The metric of every resample is :func:`~speechbrain_imlkd.scoring.compute_eer`
  or :func:`~speechbrain_imlkd.scoring.compute_min_dcf` on the resampled
  trials, i.e. exactly the metric of the point estimate.
* Speed: the target and non-target scores are sorted once; a resample is
  then ``numpy.repeat`` of the sorted scores by the multiplicity of each
  trial's speaker, which keeps them sorted, so the one stable sort inside
  ``compute_eer`` only merges two sorted runs (linear time). Measured: 1000
  resamples of 40,000 trials from 1,000 speakers take about 1.3 s on one CPU
  core, against about 9 s for
  concatenating index arrays and sorting from scratch.
* Paired comparison of two systems on the same trials applies the *same*
  speaker resamples to both, so that the difference is not blurred by the
  (shared) choice of speakers.

Modules
-------
* :mod:`~speechbrain_imlkd.significance.bootstrap`: the entry points
  (:func:`bootstrap_ci`, :func:`paired_comparison`, :func:`compare_methods`);
* :mod:`~speechbrain_imlkd.significance.resampling`: input checks, speaker
  clusters and the resampling core (:func:`speaker_resamples`);
* :mod:`~speechbrain_imlkd.significance.speakers`: the speaker of every trial
  (:func:`default_speaker`, :func:`speakers_of_trials`);
* :mod:`~speechbrain_imlkd.significance.results`: the result records and
  :func:`format_ci`.

Every public name is importable from ``speechbrain_imlkd.significance``
itself.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> spk = np.repeat(np.arange(50), 20)                 # 50 speakers x 20 trials
>>> labels = np.tile([1, 1, 1, 1, 0, 0, 0, 0, 0, 0] * 2, 50)
>>> scores = 2.0 * labels + rng.normal(size=spk.size)
>>> res = bootstrap_ci(scores, labels, spk, n_boot=200)
>>> res.n_speakers, res.n_target, res.n_nontarget
(50, 400, 600)
>>> res.low <= res.estimate <= res.high
True
>>> format_ci(res)
'16.29% [14.07, 18.17]'
"""

from speechbrain_imlkd.significance.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOT,
    DEFAULT_P_TARGET,
    TIE_CREDIT,
    bootstrap_ci,
    compare_methods,
    paired_comparison,
)
from speechbrain_imlkd.significance.resampling import (
    METRICS,
    MIN_SPEAKERS,
    _SortedSystem,  # noqa: F401 (private, imported here by the tests)
    speaker_resamples,
)
from speechbrain_imlkd.significance.results import (
    DCF_DIGITS,
    EER_DIGITS,
    PERCENT,
    BootstrapResult,
    MethodSummary,
    PairedResult,
    format_ci,
)
from speechbrain_imlkd.significance.speakers import (
    default_speaker,
    speakers_of_trials,
)

__all__ = [
    "DCF_DIGITS",
    "DEFAULT_LEVEL",
    "DEFAULT_N_BOOT",
    "DEFAULT_P_TARGET",
    "EER_DIGITS",
    "METRICS",
    "MIN_SPEAKERS",
    "PERCENT",
    "TIE_CREDIT",
    "BootstrapResult",
    "MethodSummary",
    "PairedResult",
    "bootstrap_ci",
    "compare_methods",
    "default_speaker",
    "format_ci",
    "paired_comparison",
    "speaker_resamples",
    "speakers_of_trials",
]
