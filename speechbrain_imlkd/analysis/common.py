"""Input checks and small helpers shared by the saliency and faithfulness analyses.

Example
-------
>>> import torch
>>> _check_feats(torch.zeros(1, 0, 4))
Traceback (most recent call last):
...
ValueError: feats must be a non-empty B x T x F tensor, got shape (1, 0, 4)
>>> _duration_label(1.0)
'1s'

Authors
 * speechbrain-imlkd contributors 2025
"""

import numpy as np
import torch

#: Name under which :func:`~speechbrain_imlkd.analysis.run_analyses` stores the teacher.
TEACHER_NAME = "teacher"


def _check_feats(feats, name="feats"):
    """Checks a ``B x T x F`` floating tensor with ``B, T, F > 0``; detaches it."""
    if not torch.is_tensor(feats) or not feats.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor (B x T x F)")
    if feats.dim() != 3 or min(feats.shape) == 0:
        raise ValueError(
            f"{name} must be a non-empty B x T x F tensor, got shape {tuple(feats.shape)}"
        )
    if not torch.isfinite(feats).all():
        raise ValueError(f"{name} contains NaN or inf")
    return feats.detach()


def _check_int(name, value, minimum):
    """Rejects a non-integer (or bool) or one below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _embed_fn(model):
    """``feats -> N x D`` for a model with ``.embed`` (a ``Teacher``) or a callable."""
    embed = getattr(model, "embed", None)
    if embed is None or not callable(embed):
        if not callable(model):
            raise TypeError(
                f"model of type {type(model).__name__} has no embed() method and is not "
                "callable: pass a Teacher from load_teacher or a feats -> embeddings callable"
            )
        embed = model

    def embed_fn(features):
        emb = embed(features)
        return emb.reshape(emb.shape[0], -1)

    return embed_fn


def _check_reference(reference, batch, name="reference_embeddings"):
    """A ``B x D`` reference (a single ``D`` vector is shared by the batch)."""
    if not torch.is_tensor(reference) or not reference.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor (B x D or D)")
    reference = reference.detach()
    if reference.dim() == 1:
        reference = reference.expand(batch, -1)
    if reference.dim() != 2 or reference.shape[0] != batch:
        raise ValueError(
            f"{name} of shape {tuple(reference.shape)} does not give one embedding per "
            f"segment: expected {batch} x D (or D)"
        )
    return reference


def _check_embedding_dim(embed_fn, feats, reference, name):
    """Raises when the model's embeddings and the reference differ in size."""
    with torch.no_grad():
        dim = embed_fn(feats[:1]).shape[-1]
    if reference.shape[-1] != dim:
        raise ValueError(
            f"{name} has {reference.shape[-1]} dimensions but the model's embeddings "
            f"have {dim}: use references computed by the same model"
        )


def _baseline_like(baseline_value, feats):
    """The baseline expanded to ``feats``' shape."""
    value = torch.as_tensor(baseline_value, dtype=feats.dtype, device=feats.device)
    if not torch.isfinite(value).all():
        raise ValueError(f"baseline_value={baseline_value!r} must be finite")
    try:
        return value.expand_as(feats)
    except RuntimeError as err:
        raise ValueError(
            f"baseline_value of shape {tuple(value.shape)} does not broadcast to the "
            f"features' shape {tuple(feats.shape)}"
        ) from err


def _as_numpy(x):
    """Tensor or array-like to a float64 numpy array."""
    if torch.is_tensor(x):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64)


def _trapezoid(y, x):
    """Trapezoid area (``np.trapezoid`` in numpy 2, ``np.trapz`` before)."""
    integrate = getattr(np, "trapezoid", None) or np.trapz
    return float(integrate(y, x))



def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _duration_label(duration):
    """``1.0 -> '1s'``: the key used for durations in results."""
    try:
        return f"{float(duration):g}s"
    except (TypeError, ValueError):
        return str(duration)
