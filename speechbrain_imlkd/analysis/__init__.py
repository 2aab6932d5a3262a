"""The paper's analyses: saliency maps of teacher and students, faithfulness.

Two questions are asked of every model (teacher or student, any model folder
that :func:`speechbrain_imlkd.teacher.load_teacher` loads):

* *Where does it look?* :func:`model_saliency` computes Integrated Gradients
  of the model's own embedding w.r.t. its normalised input features, for
  segments of several durations. The target is label-free (cosine between
  the segment's embedding and a reference embedding of the same speaker), so
  it applies to models trained on different label sets.
  :func:`plot_saliency_maps` shows the maps side by side and
  :func:`saliency_rank_correlation` measures how much a student's map agrees
  with the teacher's (Spearman over time-frequency bins or frames).
* *Is the saliency faithful?* :func:`deletion_insertion_curves` removes the
  most salient frames first (deletion) or adds them back first to an
  all-baseline segment (insertion) and follows the target-speaker score. A
  faithful map makes deletion fall fast (low area) and insertion rise fast
  (high area); the same procedure in a random frame order is the control.

:func:`run_analyses` runs both on target trials of a trial list and writes
``saliency_maps.png``, ``deletion_insertion.png`` and ``faithfulness.json``.

Segments are unpadded: every segment of a batch has the same length.

Example
-------
>>> import torch
>>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
>>> from speechbrain_imlkd.teacher import Teacher
>>> _ = torch.manual_seed(0)
>>> model = Teacher(*features_pipeline(24), build_ecapa(16, 8, 24, attention_channels=8))
>>> feats = torch.randn(2, 30, 24)
>>> ref = model.embed(feats).detach()
>>> sal = model_saliency(model, feats, reference=ref, steps=2)
>>> sal.shape, float(sal.amax(dim=(1, 2)).min())
(torch.Size([2, 30, 24]), 1.0)
>>> curves = deletion_insertion_curves(model, feats, sal, ref, n_steps=4)
>>> curves["deletion"].shape, round(float(curves["deletion"][0]), 4)
((5,), 1.0)

Modules: :mod:`~speechbrain_imlkd.analysis.saliency` (maps and their
agreement), :mod:`~speechbrain_imlkd.analysis.faithfulness` (deletion /
insertion curves), :mod:`~speechbrain_imlkd.analysis.driver`
(:func:`run_analyses`) and :mod:`~speechbrain_imlkd.analysis.common` (input
checks). Every public name is importable from ``speechbrain_imlkd.analysis``.

Authors
 * speechbrain-imlkd contributors 2025
"""

from speechbrain_imlkd.analysis.common import TEACHER_NAME
from speechbrain_imlkd.analysis.driver import (
    ALL_KEY,
    CURVES_PNG,
    RESULTS_JSON,
    SALIENCY_PNG,
    run_analyses,
)
from speechbrain_imlkd.analysis.faithfulness import (
    CURVE_NAMES,
    UNITS,
    combine_curves,
    deletion_insertion_curves,
    faithfulness_table,
    plot_deletion_insertion,
)
from speechbrain_imlkd.analysis.saliency import (
    LEVELS,
    TARGETS,
    model_saliency,
    plot_saliency_maps,
    saliency_rank_correlation,
)

__all__ = [
    "ALL_KEY",
    "CURVES_PNG",
    "CURVE_NAMES",
    "LEVELS",
    "RESULTS_JSON",
    "SALIENCY_PNG",
    "TARGETS",
    "TEACHER_NAME",
    "UNITS",
    "combine_curves",
    "deletion_insertion_curves",
    "faithfulness_table",
    "model_saliency",
    "plot_deletion_insertion",
    "plot_saliency_maps",
    "run_analyses",
    "saliency_rank_correlation",
]
