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

Authors
 * speechbrain-imlkd contributors 2025
"""

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from speechbrain.utils.logger import get_logger

from speechbrain_imlkd.attribution import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    DEFAULT_METHOD,
    DEFAULT_STEPS,
    embedding_cosine_target,
    integrated_gradients,
)
from speechbrain_imlkd.integrated_inputs import DEFAULT_DURATIONS, normalised_saliency

logger = get_logger(__name__)

#: Label-free IG targets understood by :func:`model_saliency`.
TARGETS = ("embedding_cosine",)
#: Units removed / inserted by :func:`deletion_insertion_curves`.
UNITS = ("frame", "bin")
#: Levels at which :func:`saliency_rank_correlation` compares maps.
LEVELS = ("bins", "frames")
#: Curve names of :func:`deletion_insertion_curves`, saliency order then control.
CURVE_NAMES = ("deletion", "insertion", "random_deletion", "random_insertion")
#: Name under which :func:`run_analyses` stores the teacher.
TEACHER_NAME = "teacher"
#: Key of the results pooled over every duration in :func:`run_analyses`.
ALL_KEY = "all"
SALIENCY_PNG = "saliency_maps.png"
CURVES_PNG = "deletion_insertion.png"
RESULTS_JSON = "faithfulness.json"


# ---------------------------------------------------------------------- #
# Checks
# ---------------------------------------------------------------------- #
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


# ---------------------------------------------------------------------- #
# Saliency
# ---------------------------------------------------------------------- #
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


# ---------------------------------------------------------------------- #
# Deletion / insertion
# ---------------------------------------------------------------------- #
def _unit_scores(saliency, feats, unit):
    """Saliency per removable unit, ``B x N`` (frames: summed over frequency)."""
    if not torch.is_tensor(saliency):
        saliency = torch.as_tensor(np.asarray(saliency), dtype=feats.dtype)
    saliency = saliency.detach().to(feats.device).float()
    batch, n_frames, n_freq = feats.shape
    if not torch.isfinite(saliency).all():
        raise ValueError("saliency contains NaN or inf")
    if unit == "frame":
        if saliency.shape == feats.shape:
            return saliency.sum(dim=-1)
        if saliency.shape == (batch, n_frames):
            return saliency
    elif unit == "bin":
        if saliency.shape == feats.shape:
            return saliency.reshape(batch, -1)
    else:
        raise ValueError(f"unit={unit!r}: expected one of {UNITS}")
    raise ValueError(
        f"saliency of shape {tuple(saliency.shape)} does not match features of shape "
        f"{tuple(feats.shape)} (unit={unit!r} needs B x T x F"
        + (" or B x T)" if unit == "frame" else ")")
    )


def _ranks(order):
    """Inverse permutations: ``rank[b, order[b, i]] = i``."""
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def deletion_insertion_curves(
    model,
    feats,
    saliency,
    reference_embeddings,
    n_steps=20,
    unit="frame",
    baseline_value=0.0,
    seed=0,
):
    """Deletion and insertion curves of a model's saliency, with a random control.

    Units (frames, or time-frequency bins) are ordered by saliency, most
    salient first (frames: saliency summed over frequency; ties keep time
    order). At fraction ``f`` the first ``round(f * N)`` units are
    *deleted* (replaced by the baseline) from the segment, or *inserted*
    (copied from the segment) into the all-baseline segment, and the score
    is the cosine between the model's embedding of the result and the
    target speaker's reference embedding. The control repeats this in a
    random order (one permutation per segment, from ``seed``).

    Arguments
    ---------
    model : Teacher or callable
        As in :func:`model_saliency`.
    feats : torch.Tensor
        ``B x T x F`` normalised features of the segments.
    saliency : torch.Tensor
        The model's saliency on them: ``B x T x F`` (or ``B x T`` per frame
        with ``unit="frame"``).
    reference_embeddings : torch.Tensor
        ``B x D`` (or ``D``) target-speaker embeddings by the same model.
    n_steps : int
        Number of fraction steps; fractions are ``0, 1/n, ..., 1``.
    unit : str
        ``"frame"`` or ``"bin"``.
    baseline_value : float or torch.Tensor
        What deleted units become (zeros: the sentence mean of normalised
        features, the IG baseline); broadcastable to ``feats``.
    seed : int
        Seed of the random control order.

    Returns
    -------
    dict
        ``fractions`` (``n_steps + 1``), the mean curves ``deletion``,
        ``insertion``, ``random_deletion``, ``random_insertion`` (numpy
        arrays over the fractions), their trapezoid areas over ``[0, 1]``
        (``deletion_area``, ... , in ``[-1, 1]``), ``per_segment``
        (``{curve: B x (n_steps + 1)}``), ``n_segments``, ``n_units`` and
        ``unit``. Deletion starts at the score of the unmodified segment and
        ends at that of the all-baseline one; insertion does the reverse.

    Example
    -------
    >>> import torch
    >>> c = torch.tensor([1.0, -1.0])
    >>> embed = lambda f: f[:, 0, :] + c  # only frame 0 matters
    >>> feats = torch.tensor([[[3.0, 3.0], [0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]])
    >>> saliency = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    >>> curves = deletion_insertion_curves(embed, feats, saliency, embed(feats), n_steps=4)
    >>> curves["deletion"].round(3).tolist()
    [1.0, 0.316, 0.316, 0.316, 0.316]
    >>> curves["insertion"].round(3).tolist()
    [0.316, 1.0, 1.0, 1.0, 1.0]
    """
    embed_fn = _embed_fn(model)
    feats = _check_feats(feats)
    n_steps = _check_int("n_steps", n_steps, 1)
    seed = _check_int("seed", seed, 0)
    units = _unit_scores(saliency, feats, unit)
    batch, n_units = units.shape
    reference = _check_reference(reference_embeddings, batch)
    _check_embedding_dim(embed_fn, feats, reference, "reference_embeddings")
    baseline = _baseline_like(baseline_value, feats)

    fractions = np.linspace(0.0, 1.0, n_steps + 1)
    counts = np.rint(fractions * n_units).astype(np.int64)
    generator = torch.Generator().manual_seed(seed)
    orders = {
        "": torch.sort(units, dim=1, descending=True, stable=True).indices,
        "random_": torch.stack(
            [torch.randperm(n_units, generator=generator) for _ in range(batch)]
        ).to(feats.device),
    }
    ranks = {prefix: _ranks(order) for prefix, order in orders.items()}
    reference = reference.to(feats.device)
    scores = {name: np.empty((batch, n_steps + 1)) for name in CURVE_NAMES}
    with torch.no_grad():
        for step, count in enumerate(counts):
            rows, names = [], []
            for prefix, rank in ranks.items():
                # True for the units taken so far in this order.
                taken = rank < int(count)
                if unit == "frame":
                    taken = taken[..., None].expand_as(feats)
                else:
                    taken = taken.view_as(feats)
                rows += [torch.where(taken, baseline, feats), torch.where(taken, feats, baseline)]
                names += [prefix + "deletion", prefix + "insertion"]
            emb = embed_fn(torch.cat(rows))
            cos = torch.nn.functional.cosine_similarity(emb, reference.repeat(len(rows), 1), dim=-1)
            for i, name in enumerate(names):
                scores[name][:, step] = cos[i * batch : (i + 1) * batch].cpu().double().numpy()
    return _summarise(fractions, scores, unit, n_units)


def _summarise(fractions, per_segment, unit, n_units):
    """Mean curves and their areas from per-segment curves."""
    curves = {
        "fractions": np.asarray(fractions, dtype=np.float64),
        "unit": unit,
        "n_units": n_units,
        "n_segments": int(next(iter(per_segment.values())).shape[0]),
        "per_segment": per_segment,
    }
    for name in CURVE_NAMES:
        mean = per_segment[name].mean(axis=0)
        curves[name] = mean
        curves[f"{name}_area"] = _trapezoid(mean, curves["fractions"])
    return curves


def _check_curves(curves, name):
    """Checks a result of :func:`deletion_insertion_curves`."""
    missing = [k for k in ("fractions", "per_segment", *CURVE_NAMES) if k not in curves]
    if not isinstance(curves, Mapping) or missing:
        raise ValueError(
            f"curves of {name!r} are not a result of deletion_insertion_curves "
            f"(missing {missing})"
        )


def combine_curves(curves_list):
    """Pools the segments of several curve results (e.g. of every duration).

    Arguments
    ---------
    curves_list : sequence of dict
        Results of :func:`deletion_insertion_curves` with the same fractions
        (segment lengths may differ: curves are over fractions).

    Returns
    -------
    dict
        Same keys, mean curves and areas over all the pooled segments
        (``n_units`` is that of the first result).

    Example
    -------
    >>> import numpy as np
    >>> f = np.linspace(0, 1, 3)
    >>> seg = {k: np.array([[1.0, 0.5, 0.0]]) for k in CURVE_NAMES}
    >>> one = _summarise(f, seg, "frame", 10)
    >>> both = combine_curves([one, one])
    >>> both["n_segments"], both["deletion_area"]
    (2, 0.5)
    """
    curves_list = list(curves_list)
    if not curves_list:
        raise ValueError("curves_list is empty: nothing to combine")
    for i, curves in enumerate(curves_list):
        _check_curves(curves, i)
    fractions = curves_list[0]["fractions"]
    for i, curves in enumerate(curves_list[1:], start=1):
        same = curves["fractions"].shape == fractions.shape
        if not same or not np.allclose(curves["fractions"], fractions):
            raise ValueError(
                f"curves {i} use {len(curves['fractions'])} fractions, curves 0 use "
                f"{len(fractions)}: compute them with the same n_steps"
            )
        if curves.get("unit") != curves_list[0].get("unit"):
            raise ValueError(
                f"curves {i} use unit={curves.get('unit')!r}, curves 0 "
                f"unit={curves_list[0].get('unit')!r}"
            )
    per_segment = {
        name: np.concatenate([c["per_segment"][name] for c in curves_list]) for name in CURVE_NAMES
    }
    first = curves_list[0]
    return _summarise(fractions, per_segment, first.get("unit"), first.get("n_units"))


def _is_curves(value):
    """Whether ``value`` looks like one result of :func:`deletion_insertion_curves`."""
    return isinstance(value, Mapping) and "fractions" in value


def faithfulness_table(curves_by_model):
    """Areas of the deletion / insertion curves of every model, with the control.

    Arguments
    ---------
    curves_by_model : Mapping
        ``{model: curves}`` or ``{model: {key: curves}}`` (e.g. one entry
        per duration), curves from :func:`deletion_insertion_curves`.

    Returns
    -------
    dict
        For each model (and key): ``deletion_area``, ``insertion_area``,
        ``random_deletion_area``, ``random_insertion_area``,
        ``deletion_gain`` (random minus saliency deletion area) and
        ``insertion_gain`` (saliency minus random insertion area): positive
        gains mean the saliency order beats random. Plus ``n_segments``.

    Example
    -------
    >>> import numpy as np
    >>> f = np.linspace(0, 1, 3)
    >>> seg = {"deletion": np.array([[1.0, 0.0, 0.0]]), "insertion": np.array([[0.0, 1.0, 1.0]]),
    ...        "random_deletion": np.array([[1.0, 0.5, 0.0]]),
    ...        "random_insertion": np.array([[0.0, 0.5, 1.0]])}
    >>> table = faithfulness_table({"toy": _summarise(f, seg, "frame", 2)})
    >>> table["toy"]["deletion_gain"], table["toy"]["insertion_gain"]
    (0.25, 0.25)
    """
    if not isinstance(curves_by_model, Mapping) or not curves_by_model:
        raise ValueError("curves_by_model must be a non-empty {model: curves} mapping")
    table = {}
    for name, value in curves_by_model.items():
        if _is_curves(value):
            table[name] = _areas(value, name)
        elif isinstance(value, Mapping) and value:
            table[name] = {key: _areas(c, f"{name}/{key}") for key, c in value.items()}
        else:
            raise ValueError(
                f"curves_by_model[{name!r}] is neither curves nor a non-empty mapping of curves"
            )
    return table


def _areas(curves, name):
    """The area summary of one curve result."""
    _check_curves(curves, name)
    row = {f"{k}_area": float(curves[f"{k}_area"]) for k in CURVE_NAMES}
    row["deletion_gain"] = row["random_deletion_area"] - row["deletion_area"]
    row["insertion_gain"] = row["insertion_area"] - row["random_insertion_area"]
    row["n_segments"] = int(curves["n_segments"])
    return row


def plot_deletion_insertion(curves_by_model, out_png, title=None, show_random=True):
    """Draws deletion and insertion curves of several models on two panels.

    Arguments
    ---------
    curves_by_model : Mapping
        ``{model: curves}`` from :func:`deletion_insertion_curves` (or
        :func:`combine_curves`).
    out_png : str or pathlib.Path
        Output image (parent folders are created).
    title : str or None
        Figure title.
    show_random : bool
        Also draw each model's random-order control (dotted, same colour).

    Returns
    -------
    pathlib.Path
        The image written.

    Example
    -------
    >>> import tempfile, pathlib, numpy as np
    >>> f = np.linspace(0, 1, 3)
    >>> seg = {k: np.array([[1.0, 0.5, 0.0]]) for k in CURVE_NAMES}
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "curves.png"
    >>> plot_deletion_insertion({"toy": _summarise(f, seg, "frame", 4)}, out).stat().st_size > 0
    True
    """
    if not isinstance(curves_by_model, Mapping) or not curves_by_model:
        raise ValueError("curves_by_model must be a non-empty {model: curves} mapping")
    for name, curves in curves_by_model.items():
        _check_curves(curves, name)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, curves) in enumerate(curves_by_model.items()):
        colour = colours[i % len(colours)]
        for ax, kind in zip(axes, ("deletion", "insertion")):
            ax.plot(
                curves["fractions"], curves[kind], color=colour, lw=1.8,
                label=f"{name} (area {curves[f'{kind}_area']:.3f})",
            )
            if show_random:
                ax.plot(
                    curves["fractions"], curves[f"random_{kind}"], color=colour, lw=1.0, ls=":",
                    label=f"{name} random order (area {curves[f'random_{kind}_area']:.3f})",
                )
    unit = next(iter(curves_by_model.values())).get("unit", "frame")
    hints = ("lower area = more faithful", "higher area = more faithful")
    kinds, verbs = ("deletion", "insertion"), ("removed", "inserted")
    for ax, kind, hint, verb in zip(axes, kinds, hints, verbs):
        ax.set_title(f"{kind} ({hint})", fontsize="small")
        ax.set_xlabel(f"fraction of {unit}s {verb}, most salient first")
        ax.set_xlim(0, 1)
        ax.grid(True, color="0.9")
        ax.legend(fontsize="x-small")
    axes[0].set_ylabel("target-speaker score (cosine)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# ---------------------------------------------------------------------- #
# Entry point
# ---------------------------------------------------------------------- #
def _check_durations(durations):
    """Positive, finite, distinct durations in seconds."""
    try:
        durations = [float(d) for d in durations]
    except (TypeError, ValueError) as err:
        raise ValueError(f"durations={durations!r}: expected a sequence of seconds") from err
    if not durations:
        raise ValueError("durations is empty: give at least one segment duration")
    for d in durations:
        if not math.isfinite(d) or d <= 0:
            raise ValueError(f"segment duration {d!r} must be positive and finite")
    if len(set(durations)) != len(durations):
        raise ValueError(f"durations={durations!r} contains duplicates")
    return durations


def _safe_name(name):
    """A model name usable as a folder name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name))


def _check_models(teacher_dir, student_dirs):
    """``{name: folder}``, teacher first; names checked."""
    if not isinstance(student_dirs, Mapping):
        raise ValueError(
            "student_dirs must be a {name: exported folder} mapping, got "
            f"{type(student_dirs).__name__}"
        )
    models = {TEACHER_NAME: teacher_dir}
    folders = {TEACHER_NAME}
    for name, folder in student_dirs.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"student name {name!r} must be a non-empty string")
        if name == TEACHER_NAME:
            raise ValueError(f"student name {name!r} is reserved for the teacher")
        if _safe_name(name) in folders:
            raise ValueError(f"student name {name!r} clashes with another model's folder name")
        folders.add(_safe_name(name))
        models[name] = folder
    return models


def _wav_folder(data_folder):
    """``<data_folder>/wav`` when it exists, else ``data_folder`` itself."""
    data_folder = Path(data_folder)
    if not data_folder.is_dir():
        raise FileNotFoundError(f"data_folder not found: {data_folder}")
    wav = data_folder / "wav"
    return wav if wav.is_dir() else data_folder


def _pick_trials(trials, n_segments, seed):
    """Target trials in a seeded order, one per distinct test utterance."""
    targets = np.flatnonzero(trials.labels == 1)
    if targets.size == 0:
        raise ValueError(f"{trials.source}: no target trials to analyse")
    picked, seen = [], set()
    for i in np.random.default_rng(seed).permutation(targets):
        if trials.test[i] in seen:
            continue
        seen.add(trials.test[i])
        picked.append((trials.enrol[i], trials.test[i]))
        if len(picked) == n_segments:
            break
    if len(picked) < n_segments:
        logger.info(
            "%s has %d usable target trials, fewer than n_segments=%d",
            trials.source, len(picked), n_segments,
        )
    return picked


def _frame_rate(model):
    """Feature frames per second of a loaded model (100 for a 10 ms hop)."""
    stft = getattr(model.compute_features, "compute_STFT", None)
    hop = getattr(stft, "hop_length", None)
    if not hop:
        raise ValueError(
            f"cannot tell the frame rate of {type(model.compute_features).__name__} features"
        )
    return model.sample_rate / hop


def _json_safe(value):
    """Numpy values to Python ones and NaN to None, for strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_analyses(
    teacher_dir,
    student_dirs,
    data_folder,
    trials_file,
    out_dir,
    durations=DEFAULT_DURATIONS,
    n_segments=4,
    steps=DEFAULT_STEPS,
    method=DEFAULT_METHOD,
    n_steps=20,
    offset=0.5,
    unit="frame",
    level="bins",
    seed=0,
    titles=None,
    run_opts=None,
):
    """Saliency maps and deletion / insertion faithfulness of teacher and students.

    Target trials are drawn from ``trials_file`` (seeded order, distinct
    test utterances). For every model, the enrolment utterance gives the
    reference embedding (the target speaker) and the test utterance gives
    one segment per duration, ``offset`` seconds into its features
    (computed over the whole utterance, as at test time). Each model's
    saliency (:func:`model_saliency`, target: cosine to its own reference)
    and curves (:func:`deletion_insertion_curves`) are computed on the same
    segments. A test utterance too short for a duration is skipped for that
    duration (the count is logged and stored).

    Arguments
    ---------
    teacher_dir : str or pathlib.Path
        Teacher folder in the hub layout, or a hub id.
    student_dirs : Mapping
        ``{name: exported folder}`` (e.g. ``{"imlkd": ..., "kd": ...}``);
        columns and curves follow this order, after the teacher.
    data_folder : str or pathlib.Path
        Corpus root (holding ``wav/``) or the ``wav/`` folder itself.
    trials_file : str or pathlib.Path
        Trial list (``veri_test2.txt`` format).
    out_dir : str or pathlib.Path
        Where the figures, ``faithfulness.json`` and the models' savedirs
        (``models/<name>``) go.
    durations : sequence of float
        Segment durations in seconds.
    n_segments : int
        Target trials analysed (at most; fewer if the list has fewer).
    steps : int
        IG path points.
    method : str
        IG quadrature.
    n_steps : int
        Fraction steps of the deletion / insertion curves.
    offset : float
        Start of the segments in the test utterances, in seconds.
    unit : str
        ``"frame"`` or ``"bin"``: what the curves delete and insert.
    level : str
        ``"bins"`` or ``"frames"``: how saliency agreement is measured.
    seed : int
        Seed of the trial choice and of the random control order.
    titles : Mapping or None
        ``{model: column title}`` for the saliency figure.
    run_opts : dict or None
        SpeechBrain run options for loading the models (e.g. the device).

    Returns
    -------
    dict
        The content of ``faithfulness.json``: ``settings``, ``models``,
        ``trials``, ``segments`` (per duration: tests used, ``skipped``),
        ``faithfulness`` (``{model: {"<d>s" | "all": areas}}``, see
        :func:`faithfulness_table`), ``saliency_agreement``
        (``{student: {"<d>s" | "all": {"mean", "per_segment"}}}``, Spearman
        with the teacher's maps), ``saliency_agreement_shown`` (the
        correlations annotated in the figure) and ``files``.

    Raises
    ------
    FileNotFoundError
        A model folder, the data folder, the trial list or a wav is missing.
    ValueError
        Bad arguments, no target trial, models with different features, or
        every test utterance too short for a duration.

    Example
    -------
    >>> run_analyses("teacher", {}, "data", "trials.txt", "out", durations=[1.0, -2.0])
    Traceback (most recent call last):
    ...
    ValueError: segment duration -2.0 must be positive and finite
    """
    from speechbrain_imlkd.data.audio import read_wav_checked
    from speechbrain_imlkd.data.trials import read_trials
    from speechbrain_imlkd.teacher import load_teacher

    durations = _check_durations(durations)
    n_segments = _check_int("n_segments", n_segments, 1)
    _check_int("n_steps", n_steps, 1)
    seed = _check_int("seed", seed, 0)
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: expected one of {UNITS}")
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: expected one of {LEVELS}")
    try:
        offset = float(offset)
    except (TypeError, ValueError) as err:
        raise ValueError(f"offset={offset!r}: expected seconds >= 0") from err
    if not math.isfinite(offset) or offset < 0:
        raise ValueError(f"offset={offset!r}: expected seconds >= 0")
    folders = _check_models(teacher_dir, student_dirs)
    wav_root = _wav_folder(data_folder)
    if not Path(trials_file).is_file():
        raise FileNotFoundError(f"trials_file not found: {trials_file}")
    trials = read_trials(trials_file)
    picked = _pick_trials(trials, n_segments, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    models = {}
    for name, folder in folders.items():
        savedir = out_dir / "models" / _safe_name(name)
        savedir.mkdir(parents=True, exist_ok=True)
        models[name] = load_teacher(folder, savedir, run_opts=run_opts)
    teacher = models[TEACHER_NAME]
    fps = _frame_rate(teacher)
    for name, model in models.items():
        same_rates = (model.sample_rate, model.n_mels) == (teacher.sample_rate, teacher.n_mels)
        if not same_rates or not math.isclose(_frame_rate(model), fps):
            raise ValueError(
                f"model {name!r} uses {model.n_mels} mels at {model.sample_rate} Hz, "
                f"{_frame_rate(model):g} frames/s; the teacher {teacher.n_mels} mels at "
                f"{teacher.sample_rate} Hz, {fps:g} frames/s: maps cannot be compared"
            )

    offset_frames = int(round(offset * fps))
    n_frames = {d: int(round(d * fps)) for d in durations}
    for d, n in n_frames.items():
        if n < 1:
            raise ValueError(f"segment duration {d} s is under one frame at {fps:g} frames/s")

    wavs = {
        path: read_wav_checked(wav_root / path, sample_rate=teacher.sample_rate)
        for path in sorted({p for pair in picked for p in pair})
    }
    # Whole-utterance features, normalised as at test time; segments are cut
    # from them so that every model sees the same frames.
    utt_feats = {
        name: {path: model.features(wav[None])[0] for path, wav in wavs.items()}
        for name, model in models.items()
    }
    usable = {d: [] for d in durations}
    for enrol, test in picked:
        total = utt_feats[TEACHER_NAME][test].shape[0]
        for d in durations:
            if offset_frames + n_frames[d] <= total:
                usable[d].append((enrol, test))
    segments_info = {}
    for d in durations:
        skipped = len(picked) - len(usable[d])
        if skipped:
            logger.info(
                "%d of %d test utterances shorter than %.3g s + offset %.3g s: skipped for "
                "that duration", skipped, len(picked), d, offset,
            )
        if not usable[d]:
            raise ValueError(
                f"no test utterance of the {len(picked)} picked from {trials_file} is long "
                f"enough for a {d:g} s segment at offset {offset:g} s"
            )
        segments_info[_duration_label(d)] = {
            "n_segments": len(usable[d]),
            "skipped": skipped,
            "tests": [test for _, test in usable[d]],
        }

    feats = {name: {} for name in models}
    maps = {name: {} for name in models}
    curves = {name: {} for name in models}
    for name, model in models.items():
        with torch.no_grad():
            ref = {
                enrol: model.embed(utt_feats[name][enrol][None])[0]
                for enrol in {e for pairs in usable.values() for e, _ in pairs}
            }
        for d in durations:
            start, stop = offset_frames, offset_frames + n_frames[d]
            seg = torch.stack([utt_feats[name][test][start:stop] for _, test in usable[d]])
            if name != TEACHER_NAME and seg.shape != feats[TEACHER_NAME][d].shape:
                raise ValueError(
                    f"model {name!r} gives segments of shape {tuple(seg.shape)}, the teacher "
                    f"{tuple(feats[TEACHER_NAME][d].shape)}"
                )
            reference = torch.stack([ref[enrol] for enrol, _ in usable[d]])
            feats[name][d] = seg
            maps[name][d] = model_saliency(
                model, seg, reference=reference, steps=steps, method=method
            )
            curves[name][d] = deletion_insertion_curves(
                model, seg, maps[name][d], reference, n_steps=n_steps, unit=unit, seed=seed
            )
        logger.info("Analysed %s on %d durations", name, len(durations))

    saliency_png = out_dir / SALIENCY_PNG
    shown = plot_saliency_maps(
        feats[TEACHER_NAME], maps, saliency_png, titles=titles, level=level, frames_per_second=fps
    )
    pooled = {name: combine_curves(curves[name].values()) for name in models}
    curves_png = plot_deletion_insertion(
        pooled, out_dir / CURVES_PNG,
        title=f"{sum(len(u) for u in usable.values())} segments of "
        + ", ".join(_duration_label(d) for d in durations),
    )
    faithfulness = faithfulness_table(
        {
            name: {
                **{_duration_label(d): c for d, c in curves[name].items()},
                ALL_KEY: pooled[name],
            }
            for name in models
        }
    )
    agreement = {}
    for name in models:
        if name == TEACHER_NAME:
            continue
        per_duration = {
            _duration_label(d): saliency_rank_correlation(
                maps[name][d], maps[TEACHER_NAME][d], level
            )
            for d in durations
        }
        per_duration[ALL_KEY] = np.concatenate(list(per_duration.values()))
        agreement[name] = {
            key: {
                "mean": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"),
                "per_segment": rho,
            }
            for key, rho in per_duration.items()
        }
    results = _json_safe(
        {
            "settings": {
                "durations": durations, "n_segments": n_segments, "steps": steps,
                "method": method, "n_steps": n_steps, "offset": offset, "unit": unit,
                "level": level, "seed": seed, "frames_per_second": fps,
            },
            "models": {name: str(folder) for name, folder in folders.items()},
            "trials": [{"enrol": e, "test": t} for e, t in picked],
            "segments": segments_info,
            "faithfulness": faithfulness,
            "saliency_agreement": agreement,
            "saliency_agreement_shown": shown,
            "files": {
                "saliency_maps": str(saliency_png),
                "deletion_insertion": str(curves_png),
                "results": str(out_dir / RESULTS_JSON),
            },
        }
    )
    with open(out_dir / RESULTS_JSON, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, allow_nan=False)
    return results
