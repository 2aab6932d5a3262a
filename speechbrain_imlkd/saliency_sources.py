"""Online saliency source of IML-KD: the teacher's Integrated Gradients per batch.

:class:`OnlineSaliency` draws one random segment per duration from each
chunk and computes the frozen teacher's Integrated Gradients on it, during
training; :class:`speechbrain_imlkd.ig_cache.CachedSaliency` serves the same
from a precomputed cache. Both are the ``saliency_source`` of
:class:`speechbrain_imlkd.distillers.IMLKD` (YAML:
``!new:speechbrain_imlkd.distillers.OnlineSaliency``).

Example
-------
>>> src = OnlineSaliency(target="embedding_cosine", steps=4)
>>> (seg, sal), = src(DistillationBatch.toy(n_frames=60), [0.3])
>>> seg.shape, bool(sal.max() <= 1)
(torch.Size([4, 30, 8]), True)

Authors
 * speechbrain-imlkd contributors
"""

from typing import Sequence

import torch

from speechbrain_imlkd.distillation_batch import DistillationBatch, SalientSegment  # noqa: F401 (DistillationBatch: the examples build one)
from speechbrain_imlkd.integrated_inputs import normalised_saliency, sample_segments

class OnlineSaliency:
    """Draws one random segment per duration and computes the teacher's IG.

    Arguments
    ---------
    target : str
        ``"speaker_logit"`` (the teacher's logit of the true speaker) or
        ``"embedding_cosine"`` (cosine between the segment's teacher embedding
        and the teacher embedding of the whole chunk; label-free).
    steps : int
        Quadrature steps.
    method : str
        Quadrature rule, see :func:`speechbrain_imlkd.attribution.integrated_gradients`.
    internal_batch_size : int
        Samples per teacher pass when the steps are folded into the batch.
    frames_per_second : int
        Feature frame rate.

    Example
    -------
    >>> src = OnlineSaliency(target="speaker_logit", steps=4)
    >>> pairs = src(DistillationBatch.toy(n_frames=60), [0.5])
    >>> seg, sal = pairs[0]
    >>> seg.shape == sal.shape, bool(sal.min() >= 0), bool(sal.max() <= 1)
    (True, True, True)
    """

    TARGETS = ("speaker_logit", "embedding_cosine")

    def __init__(
        self,
        target="speaker_logit",
        steps=None,
        method=None,
        internal_batch_size=64,
        frames_per_second=100,
    ):
        if target not in self.TARGETS:
            raise ValueError(f"IG target must be one of {self.TARGETS}, got {target!r}")
        self.target = target
        self.steps = steps
        self.method = method
        self.internal_batch_size = internal_batch_size
        self.frames_per_second = frames_per_second

    def __call__(self, batch, durations: Sequence[float]):
        """Returns ``(segment, normalised saliency)`` for each duration.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.
        durations : sequence of float
            Segment durations in seconds.

        Returns
        -------
        list
            ``(segment, saliency)`` pairs, or :class:`SalientSegment` for a
            teacher with its own features (IG is taken with respect to the
            teacher's input, then carried to the student's frames and bands
            by ``batch.saliency_mapping``).
        """
        from speechbrain_imlkd.attribution import (
            embedding_cosine_target,
            integrated_gradients,
            speaker_logit_target,
        )
        embed = lambda x: batch.teacher_embed(x, None)  # noqa: E731
        if self.target == "speaker_logit":
            target_fn = speaker_logit_target(embed, batch.teacher_logits, batch.labels)
        else:
            with torch.no_grad():
                reference = batch.teacher_embed(batch.teacher_inputs, batch.lengths)
            target_fn = embedding_cosine_target(embed, reference)
        kwargs = {"internal_batch_size": self.internal_batch_size}
        if self.steps is not None:
            kwargs["steps"] = self.steps
        if self.method is not None:
            kwargs["method"] = self.method
        pairs = []
        for seg, starts in sample_segments(
            batch.feats,
            durations,
            frames_per_second=self.frames_per_second,
            generator=batch.generator,
            lengths=batch.lengths,
        ):
            t_seg = batch.teacher_segments(starts, seg.shape[1])
            if t_seg is None:
                ig = integrated_gradients(target_fn, seg.detach(), **kwargs)
                pairs.append((seg, normalised_saliency(ig)))
                continue
            if batch.saliency_mapping is None:
                raise ValueError(
                    "a teacher with its own features needs batch.saliency_mapping "
                    "to carry its saliency to the student's bands"
                )
            t_sal = normalised_saliency(integrated_gradients(target_fn, t_seg.detach(), **kwargs))
            pairs.append(
                SalientSegment(seg, batch.saliency_mapping(t_sal, seg.shape[1]), t_seg, t_sal)
            )
        return pairs
