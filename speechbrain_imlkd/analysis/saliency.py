"""Where does a model look? Saliency maps, their agreement, and their figure.

:func:`model_saliency` computes Integrated Gradients of a model's own
embedding w.r.t. its normalised input features, with a label-free target
(cosine to a reference embedding of the same speaker), so that models
trained on different label sets can be compared.
:func:`saliency_rank_correlation` measures how much two maps agree
(Spearman over time-frequency bins or frames) and
:func:`plot_saliency_maps` shows them side by side.

Example
-------
>>> import torch
>>> maps = torch.rand(2, 10, 4)
>>> saliency_rank_correlation(maps, maps).tolist()
[1.0, 1.0]

Authors
 * speechbrain-imlkd contributors 2025
"""

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from speechbrain_imlkd.analysis.common import (
    TEACHER_NAME,
    _as_numpy,
    _check_embedding_dim,
    _check_feats,
    _check_reference,
    _duration_label,
    _embed_fn,
    _pyplot,
)
from speechbrain_imlkd.attribution import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    DEFAULT_METHOD,
    DEFAULT_STEPS,
    embedding_cosine_target,
    integrated_gradients,
)
from speechbrain_imlkd.integrated_inputs import normalised_saliency

#: Label-free IG targets understood by :func:`model_saliency`.
TARGETS = ("embedding_cosine",)
#: Levels at which :func:`saliency_rank_correlation` compares maps.
LEVELS = ("bins", "frames")


def model_saliency(
    model,
    feats,
    target="embedding_cosine",
    reference=None,
    steps=DEFAULT_STEPS,
    method=DEFAULT_METHOD,
    baseline=None,
    internal_batch_size=DEFAULT_INTERNAL_BATCH_SIZE,
):
    """Normalised ``|IG|`` maps of any model w.r.t. its normalised features.

    Arguments
    ---------
    model : Teacher or callable
        A model loaded by :func:`speechbrain_imlkd.teacher.load_teacher`
        (teacher or exported student), or any ``feats -> N x D`` callable
        (in eval mode).
    feats : torch.Tensor
        ``B x T x F`` normalised features of the segments (the model's own
        ``features``), all of the same length.
    target : str or callable
        ``"embedding_cosine"``: cosine between the segment's embedding and
        ``reference``; label-free, so teacher and students trained on other
        speakers are explained the same way. A callable ``N x T x F -> (N,)``
        (rows step-major, see :mod:`speechbrain_imlkd.attribution`) is used
        as it is.
    reference : torch.Tensor or None
        ``B x D`` (or ``D``) reference embeddings *of this model*, e.g. of
        the enrolment utterance of the same speaker or of the whole test
        utterance. None: the model's embedding of the segment itself.
    steps : int
        IG path points.
    method : str
        IG quadrature (see :func:`speechbrain_imlkd.attribution.integrated_gradients`).
    baseline : torch.Tensor or float or None
        IG baseline; zeros (the sentence mean) by default.
    internal_batch_size : int or None
        Rows per forward/backward pass.

    Returns
    -------
    torch.Tensor
        ``B x T x F`` saliency: ``|IG|`` divided by its maximum over each
        segment, in ``[0, 1]``, detached.

    Example
    -------
    >>> import torch
    >>> w = torch.linspace(-1, 1, 6).view(2, 3)
    >>> embed = lambda f: torch.stack([(f * w).sum(dim=(1, 2)), torch.ones(len(f))], dim=1)
    >>> ref = torch.tensor([1.0, 1.0])
    >>> sal = model_saliency(embed, torch.ones(1, 2, 3), reference=ref, steps=4)
    >>> sal.shape, float(sal.max())
    (torch.Size([1, 2, 3]), 1.0)
    """
    embed_fn = _embed_fn(model)
    feats = _check_feats(feats)
    if callable(target):
        target_fn = target
    elif target == "embedding_cosine":
        if reference is None:
            with torch.no_grad():
                reference = embed_fn(feats)
        reference = _check_reference(reference, feats.shape[0], "reference")
        _check_embedding_dim(embed_fn, feats, reference, "reference")
        target_fn = embedding_cosine_target(embed_fn, reference)
    else:
        raise ValueError(f"target={target!r}: expected one of {TARGETS} or a callable")
    ig = integrated_gradients(
        target_fn,
        feats,
        baseline=baseline,
        steps=steps,
        method=method,
        internal_batch_size=internal_batch_size,
    )
    return normalised_saliency(ig)


def _rankdata(x):
    """Average ranks (ties share their mean rank), like ``scipy.stats.rankdata``."""
    from scipy.stats import rankdata

    return rankdata(x)


def saliency_rank_correlation(maps, reference_maps, level="bins"):
    """Spearman correlation between two models' saliency maps, per segment.

    Arguments
    ---------
    maps : torch.Tensor or numpy.ndarray
        ``B x T x F`` (or ``T x F``) saliency of one model.
    reference_maps : torch.Tensor or numpy.ndarray
        The same segments' saliency of the reference model (the teacher).
    level : str
        ``"bins"``: over the ``T x F`` time-frequency bins; ``"frames"``:
        over the frame saliency (summed over frequency).

    Returns
    -------
    numpy.ndarray
        ``(B,)`` correlations in ``[-1, 1]``; NaN for a segment where either
        map is constant (the correlation is undefined there).

    Example
    -------
    >>> import numpy as np
    >>> a = np.array([[[0.0, 1.0], [0.5, 0.2]]])
    >>> saliency_rank_correlation(a, a ** 2).tolist()
    [1.0]
    >>> saliency_rank_correlation(a, 1 - a, level="frames").tolist()
    [-1.0]
    """
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: expected one of {LEVELS}")
    a, b = _as_numpy(maps), _as_numpy(reference_maps)
    if a.ndim == 2 and b.ndim == 2:
        a, b = a[None], b[None]
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(
            f"saliency maps of shape {a.shape} and reference maps of shape {b.shape} must "
            "both be B x T x F over the same segments"
        )
    if level == "frames":
        a, b = a.sum(axis=-1), b.sum(axis=-1)
    out = np.empty(a.shape[0])
    for i, (x, y) in enumerate(zip(a.reshape(len(a), -1), b.reshape(len(b), -1))):
        rx, ry = _rankdata(x), _rankdata(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        denom = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
        out[i] = float((rx * ry).sum() / denom) if denom > 0 else float("nan")
    return out



def _as_batch(x, name):
    """``T x F`` or ``B x T x F`` to a ``B x T x F`` float numpy array."""
    arr = _as_numpy(x)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) == 0:
        raise ValueError(f"{name} must be T x F or B x T x F, got shape {arr.shape}")
    return arr


def plot_saliency_maps(
    feats_by_duration,
    maps_by_model,
    out_png,
    titles=None,
    reference=TEACHER_NAME,
    index=0,
    level="bins",
    frames_per_second=100.0,
):
    """Draws input features and every model's saliency on the same segments.

    One row per duration (the segment ``index`` of that duration), one
    column for the input fbank then one per model (in the order of
    ``maps_by_model``); time in seconds on x, mel bins on y. Each model
    other than ``reference`` is annotated with the Spearman correlation of
    its map with the reference model's on that segment.

    Arguments
    ---------
    feats_by_duration : Mapping
        ``{duration: B x T x F}`` normalised features of the segments.
    maps_by_model : Mapping
        ``{model: {duration: B x T x F}}`` saliency maps (e.g.
        :func:`model_saliency`) on those segments.
    out_png : str or pathlib.Path
        Output image (parent folders are created).
    titles : Mapping or None
        ``{model: column title}``; the model name by default.
    reference : str
        The model the others are compared with (the teacher).
    index : int
        Which segment of each duration is drawn.
    level : str
        ``"bins"`` or ``"frames"``: see :func:`saliency_rank_correlation`.
    frames_per_second : float
        Feature frame rate, for the time axis.

    Returns
    -------
    dict
        ``{model: {"<d>s": rho}}``: the annotated correlations, for every
        model but ``reference``.

    Example
    -------
    >>> import tempfile, pathlib, torch
    >>> feats = {1.0: torch.randn(2, 100, 8)}
    >>> t = torch.rand(2, 100, 8)
    >>> maps = {"teacher": {1.0: t}, "kd": {1.0: t.sqrt()}}
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "maps.png"
    >>> plot_saliency_maps(feats, maps, out)
    {'kd': {'1s': 1.0}}
    >>> out.stat().st_size > 0
    True
    """
    if not isinstance(feats_by_duration, Mapping) or not feats_by_duration:
        raise ValueError("feats_by_duration must be a non-empty {duration: features} mapping")
    if not isinstance(maps_by_model, Mapping) or not maps_by_model:
        raise ValueError("maps_by_model must be a non-empty {model: {duration: maps}} mapping")
    models = list(maps_by_model)
    if len(models) > 1 and reference not in maps_by_model:
        raise ValueError(f"reference={reference!r} is not one of the models {models}")
    if not frames_per_second > 0:
        raise ValueError(f"frames_per_second={frames_per_second!r} must be positive")
    titles = dict(titles or {})
    durations = list(feats_by_duration)
    feats = {d: _as_batch(feats_by_duration[d], f"features of duration {d!r}") for d in durations}
    maps = {}
    for name in models:
        per_model = maps_by_model[name]
        if not isinstance(per_model, Mapping):
            raise ValueError(f"maps_by_model[{name!r}] must be a {{duration: maps}} mapping")
        for d in durations:
            if d not in per_model:
                raise ValueError(f"model {name!r} has no saliency maps for duration {d!r}")
            m = _as_batch(per_model[d], f"saliency of {name!r} at duration {d!r}")
            if m.shape != feats[d].shape:
                raise ValueError(
                    f"saliency of {name!r} at duration {d!r} has shape {m.shape}, "
                    f"but the features have {feats[d].shape}"
                )
            maps[name, d] = m
    for d in durations:
        if not -len(feats[d]) <= index < len(feats[d]):
            raise ValueError(
                f"index={index} is out of range for the {len(feats[d])} segments "
                f"of duration {d!r}"
            )

    correlations = {name: {} for name in models if name != reference}
    plt = _pyplot()
    n_rows, n_cols = len(durations), len(models) + 1
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.8 * n_cols, 2.2 * n_rows), squeeze=False
    )
    for row, d in enumerate(durations):
        x = feats[d][index]
        extent = (0.0, x.shape[0] / frames_per_second, 0, x.shape[1])
        ax = axes[row, 0]
        ax.imshow(x.T, origin="lower", aspect="auto", cmap="viridis", extent=extent)
        ax.set_ylabel(f"{_duration_label(d)} segment\nmel bin")
        for col, name in enumerate(models, start=1):
            m = maps[name, d][index]
            ax = axes[row, col]
            ax.imshow(
                m.T, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1, extent=extent
            )
            if name != reference and reference in maps_by_model:
                rho = float(
                    saliency_rank_correlation(m[None], maps[reference, d][index][None], level)[0]
                )
                correlations[name][_duration_label(d)] = rho
                ax.text(
                    0.02, 0.95, f"rho vs {reference} = {rho:.2f}",
                    transform=ax.transAxes, va="top", fontsize="x-small",
                    bbox=dict(facecolor="white", alpha=0.8, lw=0),
                )
        for ax in axes[row]:
            ax.tick_params(labelsize="x-small")
    axes[0, 0].set_title("input fbank", fontsize="small")
    for col, name in enumerate(models, start=1):
        axes[0, col].set_title(f"{titles.get(name, name)}: |IG|", fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize="small")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return correlations
