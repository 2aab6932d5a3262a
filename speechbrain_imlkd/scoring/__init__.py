"""Speaker-verification scoring: EER, minDCF, DET curves, cosine, s-norm, AS-norm.

Modules:

* :mod:`~speechbrain_imlkd.scoring.metrics`: EER, minDCF and DET points from
  one sort of the scores (:func:`compute_eer`, :func:`compute_min_dcf`,
  :func:`operating_points`, :func:`det_curve`, :func:`verification_metrics`),
  and the conventions they follow;
* :mod:`~speechbrain_imlkd.scoring.normalisation`: cosine scoring, s-norm,
  AS-norm, the cohort (:func:`cosine_scores`, :func:`snorm`, :func:`asnorm`,
  :func:`cohort_statistics`, :func:`read_cohort_csv`);
* :mod:`~speechbrain_imlkd.scoring.trial_scores`: scoring trial lists and
  score files (:func:`score_trials`, :func:`write_scores`, :func:`read_scores`);
* :mod:`~speechbrain_imlkd.scoring.plots`: DET plots (:func:`plot_det`);
* :mod:`~speechbrain_imlkd.scoring.evaluation`: a whole model on trial lists
  (:func:`evaluate_model`).

Every public name is importable from ``speechbrain_imlkd.scoring`` itself.

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

from speechbrain_imlkd.scoring.evaluation import RESULT_FIELDS, evaluate_model
from speechbrain_imlkd.scoring.metrics import (
    OperatingPoints,
    compute_eer,
    compute_min_dcf,
    det_curve,
    operating_points,
    verification_metrics,
)
from speechbrain_imlkd.scoring.normalisation import (
    COHORT_COLUMNS,
    asnorm,
    cohort_statistics,
    cosine_scores,
    l2_normalise,
    read_cohort_csv,
    snorm,
)
from speechbrain_imlkd.scoring.plots import plot_det
from speechbrain_imlkd.scoring.trial_scores import (
    DET_FILE,
    NORM_METHODS,
    RESULTS_FILE,
    read_scores,
    score_trials,
    write_scores,
)

__all__ = [
    "COHORT_COLUMNS",
    "DET_FILE",
    "NORM_METHODS",
    "RESULTS_FILE",
    "RESULT_FIELDS",
    "OperatingPoints",
    "asnorm",
    "cohort_statistics",
    "compute_eer",
    "compute_min_dcf",
    "cosine_scores",
    "det_curve",
    "evaluate_model",
    "l2_normalise",
    "operating_points",
    "plot_det",
    "read_cohort_csv",
    "read_scores",
    "score_trials",
    "snorm",
    "verification_metrics",
    "write_scores",
]
