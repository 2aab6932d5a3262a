"""DET curves of several systems on one plot, with probit axes.

Example
-------
>>> _probit([0.5]).tolist()
[0.0]

Authors
 * speechbrain-imlkd contributors
"""

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from speechbrain_imlkd.scoring.metrics import compute_eer, det_curve
from speechbrain_imlkd.scoring.trial_scores import RESULTS_FILE, read_scores


def _det_systems(systems, trial_list):
    """Resolves plot_det's inputs to ``{label: (target, nontarget)}``."""
    if not isinstance(systems, Mapping):
        systems = {Path(s).name: s for s in systems}
    out = {}
    for label, value in systems.items():
        if isinstance(value, (tuple, list)) and len(value) == 2:
            out[label] = value
            continue
        value = Path(value)
        if value.is_dir():
            results = json.loads((value / RESULTS_FILE).read_text())
            lists = results["trials"]
            name = trial_list or next(iter(lists))
            if name not in lists:
                raise KeyError(
                    f"{value / RESULTS_FILE} has no trial list {name!r} "
                    f"(has {sorted(lists)})"
                )
            value = value / lists[name]["scores_file"]
        labels, scores = read_scores(value)
        out[label] = (scores[labels == 1], scores[labels == 0])
    return out


def plot_det(systems, out_png, trial_list=None, title=None, max_points=4000):
    """Draws the DET curves of several systems on one plot (probit axes).

    Arguments
    ---------
    systems : mapping or sequence
        ``{label: value}`` or a sequence of result folders (labelled by
        folder name); a value is a ``(target_scores, nontarget_scores)`` pair,
        a scores file, or a result folder of :func:`evaluate_model`.
    out_png : str or pathlib.Path
        Output image.
    trial_list : str or None
        Which trial list of a result folder to draw (default: its first).
    title : str or None
        Plot title.
    max_points : int
        Points kept per curve (evenly along the curve) to keep files small.

    Returns
    -------
    pathlib.Path
        The image written.

    Example
    -------
    >>> import tempfile, pathlib, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "det.png"
    >>> toy = (rng.normal(2, 1, 200), rng.normal(0, 1, 2000))
    >>> plot_det({"toy": toy}, out).is_file()
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _det_systems(systems, trial_list)
    ticks = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (tgt, non) in curves.items():
        p_miss, p_fa, _ = det_curve(tgt, non)
        if p_miss.size > max_points:
            keep = np.linspace(0, p_miss.size - 1, max_points).round()
            keep = np.unique(keep.astype(int))
            p_miss, p_fa = p_miss[keep], p_fa[keep]
        eer, _ = compute_eer(tgt, non)
        ax.plot(
            _probit(p_fa), _probit(p_miss), label=f"{label} (EER {100 * eer:.2f}%)"
        )
    lim = _probit(np.array([ticks[0] / 2, ticks[-1] + 0.1]))
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xticks(_probit(ticks))
    ax.set_yticks(_probit(ticks))
    labels = [f"{100 * t:g}" for t in ticks]
    ax.set_xticklabels(labels)
    ax.set_yticklabels(labels)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.plot(lim, lim, color="0.8", lw=0.8, ls="--")
    ax.grid(True, color="0.9")
    ax.legend(loc="lower left", fontsize="small")
    if title:
        ax.set_title(title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out_png


def _probit(p):
    """Inverse normal CDF, with rates of 0 and 1 pushed off to the plot edge."""
    from scipy.special import ndtri

    return ndtri(np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6))
