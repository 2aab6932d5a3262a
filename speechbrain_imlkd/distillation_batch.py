"""What a distiller receives: one training batch and the segments it aligns on.

:class:`DistillationBatch` holds the student's clean-chunk outputs, the
normalised features, the labels and callables that run the student and the
frozen teacher; :class:`SegmentTargets` is one duration's aligned input
(with teacher outputs when a cache holds them); :class:`SalientSegment` is
a segment with its teacher saliency in both feature spaces, for a teacher
with its own front end. The distillers of :mod:`speechbrain_imlkd.distillers`
and the saliency sources (:mod:`speechbrain_imlkd.saliency_sources`,
:mod:`speechbrain_imlkd.ig_cache`) exchange these.

Example
-------
>>> batch = DistillationBatch.toy(batch_size=2, n_frames=40, n_speakers=3)
>>> emb, logits = batch.teacher_outputs(batch.feats)
>>> emb.shape, logits.shape, SegmentTargets(batch.feats).for_teacher is batch.feats
(torch.Size([2, 6]), torch.Size([2, 3]), True)

Authors
 * speechbrain-imlkd contributors
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch

from speechbrain_imlkd.integrated_inputs import match_frames

StudentFn = Callable[[torch.Tensor, Optional[torch.Tensor]], Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SegmentTargets:
    """One duration's input for alignment, with optional cached teacher outputs.

    Arguments
    ---------
    inputs : torch.Tensor
        ``B x T_d x F`` features that teacher and student are aligned on (a
        plain segment for ``mlkd``, an integrated input for ``imlkd``).
    teacher_emb : torch.Tensor, optional
        Precomputed teacher embeddings of ``inputs`` (the IG cache stores
        them, since the teacher is frozen); computed on the fly when None.
    teacher_logits : torch.Tensor, optional
        Precomputed teacher logits of ``inputs``.
    teacher_inputs : torch.Tensor, optional
        The same segment in the teacher's own feature space, for a teacher
        with its own front end (``B x T_d x F_teacher``); None when teacher
        and student share features.

    Example
    -------
    >>> t = SegmentTargets(torch.zeros(2, 10, 4))
    >>> t.teacher_emb is None, t.for_teacher is t.inputs
    (True, True)
    """

    inputs: torch.Tensor
    teacher_emb: Optional[torch.Tensor] = None
    teacher_logits: Optional[torch.Tensor] = None
    teacher_inputs: Optional[torch.Tensor] = None

    @property
    def for_teacher(self):
        """What the teacher sees: ``teacher_inputs``, else ``inputs``."""
        return self.inputs if self.teacher_inputs is None else self.teacher_inputs


class SalientSegment(NamedTuple):
    """A segment and its normalised teacher saliency, in both feature spaces.

    Returned by saliency sources for a teacher with its own front end; a
    teacher sharing the student's features gets plain ``(segment,
    saliency)`` pairs.

    Arguments
    ---------
    inputs : torch.Tensor
        Student-space segment, ``B x T x F_student``.
    saliency : torch.Tensor
        Teacher saliency carried to the student's space, in ``[0, 1]``.
    teacher_inputs : torch.Tensor
        Teacher-space segment, ``B x T x F_teacher``.
    teacher_saliency : torch.Tensor
        The teacher's own normalised saliency, ``B x T x F_teacher``.

    Example
    -------
    >>> s = SalientSegment(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8),
    ...                    torch.zeros(1, 4, 2), torch.zeros(1, 4, 2))
    >>> s.teacher_inputs.shape
    torch.Size([1, 4, 2])
    """

    inputs: torch.Tensor
    saliency: torch.Tensor
    teacher_inputs: torch.Tensor
    teacher_saliency: torch.Tensor


@dataclass
class DistillationBatch:
    """Everything a distiller may need for one training batch.

    Arguments
    ---------
    feats : torch.Tensor
        Normalised input features of the clean chunk, ``B x T x F`` (the same
        pipeline feeds teacher and student).
    lengths : torch.Tensor
        Relative lengths in ``[0, 1]``, shape ``B``.
    labels : torch.Tensor
        Training-speaker indices, shape ``B``.
    student_emb : torch.Tensor
        Student embeddings of the clean chunk, ``B x D_s``.
    student_logits : torch.Tensor
        Student logits of the clean chunk (scale * cosine, no margin), ``B x N``.
    student : callable
        ``student(feats, lengths) -> (embeddings, logits)``: runs the student
        on other inputs (segments, integrated inputs).
    teacher_embed : callable
        ``teacher_embed(feats, lengths) -> embeddings`` of the frozen teacher.
    teacher_logits : callable
        ``teacher_logits(embeddings) -> logits`` over the training speakers.
    projection : callable, optional
        Maps student embeddings to the teacher's dimension.
    ids : list of str, optional
        The chunk IDs (for cached saliency).
    generator : torch.Generator, optional
        Random generator for segment sampling.
    extras : dict
        Free slot for distillers' own per-batch data.
    teacher_feats : torch.Tensor, optional
        The clean chunk in the teacher's own feature space (``B x T x
        F_teacher``, same 10 ms hop) for a teacher with its own front end;
        None when the teacher shares the student's features.
    saliency_mapping : callable, optional
        ``mapping(teacher_saliency, n_frames) -> student_saliency``
        (:class:`speechbrain_imlkd.integrated_inputs.SaliencyMapping`);
        needed with ``teacher_feats``.
    teacher_features : callable, optional
        ``() -> teacher_feats``, called on first use when ``teacher_feats``
        is None: a distiller that never asks for the teacher's own features
        (``imlkd`` reading cached targets, ``scratch``) does not pay for
        its front end.

    Example
    -------
    >>> batch = DistillationBatch.toy(batch_size=2, n_frames=50, n_speakers=2)
    >>> batch.feats.shape, batch.teacher_inputs is batch.feats
    (torch.Size([2, 50, 8]), True)
    >>> batch.teacher_features = lambda: torch.zeros(2, 50, 3)
    >>> batch.teacher_inputs.shape, batch.teacher_feats is not None
    (torch.Size([2, 50, 3]), True)
    """

    feats: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    student_emb: torch.Tensor
    student_logits: torch.Tensor
    student: StudentFn
    teacher_embed: Callable
    teacher_logits: Callable
    projection: Optional[Callable] = None
    ids: Optional[List[str]] = None
    generator: Optional[torch.Generator] = None
    extras: Dict = field(default_factory=dict)
    teacher_feats: Optional[torch.Tensor] = None
    saliency_mapping: Optional[Callable] = None
    teacher_features: Optional[Callable] = None

    def own_teacher_feats(self):
        """The teacher's own features of the chunk (computed once), or None."""
        if self.teacher_feats is None and self.teacher_features is not None:
            self.teacher_feats = self.teacher_features()
        return self.teacher_feats

    @property
    def teacher_inputs(self):
        """The clean chunk as the teacher sees it (its own features if any)."""
        own = self.own_teacher_feats()
        return self.feats if own is None else own

    def teacher_segments(self, starts, n_frames):
        """Cuts the teacher-space segments that match student segments.

        Arguments
        ---------
        starts : torch.Tensor
            ``(B,)`` start frames of the student's segments.
        n_frames : int
            Frames per segment.

        Returns
        -------
        torch.Tensor or None
            ``B x n_frames x F_teacher``, or None for a teacher that shares
            the student's features.

        Example
        -------
        >>> b = DistillationBatch.toy(batch_size=2, n_frames=20)
        >>> b.teacher_feats = torch.arange(40.0).view(2, 20, 1)
        >>> b.teacher_segments(torch.tensor([0, 5]), 3)[:, :, 0].tolist()
        [[0.0, 1.0, 2.0], [25.0, 26.0, 27.0]]
        """
        own = self.own_teacher_feats()
        if own is None:
            return None
        t = match_frames(own, self.feats.shape[1])
        index = starts.to(t.device)[:, None] + torch.arange(n_frames, device=t.device)
        return torch.gather(t, 1, index[..., None].expand(-1, -1, t.shape[-1]))

    def teacher_outputs(self, feats, lengths=None):
        """Runs the frozen teacher without building a graph.

        Arguments
        ---------
        feats : torch.Tensor
            Normalised features, ``B x T x F``.
        lengths : torch.Tensor, optional
            Relative lengths.

        Returns
        -------
        embeddings : torch.Tensor
        logits : torch.Tensor

        Example
        -------
        >>> batch = DistillationBatch.toy(batch_size=2, n_frames=50, n_speakers=3)
        >>> emb, logits = batch.teacher_outputs(batch.feats)
        >>> logits.shape
        torch.Size([2, 3])
        """
        with torch.no_grad():
            emb = self.teacher_embed(feats, lengths)
            return emb, self.teacher_logits(emb)

    @classmethod
    def toy(cls, batch_size=4, n_frames=120, n_speakers=3, n_feats=8, seed=0):
        """Builds a batch from tiny random linear 'models', for doctests.

        Arguments
        ---------
        batch_size : int
            Number of chunks.
        n_frames : int
            Frames per chunk.
        n_speakers : int
            Number of training speakers.
        n_feats : int
            Feature dimension.
        seed : int
            Random seed.

        Returns
        -------
        DistillationBatch

        Example
        -------
        >>> DistillationBatch.toy(batch_size=3).labels.shape
        torch.Size([3])
        """
        g = torch.Generator().manual_seed(seed)
        t_w = torch.randn(n_feats, 6, generator=g)
        s_w = torch.randn(n_feats, 5, generator=g, requires_grad=True)
        t_cls = torch.randn(6, n_speakers, generator=g)
        s_cls = torch.randn(5, n_speakers, generator=g)

        def student(x, lengths=None):
            emb = torch.tanh(x.mean(1) @ s_w)
            return emb, emb @ s_cls

        def teacher_embed(x, lengths=None):
            return torch.tanh(x.mean(1) @ t_w)

        feats = torch.randn(batch_size, n_frames, n_feats, generator=g)
        emb, logits = student(feats)
        return cls(
            feats=feats,
            lengths=torch.ones(batch_size),
            labels=torch.randint(0, n_speakers, (batch_size,), generator=g),
            student_emb=emb,
            student_logits=logits,
            student=student,
            teacher_embed=teacher_embed,
            teacher_logits=lambda e: e @ t_cls,
            projection=torch.nn.Linear(5, 6),
            generator=g,
        )
