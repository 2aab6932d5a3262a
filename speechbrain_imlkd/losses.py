"""Instance, class and batch alignment between a student and a frozen teacher.

With ``P_s`` and ``P_t`` the ``B x C`` softened posteriors
``softmax(logits / T)`` of student and teacher over the ``C`` training
speakers:

* instance level: ``T^2 * KL(P_t || P_s)`` averaged over the batch, and the
  squared distance between L2-normalised embeddings;
* class level: ``||P_t^T P_t - P_s^T P_s||_F^2 / C`` (class-by-class
  co-activation over the batch);
* batch level: ``||P_t P_t^T - P_s P_s^T||_F^2 / B`` (sample-by-sample
  similarity).

Each level is one function of one temperature's posteriors (the instance
term takes logits, for a stable log-softmax); :func:`multilevel_alignment_loss`
loops over temperatures and sums. Teacher tensors are detached inside every
function, so gradients only ever reach the student.

Example
-------
>>> import torch
>>> s, t = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6)
>>> total, terms = multilevel_alignment_loss(s, t, None, None, temperatures=[1, 2],
...                                          lambda_emb=0.0)
>>> sorted(terms)
['batch', 'class', 'emb', 'instance']
>>> total.backward(); s.grad.shape
torch.Size([4, 6])
"""

import math

import torch
import torch.nn.functional as F

#: Softmax temperatures used when none are given.
DEFAULT_TEMPERATURES = (1.0, 2.0, 3.0, 4.0)
#: Weights of the three levels used when none are given.
DEFAULT_LEVEL_WEIGHTS = {"instance": 1.0, "class_": 1.0, "batch": 1.0}


def check_temperatures(temperatures):
    """Validates softmax temperatures.

    Arguments
    ---------
    temperatures : sequence of float
        At least one, each positive and finite.

    Returns
    -------
    list of float

    Example
    -------
    >>> check_temperatures((1, 2))
    [1.0, 2.0]
    """
    temps = [float(t) for t in temperatures]
    if not temps:
        raise ValueError("temperatures must not be empty")
    for t in temps:
        if not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperatures must be positive, got temperature={t}")
    return temps


def _check_pair(student, teacher, what):
    """Checks student and teacher tensors are ``B x N`` with equal shapes."""
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher {what} must both be B x N with equal shapes, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )


def student_logits(classifier_cosines, scale):
    """Student logits: its AAM classifier's cosines times the scale, no margin.

    The margin only belongs in the training loss on the true class; the
    posteriors compared with the teacher's are those of the plain scaled
    cosines, as the teacher's are.

    Arguments
    ---------
    classifier_cosines : torch.Tensor
        ``B x 1 x N`` (SpeechBrain ``Classifier`` output) or ``B x N``.
    scale : float
        The AAM scale ``s`` (positive).

    Returns
    -------
    torch.Tensor
        ``B x N`` logits.

    Example
    -------
    >>> import torch
    >>> student_logits(torch.tensor([[[0.5, -0.1]]]), scale=30.0).tolist()
    [[15.0, -3.0]]
    """
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"logit scale must be positive, got scale={scale}")
    if classifier_cosines.dim() == 3 and classifier_cosines.shape[1] == 1:
        classifier_cosines = classifier_cosines.squeeze(1)
    if classifier_cosines.dim() != 2:
        raise ValueError(
            f"classifier cosines must be B x 1 x N or B x N, got {tuple(classifier_cosines.shape)}"
        )
    return scale * classifier_cosines


def softened_posteriors(logits, temperature):
    """``softmax(logits / T)`` over the last axis.

    Arguments
    ---------
    logits : torch.Tensor
        ``B x C``.
    temperature : float
        Positive temperature.

    Returns
    -------
    torch.Tensor
        ``B x C`` rows summing to one.

    Example
    -------
    >>> import torch
    >>> softened_posteriors(torch.tensor([[0.0, 0.0]]), 2.0).tolist()
    [[0.5, 0.5]]
    """
    (temperature,) = check_temperatures([temperature])
    return torch.softmax(logits / temperature, dim=-1)


def instance_alignment_loss(student_logits, teacher_logits, temperatures=DEFAULT_TEMPERATURES):
    """``sum_T T^2 KL(softmax(t / T) || softmax(s / T))``, batch mean.

    Arguments
    ---------
    student_logits : torch.Tensor
        ``B x C``.
    teacher_logits : torch.Tensor
        ``B x C``; detached here.
    temperatures : sequence of float
        Non-empty, positive.

    Returns
    -------
    torch.Tensor
        Scalar.

    Example
    -------
    >>> import torch
    >>> s = torch.tensor([[0.0, 0.0]])
    >>> t = torch.tensor([[0.0, math.log(3.0)]])
    >>> round(instance_alignment_loss(s, t, [1.0]).item(), 4)  # .25 ln .5 + .75 ln 1.5
    0.1308
    """
    temps = check_temperatures(temperatures)
    _check_pair(student_logits, teacher_logits, "logits")
    teacher_logits = teacher_logits.detach()
    total = student_logits.new_zeros(())
    for t in temps:
        log_ps = F.log_softmax(student_logits / t, dim=-1)
        log_pt = F.log_softmax(teacher_logits / t, dim=-1)
        total = total + _scaled_kl(log_ps, log_pt, t)
    return total


def _scaled_kl(log_ps, log_pt, t):
    """``T^2 KL(p_t || p_s)`` (batch mean) from log-posteriors at temperature ``t``."""
    return t**2 * F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)


def _class_gram_gap(a, b):
    """``||a^T a - b^T b||_F^2`` from ``B x B`` products only.

    Expanding the trace gives ``||a a^T||^2 - 2 ||a b^T||^2 + ||b b^T||^2``,
    which costs ``O(B^2 C)`` instead of the ``O(B C^2)`` of the ``C x C``
    matrices (``C`` is thousands of training speakers).
    """
    gap = (a @ a.T).square().sum() - 2 * (a @ b.T).square().sum() + (b @ b.T).square().sum()
    # Rounding can leave a tiny negative value when the two are equal.
    return gap.clamp_min(0)


def class_alignment_loss(ps, pt):
    """Class level: ``||P_t^T P_t - P_s^T P_s||_F^2 / C``.

    Arguments
    ---------
    ps : torch.Tensor
        ``B x C`` student posteriors.
    pt : torch.Tensor
        ``B x C`` teacher posteriors; detached here.

    Returns
    -------
    torch.Tensor
        Scalar.

    Example
    -------
    >>> import torch
    >>> class_alignment_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item()
    1.0
    """
    _check_pair(ps, pt, "posteriors")
    return _class_gram_gap(pt.detach(), ps) / ps.shape[1]


def batch_alignment_loss(ps, pt):
    """Batch level: ``||P_t P_t^T - P_s P_s^T||_F^2 / B``.

    Arguments
    ---------
    ps : torch.Tensor
        ``B x C`` student posteriors.
    pt : torch.Tensor
        ``B x C`` teacher posteriors; detached here.

    Returns
    -------
    torch.Tensor
        Scalar.

    Example
    -------
    >>> import torch
    >>> ps = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    >>> pt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> batch_alignment_loss(ps, pt).item()
    1.0
    """
    _check_pair(ps, pt, "posteriors")
    pt = pt.detach()
    return (pt @ pt.T - ps @ ps.T).square().sum() / ps.shape[0]


class EmbeddingProjection(torch.nn.Module):
    """Learned linear map from student to teacher embedding space.

    Identity (no parameters) when the dimensions are equal.

    Arguments
    ---------
    student_dim : int
        Student embedding size.
    teacher_dim : int
        Teacher embedding size.

    Example
    -------
    >>> import torch
    >>> EmbeddingProjection(4, 6)(torch.zeros(2, 4)).shape
    torch.Size([2, 6])
    >>> len(list(EmbeddingProjection(6, 6).parameters()))
    0
    """

    def __init__(self, student_dim, teacher_dim):
        super().__init__()
        self.linear = (
            None if student_dim == teacher_dim else torch.nn.Linear(student_dim, teacher_dim)
        )

    def forward(self, x):
        """Maps ``... x student_dim`` to ``... x teacher_dim``.

        Arguments
        ---------
        x : torch.Tensor
            Student embeddings.

        Returns
        -------
        torch.Tensor
        """
        return x if self.linear is None else self.linear(x)


def embedding_alignment_loss(student_emb, teacher_emb, projection=None):
    """Mean squared distance between L2-normalised embeddings (``2 - 2 cos``).

    Arguments
    ---------
    student_emb : torch.Tensor
        ``B x D_s`` (``B x 1 x D_s`` from ECAPA is accepted).
    teacher_emb : torch.Tensor
        ``B x D_t``; detached here.
    projection : callable, optional
        Maps student to teacher dimension (e.g. :class:`EmbeddingProjection`);
        required when ``D_s != D_t``.

    Returns
    -------
    torch.Tensor
        Scalar in ``[0, 4]``.

    Example
    -------
    >>> import torch
    >>> embedding_alignment_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])).item()
    2.0
    """
    student_emb = _flatten_embedding(student_emb)
    teacher_emb = _flatten_embedding(teacher_emb).detach()
    if projection is not None:
        student_emb = projection(student_emb)
    elif student_emb.shape[-1] != teacher_emb.shape[-1]:
        raise ValueError(
            f"student embedding dim {student_emb.shape[-1]} differs from teacher dim "
            f"{teacher_emb.shape[-1]}: pass an EmbeddingProjection"
        )
    _check_pair(student_emb, teacher_emb, "embeddings")
    diff = F.normalize(student_emb, dim=-1) - F.normalize(teacher_emb, dim=-1)
    return diff.square().sum(dim=-1).mean()


def _flatten_embedding(emb):
    """``B x 1 x D`` (ECAPA output) to ``B x D``."""
    return emb.squeeze(1) if emb.dim() == 3 and emb.shape[1] == 1 else emb


def _level_weights(weights):
    """Fills in default level weights; accepts ``class`` for ``class_``."""
    merged = dict(DEFAULT_LEVEL_WEIGHTS)
    for key, value in (weights or {}).items():
        name = "class_" if key == "class" else key
        if name not in merged:
            raise ValueError(
                f"unknown level weight {key!r}; expected instance, class_ (or class), batch"
            )
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"level weight {key}={value} must be >= 0")
        merged[name] = float(value)
    return merged


def multilevel_alignment_loss(
    student_logits,
    teacher_logits,
    student_emb,
    teacher_emb,
    temperatures=DEFAULT_TEMPERATURES,
    lambda_emb=1.0,
    weights=None,
    projection=None,
):
    """Instance, class and batch alignment, each summed over temperatures.

    ``total = w_instance * (sum_T instance_T + lambda_emb * emb)
    + w_class * sum_T class_T + w_batch * sum_T batch_T``, where the class and
    batch levels are computed on the posteriors softened at each temperature
    (not scaled by ``T^2``: unlike the KL term, their gradients do not shrink
    as ``1 / T^2``).

    Arguments
    ---------
    student_logits : torch.Tensor
        ``B x C`` student logits (see :func:`student_logits`).
    teacher_logits : torch.Tensor
        ``B x C``; detached here.
    student_emb : torch.Tensor or None
        ``B x D_s``; may be ``None`` when ``lambda_emb == 0``.
    teacher_emb : torch.Tensor or None
        ``B x D_t``; detached here.
    temperatures : sequence of float
        Non-empty, positive.
    lambda_emb : float
        Weight of the embedding term inside the instance level, ``>= 0``.
    weights : dict, optional
        ``instance``, ``class_`` and ``batch`` weights (1 when missing).
    projection : callable, optional
        Student-to-teacher embedding projection.

    Returns
    -------
    total : torch.Tensor
        Scalar loss.
    terms : dict
        Unweighted ``instance``, ``emb``, ``class`` and ``batch`` terms,
        detached, for logging.

    Example
    -------
    >>> import torch
    >>> logits = torch.randn(3, 5)
    >>> total, terms = multilevel_alignment_loss(
    ...     logits, logits, torch.ones(3, 4), torch.ones(3, 4), [1.0, 2.0], 1.0)
    >>> abs(total.item()) < 1e-5
    True
    """
    temps = check_temperatures(temperatures)
    w = _level_weights(weights)
    if not math.isfinite(lambda_emb) or lambda_emb < 0:
        raise ValueError(f"lambda_emb must be >= 0, got lambda_emb={lambda_emb}")
    _check_pair(student_logits, teacher_logits, "logits")
    zero = student_logits.new_zeros(())
    levels = {"instance": zero, "class": zero, "batch": zero}
    teacher_logits = teacher_logits.detach()
    for t in temps:
        # One softmax per side and temperature serves all three levels.
        log_ps = F.log_softmax(student_logits / t, dim=-1)
        log_pt = F.log_softmax(teacher_logits / t, dim=-1)
        ps, pt = log_ps.exp(), log_pt.exp()
        levels["instance"] = levels["instance"] + _scaled_kl(log_ps, log_pt, t)
        levels["class"] = levels["class"] + class_alignment_loss(ps, pt)
        levels["batch"] = levels["batch"] + batch_alignment_loss(ps, pt)
    emb = zero
    if lambda_emb > 0:
        emb = embedding_alignment_loss(student_emb, teacher_emb, projection)
    total = (
        w["instance"] * (levels["instance"] + lambda_emb * emb)
        + w["class_"] * levels["class"]
        + w["batch"] * levels["batch"]
    )
    terms = {name: value.detach() for name, value in levels.items()}
    terms["emb"] = emb.detach()
    return total, terms


def attribution_alignment_loss(student_map, teacher_map):
    """``1 - cos`` between a student's input-saliency map and the teacher's.

    Both maps are flattened per sample; the cosine ignores their scales, so
    a student whose gradient map is any positive multiple of the teacher's
    normalised IG map scores 0. The teacher's map is detached: only the
    student learns.

    Arguments
    ---------
    student_map : torch.Tensor
        ``B x ...`` non-negative student saliency (differentiable).
    teacher_map : torch.Tensor
        ``B x ...`` teacher saliency, same shape.

    Returns
    -------
    torch.Tensor
        Scalar in ``[0, 1]`` for non-negative maps, mean over the batch.

    Example
    -------
    >>> import torch
    >>> m = torch.rand(2, 5, 3)
    >>> abs(attribution_alignment_loss(2 * m, m).item()) < 1e-6
    True
    >>> attribution_alignment_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item()
    1.0
    """
    if student_map.shape != teacher_map.shape:
        raise ValueError(
            f"student and teacher saliency maps differ in shape: "
            f"{tuple(student_map.shape)} and {tuple(teacher_map.shape)}"
        )
    cos = F.cosine_similarity(student_map.flatten(1), teacher_map.detach().flatten(1), dim=1)
    return (1.0 - cos).mean()
