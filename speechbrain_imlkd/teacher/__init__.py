"""The frozen pretrained teacher of IML-KD.

:func:`load_teacher` loads an ECAPA-TDNN speaker model in the SpeechBrain hub
layout (``hyperparams.yaml``, ``embedding_model.ckpt``,
``mean_var_norm_emb.ckpt`` and, optionally, ``classifier.ckpt`` and
``label_encoder.txt``) from the hub (``speechbrain/spkrec-ecapa-voxceleb``)
or from a local folder, with SpeechBrain's own ``Pretrainer``. A local
folder loads with no network access, even when its ``hyperparams.yaml``
still names the hub in ``pretrained_path``.

The returned :class:`Teacher` is deliberately *not* a ``torch.nn.Module``:
it must stay out of ``Brain.modules``, so that ``Brain.fit`` never switches
it to training mode, the optimiser and checkpointer never see its weights,
and DDP never wraps it. Its weights are frozen (``requires_grad=False``,
eval mode, re-asserted at every call), yet gradients flow to its *input
features*, which is what Integrated Gradients needs.

Teacher posteriors over the student's training speakers come either from
the teacher's own classifier (columns picked through its label encoder;
the hub teacher's 7,205 classes include every VoxCeleb1 dev speaker) or,
when there is no classifier or a speaker is unknown to it, from cosine
similarities to class centroids of the teacher's embeddings
(:func:`compute_centroids`).

Teachers that are not hub models and bring their own front end (e.g. the
pretrained GE2E LSTM of the ``resemblyzer`` package) live in
:mod:`speechbrain_imlkd.teacher_adapters`; :func:`load_teacher` loads them by
name (``load_teacher("resemblyzer", savedir)``). Such a teacher has
``own_front_end = True``; :attr:`Teacher.front_end` and
:meth:`Teacher.band_centres_hz` describe the features of any teacher.

Modules:

* :mod:`~speechbrain_imlkd.teacher.base`: the :class:`Teacher` itself
  (freezing, features, embeddings, posteriors) and
  :func:`compute_centroids`;
* :mod:`~speechbrain_imlkd.teacher.hub`: :func:`load_teacher` (hub id,
  local hub-layout folder, or adapter name) and its checks.

Every public name is importable from ``speechbrain_imlkd.teacher`` itself.

Example
-------
>>> import torch
>>> from speechbrain_imlkd.models import build_ecapa, features_pipeline
>>> fbank, norm = features_pipeline(n_mels=40)
>>> teacher = Teacher(fbank, norm, build_ecapa(16, lin_neurons=8, n_mels=40))
>>> feats = teacher.features(torch.rand(2, 8000), torch.ones(2))
>>> _ = feats.requires_grad_()
>>> emb = teacher.embed(feats)
>>> emb.sum().backward()
>>> emb.shape, bool(feats.grad.abs().sum() > 0)
(torch.Size([2, 8]), True)
>>> any(p.grad is not None for p in teacher.embedding_model.parameters())
False

Authors
 * speechbrain-imlkd contributors 2025
"""

from speechbrain_imlkd.teacher.base import (
    DEFAULT_LOGIT_SCALE,
    LABEL_MODES,
    PROBE_SECONDS,
    Teacher,
    compute_centroids,
)
from speechbrain_imlkd.teacher.hub import (
    HPARAMS_FILE,
    OPTIONAL_LOADABLES,
    REQUIRED_MODULES,
    load_teacher,
)

__all__ = [
    "DEFAULT_LOGIT_SCALE",
    "HPARAMS_FILE",
    "LABEL_MODES",
    "OPTIONAL_LOADABLES",
    "PROBE_SECONDS",
    "REQUIRED_MODULES",
    "Teacher",
    "compute_centroids",
    "load_teacher",
]
