"""Distillers: one small class per knowledge-distillation method.

Every method sits behind one interface, :class:`Distiller`: given a
:class:`DistillationBatch` (the student's clean-chunk outputs, the normalised
features, the labels, callables that run the student and the frozen teacher)
it returns the *distillation* part of the loss and a dict of named terms to
log. The Brain adds the student's own classification loss (AAM softmax on
the clean chunk), so

    loss = AAM(clean) + distiller(batch)

for every method. A new method is a new subclass registered in
:data:`DISTILLERS`; the Brain is not touched.

Which parts come from the paper (Yang et al., arXiv 2409.09389) and which are
this reconstruction's choices is documented in
``recipes/VoxCeleb1/imlkd/README.md``.

Example
-------
>>> import torch
>>> batch = DistillationBatch.toy(batch_size=4, n_frames=120, n_speakers=3)
>>> loss, terms = VanillaKD(temperature=4.0, weight=1.0)(batch)
>>> loss.shape, sorted(terms)
(torch.Size([]), ['kd'])

Authors
 * speechbrain-imlkd contributors
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from speechbrain_imlkd.integrated_inputs import integrated_inputs, sample_segments
from speechbrain_imlkd.losses import (
    embedding_alignment_loss,
    instance_alignment_loss,
    multilevel_alignment_loss,
)

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

    Example
    -------
    >>> t = SegmentTargets(torch.zeros(2, 10, 4))
    >>> t.teacher_emb is None
    True
    """

    inputs: torch.Tensor
    teacher_emb: Optional[torch.Tensor] = None
    teacher_logits: Optional[torch.Tensor] = None


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

    Example
    -------
    >>> batch = DistillationBatch.toy(batch_size=2, n_frames=50, n_speakers=2)
    >>> batch.feats.shape
    torch.Size([2, 50, 8])
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


class Distiller:
    """Interface of a distillation method.

    Subclasses implement :meth:`__call__`, returning the distillation part of
    the loss (a scalar tensor) and a dict of named, detached terms. Class
    attributes say what the Brain must provide: ``uses_teacher`` (whether the
    teacher is needed at all, so ``scratch`` trains without one) and
    ``uses_projection`` (whether a learned student-to-teacher embedding
    projection is trained).

    Example
    -------
    >>> isinstance(Scratch(), Distiller)
    True
    """

    uses_teacher = True
    uses_projection = False

    def __call__(self, batch: DistillationBatch):
        """Computes the distillation loss.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        loss : torch.Tensor
        terms : dict
        """
        raise NotImplementedError

    @staticmethod
    def _check_weight(name, value):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return float(value)


class Scratch(Distiller):
    """The student trained from scratch: no distillation term.

    Example
    -------
    >>> loss, terms = Scratch()(DistillationBatch.toy())
    >>> float(loss), terms
    (0.0, {})
    """

    uses_teacher = False

    def __call__(self, batch):
        """Returns a zero loss.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        loss : torch.Tensor
        terms : dict
        """
        return batch.student_logits.new_zeros(()), {}


class VanillaKD(Distiller):
    """Hinton KD: softened-posterior KL on the clean chunk, one temperature.

    Arguments
    ---------
    temperature : float
        Softmax temperature (the loss is scaled by ``T^2``).
    weight : float
        Weight of the KD term.

    Example
    -------
    >>> loss, terms = VanillaKD(temperature=2.0)(DistillationBatch.toy())
    >>> bool(loss > 0)
    True
    """

    def __init__(self, temperature=4.0, weight=1.0):
        self.temperatures = [float(temperature)]
        self.weight = self._check_weight("weight", weight)

    def __call__(self, batch):
        """Computes ``weight * T^2 * KL(teacher || student)``.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        loss : torch.Tensor
        terms : dict
        """
        _, t_logits = batch.teacher_outputs(batch.feats, batch.lengths)
        kd = instance_alignment_loss(batch.student_logits, t_logits, self.temperatures)
        return self.weight * kd, {"kd": kd.detach()}


class EmbeddingKD(Distiller):
    """Embedding KD: distance between L2-normalised embeddings on the clean chunk.

    Arguments
    ---------
    weight : float
        Weight of the embedding term.

    Example
    -------
    >>> loss, terms = EmbeddingKD(weight=1.0)(DistillationBatch.toy())
    >>> sorted(terms)
    ['emb']
    """

    uses_projection = True

    def __init__(self, weight=1.0):
        self.weight = self._check_weight("weight", weight)

    def __call__(self, batch):
        """Computes ``weight * ||norm(t) - norm(P s)||^2``.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        loss : torch.Tensor
        terms : dict
        """
        t_emb, _ = batch.teacher_outputs(batch.feats, batch.lengths)
        emb = embedding_alignment_loss(batch.student_emb, t_emb, batch.projection)
        return self.weight * emb, {"emb": emb.detach()}


class MultiLevelKD(Distiller):
    """Multi-level KD on plain multi-duration segments (no IG).

    For each duration, one random segment per chunk is drawn; teacher and
    student both see it, and the instance, class and batch alignment terms
    are summed over temperatures (see
    :func:`speechbrain_imlkd.losses.multilevel_alignment_loss`). The
    distillation loss is ``eta * sum over durations``.

    Arguments
    ---------
    durations : sequence of float
        Segment durations in seconds.
    temperatures : sequence of float
        Softmax temperatures.
    eta : float
        Weight of the multi-level loss.
    lambda_emb : float
        Weight of the embedding term inside the instance level.
    level_weights : dict, optional
        Weights of the ``instance``, ``class`` and ``batch`` levels.
    frames_per_second : int
        Feature frame rate (10 ms hop gives 100).

    Example
    -------
    >>> d = MultiLevelKD(durations=[0.3, 0.6], temperatures=[1, 2], eta=1.0)
    >>> loss, terms = d(DistillationBatch.toy(n_frames=80))
    >>> {"instance", "class", "batch", "dur0.3", "dur0.6"} <= set(terms)
    True
    """

    uses_projection = True

    def __init__(
        self,
        durations=(1.0, 2.0, 3.0),
        temperatures=(1.0, 2.0, 3.0, 4.0),
        eta=1.0,
        lambda_emb=1.0,
        level_weights=None,
        frames_per_second=100,
    ):
        if len(durations) == 0:
            raise ValueError("durations must name at least one segment duration")
        if len(temperatures) == 0:
            raise ValueError("temperatures must not be empty")
        self.durations = [float(d) for d in durations]
        self.temperatures = [float(t) for t in temperatures]
        self.eta = self._check_weight("eta", eta)
        self.lambda_emb = self._check_weight("lambda_emb", lambda_emb)
        self.level_weights = level_weights
        self.frames_per_second = frames_per_second

    def segment_targets(self, batch):
        """Returns what teacher and student are aligned on, per duration.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        list of SegmentTargets
            One per duration: a random segment of each chunk.
        """
        segments = sample_segments(
            batch.feats,
            self.durations,
            frames_per_second=self.frames_per_second,
            generator=batch.generator,
            lengths=batch.lengths,
        )
        return [SegmentTargets(seg) for seg, _ in segments]

    def __call__(self, batch):
        """Computes ``eta * sum_d multilevel(student(x_d), teacher(x_d))``.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        loss : torch.Tensor
        terms : dict
            Each level summed over durations, plus one total per duration.
        """
        total = batch.student_logits.new_zeros(())
        terms = {}
        for duration, target in zip(self.durations, self.segment_targets(batch)):
            if target.teacher_emb is None:
                t_emb, t_logits = batch.teacher_outputs(target.inputs)
            else:
                t_emb, t_logits = target.teacher_emb, target.teacher_logits
            s_emb, s_logits = batch.student(target.inputs, None)
            loss, parts = multilevel_alignment_loss(
                s_logits,
                t_logits,
                s_emb,
                t_emb,
                temperatures=self.temperatures,
                lambda_emb=self.lambda_emb,
                weights=self.level_weights,
                projection=batch.projection,
            )
            total = total + loss
            terms[f"dur{duration:g}"] = loss.detach()
            for name, value in parts.items():
                terms[name] = terms.get(name, 0.0) + value.detach()
        return self.eta * total, terms


class IMLKD(MultiLevelKD):
    """IML-KD: multi-level alignment on integrated inputs of every duration.

    For each duration, the teacher's Integrated Gradients on the segment are
    combined with the segment into an integrated input (rule and strength
    are hyperparameters); teacher and student are then aligned on it at the
    instance, class and batch levels. Where the saliency comes from is
    pluggable: by default it is computed online with
    :class:`OnlineSaliency`; the cached mode (precomputed IG) provides the
    same call.

    Arguments
    ---------
    saliency_source : callable
        ``saliency_source(batch, durations) -> list of (segment, saliency)``
        with the saliency normalised to ``[0, 1]`` (:class:`OnlineSaliency`);
        a source may instead return ready :class:`SegmentTargets` (the IG
        cache does, with the teacher's outputs on the integrated inputs).
    rule : str
        Integration rule, a key of
        :data:`speechbrain_imlkd.integrated_inputs.INTEGRATION_RULES`.
    alpha : float
        Strength of the integration rule.
    **kwargs
        Passed to :class:`MultiLevelKD`.

    Example
    -------
    >>> from speechbrain_imlkd.attribution import integrated_gradients
    >>> d = IMLKD(
    ...     saliency_source=OnlineSaliency(target="embedding_cosine", steps=4),
    ...     durations=[0.5], temperatures=[1.0], eta=1.0,
    ... )
    >>> loss, terms = d(DistillationBatch.toy(n_frames=60))
    >>> bool(torch.isfinite(loss))
    True
    """

    def __init__(self, saliency_source, rule="saliency_scale", alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.saliency_source = saliency_source
        self.rule = rule
        self.alpha = float(alpha)

    def segment_targets(self, batch):
        """Returns one integrated input per duration.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        list of SegmentTargets
            One ``B x T_d x F`` integrated input per duration.
        """
        out = []
        for item in self.saliency_source(batch, self.durations):
            if isinstance(item, SegmentTargets):
                out.append(item)
            else:
                seg, sal = item
                out.append(
                    SegmentTargets(integrated_inputs(seg, sal, rule=self.rule, alpha=self.alpha))
                )
        return out


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
        list of tuple
        """
        from speechbrain_imlkd.attribution import (
            embedding_cosine_target,
            integrated_gradients,
            speaker_logit_target,
        )
        from speechbrain_imlkd.integrated_inputs import normalised_saliency

        embed = lambda x: batch.teacher_embed(x, None)  # noqa: E731
        if self.target == "speaker_logit":
            target_fn = speaker_logit_target(embed, batch.teacher_logits, batch.labels)
        else:
            with torch.no_grad():
                reference = batch.teacher_embed(batch.feats, batch.lengths)
            target_fn = embedding_cosine_target(embed, reference)
        kwargs = {"internal_batch_size": self.internal_batch_size}
        if self.steps is not None:
            kwargs["steps"] = self.steps
        if self.method is not None:
            kwargs["method"] = self.method
        pairs = []
        for seg, _ in sample_segments(
            batch.feats,
            durations,
            frames_per_second=self.frames_per_second,
            generator=batch.generator,
            lengths=batch.lengths,
        ):
            ig = integrated_gradients(target_fn, seg.detach(), **kwargs)
            pairs.append((seg, normalised_saliency(ig)))
        return pairs


DISTILLERS = {
    "scratch": Scratch,
    "kd": VanillaKD,
    "emb_kd": EmbeddingKD,
    "mlkd": MultiLevelKD,
    "imlkd": IMLKD,
}
"""Registry of the distillation methods, by the name used in YAML and results."""
