"""Integrated Gradients of a frozen teacher w.r.t. its normalised features.

For an input ``x`` (``B x T x F`` normalised filterbanks), a baseline ``x'``
and a scalar target ``F`` per sample,

    IG(x) = (x - x') * integral_0^1 dF(x' + a (x - x')) / dx da,

and the integral is replaced by a quadrature ``sum_k w_k g(a_k)``:

* ``riemann_right``: ``a_k = k / m``, ``w_k = 1 / m`` (the formula of the
  IG paper and of IML-KD);
* ``trapezoid``: ``a_k = k / (m - 1)``, end weights halved;
* ``gauss_legendre``: Gauss-Legendre nodes and weights mapped to ``[0, 1]``.

The ``m`` path points are folded into the batch dimension, a few whole copies
of the batch at a time (``internal_batch_size`` rows), so memory stays bounded
and a teacher in eval mode (BatchNorm on running statistics) gives exactly the
result of one point at a time. ``target_fn`` is therefore called on ``k * B``
rows ordered step-major (row ``s * B + b`` is sample ``b`` at path point ``s``)
and must return one scalar per row; the target builders below repeat their
per-sample data (labels, references, lengths) accordingly. This is the row
order captum uses too.

Own implementation, not ``captum.attr.IntegratedGradients``: both run at the
same speed (``benchmarks/results_ig.md``, "own vs captum"), but captum 0.9's
``riemann_trapezoid`` uses step sizes ``1/m`` (ends halved) on nodes spaced
``1/(m-1)``, so its weights sum to ``(m-1)/m`` and its attributions are that
much too small. ``tests/test_attribution.py`` checks this implementation
against captum within 1e-5 for ``riemann_right`` and ``gausslegendre`` (and
for ``riemann_trapezoid`` once rescaled by ``m/(m-1)``), and against a
one-point-at-a-time loop for all three rules. Gradients are accumulated
chunk by chunk, so only one chunk's graph is alive at a time.

Example
-------
>>> import torch
>>> x = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
>>> square = lambda f: (f**2).sum(dim=(1, 2))
>>> ig = integrated_gradients(square, x, steps=2, method="gauss_legendre")
>>> torch.allclose(ig, x**2)
True
"""

import numpy as np
import torch

#: Quadrature rule used when none is given: the cheapest setting with a median
#: completeness gap under 2% on a trained ECAPA teacher (C=64, real fbank of
#: the synthetic corpus): 1.3% for the speaker logit, 0.8% for the embedding
#: cosine, where right Riemann needs 32 steps. The 90th percentile is much
#: higher for the logit target (segments whose F(x) - F(x') is small), and an
#: untrained teacher is far less smooth; see ``benchmarks/results_ig.md``.
DEFAULT_METHOD = "gauss_legendre"
#: Number of path points used when none is given (see ``DEFAULT_METHOD``).
DEFAULT_STEPS = 16
#: Rows (path points x samples) per forward/backward pass.
DEFAULT_INTERNAL_BATCH_SIZE = 64

#: Names of the quadrature rules accepted by :func:`integrated_gradients`.
METHODS = ("riemann_right", "trapezoid", "gauss_legendre")
#: The same rules under captum's names (for comparisons).
CAPTUM_METHODS = {
    "riemann_right": "riemann_right",
    "trapezoid": "riemann_trapezoid",
    "gauss_legendre": "gausslegendre",
}


def quadrature(method, steps):
    """Nodes and weights of a quadrature rule on ``[0, 1]``.

    Arguments
    ---------
    method : str
        One of ``METHODS``.
    steps : int
        Number of nodes, at least 2.

    Returns
    -------
    alphas : list of float
        The nodes, in increasing order.
    weights : list of float
        The weights; they sum to one.

    Example
    -------
    >>> quadrature("riemann_right", 4)
    ([0.25, 0.5, 0.75, 1.0], [0.25, 0.25, 0.25, 0.25])
    >>> quadrature("trapezoid", 3)
    ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    >>> a, w = quadrature("gauss_legendre", 2)
    >>> [round(v, 4) for v in a], w
    ([0.2113, 0.7887], [0.5, 0.5])
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an integer, got {steps!r}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got steps={steps}")
    if method == "riemann_right":
        return [k / steps for k in range(1, steps + 1)], [1.0 / steps] * steps
    if method == "trapezoid":
        weights = [1.0 / (steps - 1)] * steps
        weights[0] /= 2
        weights[-1] /= 2
        return [k / (steps - 1) for k in range(steps)], weights
    if method == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * (nodes + 1.0)).tolist(), (0.5 * weights).tolist()
    raise ValueError(f"unknown IG method={method!r}; expected one of {METHODS}")


def integrated_gradients(
    target_fn,
    inputs,
    baseline=None,
    steps=DEFAULT_STEPS,
    method=DEFAULT_METHOD,
    internal_batch_size=DEFAULT_INTERNAL_BATCH_SIZE,
    return_convergence=False,
):
    """Integrated Gradients of ``target_fn`` along the straight path.

    Arguments
    ---------
    target_fn : callable
        Maps ``N x T x F`` features to ``(N,)`` scalars, ``N`` a multiple of
        ``B`` with rows ordered step-major (see the module docstring). Only
        ``inputs`` receive gradients: parameters of a model inside are left
        untouched (no ``.grad`` accumulates).
    inputs : torch.Tensor
        ``B x T x F`` normalised features.
    baseline : torch.Tensor or float, optional
        Broadcastable to ``inputs``; zeros (the sentence mean in the
        normalised space) by default.
    steps : int
        Number of path points ``m`` (at least 2).
    method : str
        ``"riemann_right"``, ``"trapezoid"`` or ``"gauss_legendre"``.
    internal_batch_size : int or None
        Rows per forward/backward pass, rounded down to a whole number of
        copies of the batch (at least one). ``None``: all points at once.
    return_convergence : bool
        Also return the per-sample completeness error
        ``sum(IG) - (F(x) - F(x'))`` (costs one more forward pass).

    Returns
    -------
    attributions : torch.Tensor
        Shaped like ``inputs``, detached (no graph is kept).
    delta : torch.Tensor
        ``(B,)``, only when ``return_convergence``.

    Example
    -------
    >>> import torch
    >>> w = torch.tensor([2.0, -1.0])
    >>> linear = lambda f: (f * w).sum(dim=(1, 2))
    >>> x = torch.ones(3, 4, 2)
    >>> ig, delta = integrated_gradients(
    ...     linear, x, steps=4, method="riemann_right", return_convergence=True
    ... )
    >>> ig[0, 0].tolist(), delta.abs().max().item() < 1e-5
    ([2.0, -1.0], True)
    """
    alphas, weights = quadrature(method, steps)
    inputs = _check_inputs(inputs)
    baseline = _broadcast_baseline(baseline, inputs)
    chunk = _steps_per_chunk(internal_batch_size, inputs.shape[0], steps)
    path_grads = _path_gradient_sum(target_fn, inputs, baseline, alphas, weights, chunk)
    attributions = (inputs - baseline) * path_grads
    if not return_convergence:
        return attributions
    f_x, f_base = _endpoint_values(target_fn, inputs, baseline)
    delta = attributions.sum(dim=tuple(range(1, inputs.dim()))) - (f_x - f_base)
    return attributions, delta


def _check_inputs(inputs):
    """Checks the input is a floating tensor with a batch axis; detaches it."""
    if not torch.is_tensor(inputs) or not inputs.is_floating_point():
        raise TypeError("inputs must be a floating point tensor (B x T x F)")
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be B x ... with B > 0, got {tuple(inputs.shape)}")
    return inputs.detach()


def _broadcast_baseline(baseline, inputs):
    """Returns the baseline expanded to the shape of ``inputs``."""
    if baseline is None:
        return torch.zeros_like(inputs)
    baseline = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    try:
        return baseline.detach().expand_as(inputs)
    except RuntimeError as err:
        raise ValueError(
            f"baseline of shape {tuple(baseline.shape)} does not broadcast to "
            f"inputs of shape {tuple(inputs.shape)}"
        ) from err


def _steps_per_chunk(internal_batch_size, batch_size, steps):
    """Path points per pass: whole copies of the batch, at least one."""
    if internal_batch_size is None:
        return steps
    if isinstance(internal_batch_size, bool) or internal_batch_size < 1:
        raise ValueError(
            f"internal_batch_size must be positive or None, got {internal_batch_size}"
        )
    return max(1, min(steps, internal_batch_size // batch_size))


def _call_target(target_fn, features):
    """Calls ``target_fn`` and checks it returns one scalar per row."""
    out = target_fn(features)
    if not torch.is_tensor(out) or out.shape != (features.shape[0],):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(
            f"target_fn must return one scalar per row, shape ({features.shape[0]},), "
            f"got {shape}"
        )
    return out


def _path_gradient_sum(target_fn, inputs, baseline, alphas, weights, chunk):
    """``sum_k w_k dF/dx (x' + a_k (x - x'))``, ``chunk`` path points per pass."""
    total = torch.zeros_like(inputs)
    diff = inputs - baseline
    shape = (-1,) + (1,) * inputs.dim()
    for start in range(0, len(alphas), chunk):
        a = inputs.new_tensor(alphas[start : start + chunk]).view(shape)
        w = inputs.new_tensor(weights[start : start + chunk]).view(shape)
        points = (baseline + a * diff).flatten(0, 1).requires_grad_(True)
        with torch.enable_grad():
            out = _call_target(target_fn, points)
            # grad w.r.t. the points only: model parameters accumulate nothing.
            (grad,) = torch.autograd.grad(out.sum(), points)
        total += (w * grad.view(len(a), *inputs.shape)).sum(dim=0)
    return total


@torch.no_grad()
def _endpoint_values(target_fn, inputs, baseline):
    """``F(x)`` and ``F(x')`` in one pass of ``2 B`` rows."""
    out = _call_target(target_fn, torch.cat([inputs, baseline]))
    return out[: inputs.shape[0]], out[inputs.shape[0] :]


def _repeat_rows(values, n_rows, name):
    """Tiles per-sample ``values`` (first axis ``B``) to ``n_rows`` step-major rows."""
    if values is None:
        return None
    batch = values.shape[0]
    if n_rows % batch != 0:
        raise ValueError(
            f"target got {n_rows} rows, not a multiple of the {batch} samples of {name}"
        )
    return values.repeat(n_rows // batch, *([1] * (values.dim() - 1)))


def _embed(embed_fn, features, lengths):
    """Calls ``embed_fn`` with tiled relative lengths when they are given."""
    if lengths is None:
        return embed_fn(features)
    return embed_fn(features, _repeat_rows(lengths, features.shape[0], "lengths"))


def speaker_logit_target(embed_fn, logits_fn, labels, lengths=None):
    """Target: the teacher's logit of the true speaker of each sample.

    Arguments
    ---------
    embed_fn : callable
        ``embed_fn(feats[, lengths]) -> N x D`` (e.g. ``Teacher.embed``).
    logits_fn : callable
        ``N x D -> N x S`` logits over training speakers (``Teacher.logits``).
    labels : torch.Tensor
        ``(B,)`` speaker indices into the logits.
    lengths : torch.Tensor, optional
        ``(B,)`` relative lengths, passed to ``embed_fn`` (ECAPA's attentive
        pooling ignores the padding).

    Returns
    -------
    target_fn : callable
        ``N x T x F -> (N,)``, ``N`` a multiple of ``B``.

    Example
    -------
    >>> import torch
    >>> embed = lambda f: f.mean(dim=1)
    >>> target = speaker_logit_target(embed, lambda e: 10 * e, torch.tensor([1, 0]))
    >>> feats = torch.tensor([[[1.0, 3.0]], [[5.0, 7.0]]])
    >>> target(feats).tolist()
    [30.0, 50.0]
    >>> target(torch.cat([feats, feats])).tolist()
    [30.0, 50.0, 30.0, 50.0]
    """
    labels = torch.as_tensor(labels, dtype=torch.long)

    def target_fn(features):
        logits = logits_fn(_embed(embed_fn, features, lengths))
        rows = _repeat_rows(labels.to(logits.device), logits.shape[0], "labels")
        return logits.gather(1, rows[:, None]).squeeze(1)

    return target_fn


def embedding_cosine_target(embed_fn, reference_embeddings, lengths=None):
    """Label-free target: cosine between a segment's embedding and a reference.

    The reference is typically the teacher embedding of the whole training
    chunk the segment was cut from, so the attribution says which bins make
    the segment sound like its utterance.

    Arguments
    ---------
    embed_fn : callable
        ``embed_fn(feats[, lengths]) -> N x D``.
    reference_embeddings : torch.Tensor
        ``B x D``; detached here.
    lengths : torch.Tensor, optional
        ``(B,)`` relative lengths passed to ``embed_fn``.

    Returns
    -------
    target_fn : callable
        ``N x T x F -> (N,)``, ``N`` a multiple of ``B``.

    Example
    -------
    >>> import torch
    >>> target = embedding_cosine_target(
    ...     lambda f: f.mean(dim=1), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    ... )
    >>> target(torch.tensor([[[2.0, 0.0]], [[0.0, 3.0]]])).tolist()
    [1.0, 0.7071067690849304]
    """
    reference = reference_embeddings.detach()

    def target_fn(features):
        emb = _embed(embed_fn, features, lengths)
        ref = _repeat_rows(reference.to(emb.device), emb.shape[0], "reference_embeddings")
        return torch.nn.functional.cosine_similarity(emb, ref, dim=-1)

    return target_fn


def completeness_gap(attributions, target_fn, inputs, baseline=None, eps=1e-12):
    """Relative completeness error of attributions, one value per sample.

    ``|sum IG - (F(x) - F(x'))| / |F(x) - F(x')|``: IG is exact when the
    quadrature is, so this measures the quadrature error.

    Arguments
    ---------
    attributions : torch.Tensor
        ``B x T x F`` attributions of ``inputs``.
    target_fn : callable
        The target they were computed for.
    inputs : torch.Tensor
        ``B x T x F`` features.
    baseline : torch.Tensor or float, optional
        The baseline used; zeros by default.
    eps : float
        Floor on the denominator, so that ``F(x) = F(x')`` gives a large
        finite value instead of a division by zero.

    Returns
    -------
    torch.Tensor
        ``(B,)`` relative gaps.

    Example
    -------
    >>> import torch
    >>> x = torch.ones(1, 2, 2)
    >>> cube = lambda f: (f**3).sum(dim=(1, 2))
    >>> ig = integrated_gradients(cube, x, steps=2, method="riemann_right")
    >>> completeness_gap(ig, cube, x).tolist()
    [0.875]
    """
    inputs = _check_inputs(inputs)
    baseline = _broadcast_baseline(baseline, inputs)
    f_x, f_base = _endpoint_values(target_fn, inputs, baseline)
    change = f_x - f_base
    total = attributions.detach().sum(dim=tuple(range(1, inputs.dim())))
    return (total - change).abs() / change.abs().clamp_min(eps)
