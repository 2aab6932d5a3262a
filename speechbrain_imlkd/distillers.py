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

The batch and segment types live in :mod:`speechbrain_imlkd.distillation_batch`
and the online saliency source of IML-KD (:class:`OnlineSaliency`) in
:mod:`speechbrain_imlkd.saliency_sources`; both are importable from here
too (``!new:speechbrain_imlkd.distillers.OnlineSaliency`` in YAML).

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

import torch

from speechbrain_imlkd.distillation_batch import (
    DistillationBatch,
    SalientSegment,
    SegmentTargets,
    StudentFn,
)
from speechbrain_imlkd.integrated_inputs import (
    expand_saliency,
    integrated_inputs,
    sample_segments,
)
from speechbrain_imlkd.losses import (
    attribution_alignment_loss,
    embedding_alignment_loss,
    instance_alignment_loss,
    multilevel_alignment_loss,
)
from speechbrain_imlkd.saliency_sources import OnlineSaliency

__all__ = [
    "DISTILLERS",
    "AttributionAlignmentKD",
    "DistillationBatch",
    "Distiller",
    "EmbeddingKD",
    "IMLKD",
    "MultiLevelKD",
    "OnlineSaliency",
    "SalientSegment",
    "Scratch",
    "SegmentTargets",
    "StudentFn",
    "VanillaKD",
]


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
        _, t_logits = batch.teacher_outputs(batch.teacher_inputs, batch.lengths)
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
        t_emb, _ = batch.teacher_outputs(batch.teacher_inputs, batch.lengths)
        emb = embedding_alignment_loss(batch.student_emb, t_emb, batch.projection)
        return self.weight * emb, {"emb": emb.detach()}


class MultiLevelKD(Distiller):
    """Multi-level KD on plain multi-duration segments (no IG).

    For each duration, one random segment per chunk is drawn; teacher and
    student both see it, and the instance, class and batch alignment terms
    are summed over temperatures (see
    :func:`speechbrain_imlkd.losses.multilevel_alignment_loss`). The
    distillation loss is ``eta * sum over durations``, plus, when
    ``kd_weight > 0``, vanilla KD on the clean chunk (the "enhances KD"
    composition: ``kd_weight * KD(clean) + eta * multi-level``; with
    ``kd_weight = 0`` the multi-level loss replaces KD).

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
    kd_weight : float
        Weight of vanilla KD on the clean chunk added to the multi-level
        loss (0: multi-level alone).
    kd_temperature : float
        Temperature of that KD term.

    Example
    -------
    >>> d = MultiLevelKD(durations=[0.3, 0.6], temperatures=[1, 2], eta=1.0)
    >>> loss, terms = d(DistillationBatch.toy(n_frames=80))
    >>> {"instance", "class", "batch", "dur0.3", "dur0.6"} <= set(terms)
    True
    >>> _, terms = MultiLevelKD(durations=[0.3], kd_weight=1.0)(DistillationBatch.toy())
    >>> "kd" in terms
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
        kd_weight=0.0,
        kd_temperature=4.0,
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
        self.kd_weight = self._check_weight("kd_weight", kd_weight)
        self.clean_kd = VanillaKD(kd_temperature, self.kd_weight) if self.kd_weight > 0 else None

    def segment_targets(self, batch):
        """Returns what teacher and student are aligned on, per duration.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        list of SegmentTargets
            One per duration: a random segment of each chunk (and the same
            frames in the teacher's features, for a teacher with its own).
        """
        segments = sample_segments(
            batch.feats,
            self.durations,
            frames_per_second=self.frames_per_second,
            generator=batch.generator,
            lengths=batch.lengths,
        )
        return [
            SegmentTargets(seg, teacher_inputs=batch.teacher_segments(starts, seg.shape[1]))
            for seg, starts in segments
        ]

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
            Each level summed over durations, plus one total per duration
            (and ``kd`` when the clean-chunk KD term is on).
        """
        total = batch.student_logits.new_zeros(())
        terms = {}
        for duration, target in zip(self.durations, self.segment_targets(batch)):
            if target.teacher_emb is None:
                t_emb, t_logits = batch.teacher_outputs(target.for_teacher)
            else:
                t_emb, t_logits = target.teacher_emb, target.teacher_logits
            s_emb, s_logits = batch.student(target.inputs, None)
            loss = self.duration_loss(batch, duration, (s_emb, s_logits), (t_emb, t_logits), terms)
            total = total + loss
        return self.add_clean_kd(batch, self.eta * total, terms)

    def duration_loss(self, batch, duration, student, teacher, terms):
        """Multi-level loss of one duration's segments, logged into ``terms``.

        Arguments
        ---------
        batch : DistillationBatch
            The batch (its ``projection`` maps student to teacher embeddings).
        duration : float
            The segments' duration (names the ``dur<d>`` term).
        student : tuple of torch.Tensor
            The student's ``(embeddings, logits)`` on the segments.
        teacher : tuple of torch.Tensor
            The teacher's ``(embeddings, logits)`` on the same segments.
        terms : dict
            Gets ``dur<d>`` and adds each level to its sum over durations.

        Returns
        -------
        torch.Tensor
            The loss of this duration.
        """
        (s_emb, s_logits), (t_emb, t_logits) = student, teacher
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
        terms[f"dur{duration:g}"] = loss.detach()
        for name, value in parts.items():
            terms[name] = terms.get(name, 0.0) + value.detach()
        return loss

    def add_clean_kd(self, batch, loss, terms):
        """Adds ``kd_weight * KD(clean chunk)`` when the composition asks for it.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.
        loss : torch.Tensor
            The alignment loss.
        terms : dict
            Logged terms, updated in place with ``kd``.

        Returns
        -------
        loss : torch.Tensor
        terms : dict

        Example
        -------
        >>> d = MultiLevelKD(durations=[0.3])
        >>> loss, terms = d.add_clean_kd(DistillationBatch.toy(), torch.zeros(()), {})
        >>> float(loss), terms
        (0.0, {})
        """
        if self.clean_kd is not None:
            kd_loss, kd_terms = self.clean_kd(batch)
            loss = loss + kd_loss
            terms.update(kd_terms)
        return loss, terms


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
            elif isinstance(item, SalientSegment):
                # Each model's integrated input is built in its own space
                # from the same frames; the teacher's outputs on its own
                # integrated input are the targets.
                out.append(
                    SegmentTargets(
                        self.integrate(item.inputs, item.saliency),
                        teacher_inputs=self.integrate(item.teacher_inputs, item.teacher_saliency),
                    )
                )
            else:
                seg, sal = item
                out.append(SegmentTargets(self.integrate(seg, sal)))
        return out

    def integrate(self, segment, saliency):
        """Applies this distiller's integration rule and strength.

        Arguments
        ---------
        segment : torch.Tensor
            ``B x T x F`` features.
        saliency : torch.Tensor
            Normalised saliency over the same frames.

        Returns
        -------
        torch.Tensor
            The integrated input.

        Example
        -------
        >>> d = IMLKD(OnlineSaliency(), alpha=1.0)
        >>> d.integrate(torch.ones(1, 2, 2), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])).tolist()
        [[[2.0, 1.0], [1.0, 1.0]]]
        """
        return integrated_inputs(segment, saliency, rule=self.rule, alpha=self.alpha)


class AttributionAlignmentKD(MultiLevelKD):
    """Attribution alignment: the student learns *where* the teacher looks.

    The other reading of the paper's "the student is trained to infer these
    representations": instead of feeding the student integrated inputs, its
    own input saliency is aligned with the teacher's. On each duration's
    segment the student's saliency is ``|d z_y / d x|`` (gradient of its
    true-speaker logit with respect to its input features, normalised by
    its maximum per segment), built with ``create_graph=True`` so that the
    alignment term trains the student's weights; the teacher's map is its
    normalised IG on the same frames (carried to the student's bands for a
    teacher with its own features). The loss is

        eta * sum_d multilevel(student(x_d), teacher(x_d))
        + gamma * sum_d (1 - cos(student map_d, teacher map_d))

    (plus the clean-chunk KD term when ``kd_weight > 0``). The double
    backward makes a step several times dearer than ``kd``: see
    ``BENCHMARKS.md``. The saliency must come from an online source (the IG
    cache stores teacher outputs on integrated inputs, not the raw segments
    this loss needs).

    Arguments
    ---------
    saliency_source : callable
        ``(batch, durations) -> list of (segment, saliency)`` or
        :class:`SalientSegment` (:class:`OnlineSaliency`).
    gamma : float
        Weight of the attribution alignment term.
    **kwargs
        Passed to :class:`MultiLevelKD`.

    Example
    -------
    >>> d = AttributionAlignmentKD(OnlineSaliency(steps=2), gamma=1.0,
    ...                            durations=[0.5], temperatures=[1.0])
    >>> loss, terms = d(DistillationBatch.toy(n_frames=60))
    >>> bool(torch.isfinite(loss)), "attr" in terms
    (True, True)
    """

    def __init__(self, saliency_source, gamma=1.0, **kwargs):
        super().__init__(**kwargs)
        self.saliency_source = saliency_source
        self.gamma = self._check_weight("gamma", gamma)

    def student_saliency(self, batch, segment):
        """The student's normalised input-gradient map on ``segment``.

        Arguments
        ---------
        batch : DistillationBatch
            The batch (student, labels).
        segment : torch.Tensor
            ``B x T x F`` student-space features.

        Returns
        -------
        emb : torch.Tensor
            Student embeddings of the segment.
        logits : torch.Tensor
            Student logits of the segment.
        saliency : torch.Tensor
            ``B x T x F`` map in ``[0, 1]``, differentiable w.r.t. the
            student's weights.
        """
        x = segment.detach().requires_grad_(True)
        emb, logits = batch.student(x, None)
        target = logits.gather(1, batch.labels.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(target, x, create_graph=True)
        sal = grad.abs()
        peak = sal.flatten(1).amax(dim=1).view(-1, 1, 1)
        return emb, logits, sal / (peak + torch.finfo(sal.dtype).eps)

    def __call__(self, batch):
        """Output alignment plus attribution alignment on every duration.

        Arguments
        ---------
        batch : DistillationBatch
            The batch.

        Returns
        -------
        loss : torch.Tensor
        terms : dict
            The multi-level terms, ``attr`` and one total per duration.
        """
        total = batch.student_logits.new_zeros(())
        attr_total = batch.student_logits.new_zeros(())
        terms = {}
        items = self.saliency_source(batch, self.durations)
        for duration, item in zip(self.durations, items):
            if isinstance(item, SegmentTargets):
                raise ValueError(
                    "attribution alignment needs raw segments and saliency maps: "
                    "use ig_mode: online (OnlineSaliency)"
                )
            seg, sal = item[0], item[1]
            t_seg = item.teacher_inputs if isinstance(item, SalientSegment) else seg
            t_emb, t_logits = batch.teacher_outputs(t_seg)
            s_emb, s_logits, s_map = self.student_saliency(batch, seg)
            loss = self.duration_loss(batch, duration, (s_emb, s_logits), (t_emb, t_logits), terms)
            attr = attribution_alignment_loss(s_map, expand_saliency(sal, s_map.shape[-1]))
            total = total + loss
            attr_total = attr_total + attr
        terms["attr"] = attr_total.detach()
        return self.add_clean_kd(batch, self.eta * total + self.gamma * attr_total, terms)


DISTILLERS = {
    "scratch": Scratch,
    "kd": VanillaKD,
    "emb_kd": EmbeddingKD,
    "mlkd": MultiLevelKD,
    "imlkd": IMLKD,
    "attr_kd": AttributionAlignmentKD,
}
"""Registry of the distillation methods, by the name used in YAML and results."""
