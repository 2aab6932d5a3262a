"""Is a saliency map faithful? Deletion / insertion curves, their areas and figure.

:func:`deletion_insertion_curves` removes the most salient frames (or bins)
first (deletion) or adds them back first to an all-baseline segment
(insertion) and follows the target-speaker score. A faithful map makes
deletion fall fast (low area) and insertion rise fast (high area); the same
procedure in a random order is the control. :func:`combine_curves` pools
curves, :func:`faithfulness_table` gives their areas and
:func:`plot_deletion_insertion` draws them.

Example
-------
>>> import numpy as np
>>> _trapezoid(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
0.5

Authors
 * speechbrain-imlkd contributors 2025
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from speechbrain_imlkd.analysis.common import (
    _baseline_like,
    _check_embedding_dim,
    _check_feats,
    _check_int,
    _check_reference,
    _embed_fn,
    _pyplot,
    _trapezoid,
)

#: Units removed / inserted by :func:`deletion_insertion_curves`.
UNITS = ("frame", "bin")
#: Curve names of :func:`deletion_insertion_curves`, saliency order then control.
CURVE_NAMES = ("deletion", "insertion", "random_deletion", "random_insertion")


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
