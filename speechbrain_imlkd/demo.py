"""The main job end to end on the embedded synthetic corpus (``make demo``).

Generates the corpus, trains a teacher, precomputes its IG targets, trains
the five students (``scratch``, ``kd``, ``emb_kd``, ``mlkd``, ``imlkd``) with
the same student, budget and seed, scores the teacher and every student on
the held-out trials and runs the paper's analyses. Everything goes to one
results folder:

- ``results.md`` and ``results.json``: parameters, EER, minDCF at 0.01,
  training time and the relative EER change against ``kd`` of each system,
  and, over seeds, the mean and standard deviation of EER per method;
- ``det.png``: the DET curves of all systems;
- ``saliency_maps.png``, ``deletion_insertion.png``, ``faithfulness.json``.

Sizes and recipe overrides are in ``hparams/demo.yaml``.

Example
-------
>>> rows = [{"system": "kd", "eer": 0.10}, {"system": "imlkd", "eer": 0.09}]
>>> [round(r, 3) for r in relative_change(rows, "kd")]
[0.0, -0.1]
"""

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from hyperpyyaml import load_hyperpyyaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb1" / "imlkd"
DEFAULT_CONFIG = REPO / "hparams" / "demo.yaml"

logger = logging.getLogger(__name__)


def say(message):
    """Prints a progress line (the demo's stages are long).

    Arguments
    ---------
    message : str
        What to print.

    Example
    -------
    >>> say("hello")
    [demo] hello
    """
    print(f"[demo] {message}", flush=True)


def load_recipe(name):
    """Imports a recipe script of ``recipes/VoxCeleb1/imlkd`` as a module.

    Arguments
    ---------
    name : str
        Script name without ``.py``.

    Returns
    -------
    module
        The script, whose ``main(argv)`` runs it in this process.

    Example
    -------
    >>> hasattr(load_recipe("train_kd"), "main")
    True
    """
    path = RECIPE / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"imlkd_recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_overrides(mapping):
    """Turns ``{key: value}`` into ``--key=value`` command-line overrides.

    Arguments
    ---------
    mapping : dict
        Overrides.

    Returns
    -------
    list of str

    Example
    -------
    >>> as_overrides({"a": 1, "b": [1.0, 2.0]})
    ['--a=1', '--b=[1.0, 2.0]']
    """
    return [f"--{k}={v}" for k, v in mapping.items()]


def relative_change(rows, reference):
    """Relative EER change of each row against the ``reference`` system.

    Arguments
    ---------
    rows : list of dict
        Each with ``system`` and ``eer``.
    reference : str
        The reference system.

    Returns
    -------
    list of float or None
        ``(eer - eer_ref) / eer_ref`` per row (None without a reference).

    Example
    -------
    >>> relative_change([{"system": "a", "eer": 0.2}], "kd")
    [None]
    """
    ref = [r["eer"] for r in rows if r["system"] == reference]
    if not ref or ref[0] == 0:
        return [None for _ in rows]
    return [(r["eer"] - ref[0]) / ref[0] for r in rows]


def summarise_seeds(runs, methods):
    """Mean and standard deviation of EER per method over seeds.

    Arguments
    ---------
    runs : list of dict
        Student runs with ``method`` and ``eer``.
    methods : list of str
        Methods in display order.

    Returns
    -------
    dict
        ``{method: {"eer_mean", "eer_std", "n_seeds", "eers"}}``.

    Example
    -------
    >>> s = summarise_seeds([{"method": "kd", "eer": 0.1}, {"method": "kd", "eer": 0.2}], ["kd"])
    >>> round(s["kd"]["eer_mean"], 3), s["kd"]["n_seeds"]
    (0.15, 2)
    """
    out = {}
    for method in methods:
        eers = [r["eer"] for r in runs if r["method"] == method]
        if eers:
            out[method] = {
                "eer_mean": statistics.fmean(eers),
                "eer_std": statistics.stdev(eers) if len(eers) > 1 else 0.0,
                "n_seeds": len(eers),
                "eers": eers,
            }
    return out


def write_report(out_dir, teacher_row, runs, methods, config_note):
    """Writes ``results.json`` and ``results.md`` and returns the summary.

    Arguments
    ---------
    out_dir : Path
        Results folder.
    teacher_row : dict
        ``parameters``, ``eer``, ``min_dcf_0.01``, ``train_time_s``.
    runs : list of dict
        One per student run: ``method``, ``seed``, ``parameters``, ``eer``,
        ``min_dcf_0.01``, ``train_time_s``.
    methods : list of str
        Methods in display order.
    config_note : str
        How the run was made (command, machine), put in ``results.md``.

    Returns
    -------
    dict
        The content of ``results.json``.

    Example
    -------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> t = {"parameters": 100, "eer": 0.05, "min_dcf_0.01": 0.5, "train_time_s": 3.0}
    >>> r = [dict(method="kd", seed=1, parameters=10, eer=0.1, **{"min_dcf_0.01": 0.6}, train_time_s=1.0)]
    >>> out = write_report(d, t, r, ["kd"], "doctest")
    >>> out["seeds"]["kd"]["eer_mean"], (d / "results.md").is_file()
    (0.1, True)
    """
    summary = summarise_seeds(runs, methods)
    first_seed = runs[0]["seed"] if runs else None
    rows = [{"system": "teacher", **teacher_row}]
    rows += [
        {"system": r["method"], **{k: r[k] for k in ("parameters", "eer", "min_dcf_0.01", "train_time_s")}}
        for r in runs
        if r["seed"] == first_seed
    ]
    for row, rel in zip(rows, relative_change(rows, "kd")):
        row["rel_eer_vs_kd"] = rel
    kd_mean = summary.get("kd", {}).get("eer_mean")
    for method, s in summary.items():
        s["rel_eer_mean_vs_kd"] = (s["eer_mean"] - kd_mean) / kd_mean if kd_mean else None
    result = {"systems": rows, "first_seed": first_seed, "seeds": summary, "runs": runs,
              "note": config_note}
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))

    lines = [
        "# IML-KD demo results (synthetic corpus)",
        "",
        config_note,
        "",
        f"## Systems (seed {first_seed})",
        "",
        "| system | parameters | EER (%) | minDCF(0.01) | training time (s) | EER vs kd |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        rel = "" if row["rel_eer_vs_kd"] is None else f"{100 * row['rel_eer_vs_kd']:+.1f}%"
        lines.append(
            f"| {row['system']} | {row['parameters']:,} | {100 * row['eer']:.2f} | "
            f"{row['min_dcf_0.01']:.3f} | {row['train_time_s']:.0f} | {rel} |"
        )
    lines += ["", "## EER over seeds", "", "| method | seeds | EER mean (%) | EER std (%) | mean vs kd |",
              "|---|---:|---:|---:|---:|"]
    for method, s in summary.items():
        rel = "" if s["rel_eer_mean_vs_kd"] is None else f"{100 * s['rel_eer_mean_vs_kd']:+.1f}%"
        lines.append(
            f"| {method} | {s['n_seeds']} | {100 * s['eer_mean']:.2f} | {100 * s['eer_std']:.2f} | {rel} |"
        )
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    return result


def first_trials(results):
    """Metrics of the first trial list of an ``evaluate_model`` result.

    Arguments
    ---------
    results : dict
        From :func:`speechbrain_imlkd.scoring.evaluate_model`.

    Returns
    -------
    dict

    Example
    -------
    >>> first_trials({"trials": {"O": {"eer": 0.1}}})
    {'eer': 0.1}
    """
    return next(iter(results["trials"].values()))


def run_demo(out_dir, work_dir, n_seeds=1, config=DEFAULT_CONFIG, toy=False):
    """Runs the whole demo.

    Arguments
    ---------
    out_dir : str or Path
        Results folder.
    work_dir : str or Path
        Corpus, checkpoints and caches (reused when the options match).
    n_seeds : int
        Number of seeds for the students (the first ``n_seeds`` of the list).
    config : str or Path
        The demo YAML.
    toy : bool
        Use the ``toy`` sizes (tests).

    Returns
    -------
    dict
        The content of ``results.json``.

    Example
    -------
    >>> # The full run takes minutes: see tests/test_demo.py.
    >>> callable(run_demo)
    True
    """
    from speechbrain_imlkd.analysis import run_analyses
    from speechbrain_imlkd.data.synthetic import generate_corpus
    from speechbrain_imlkd.models import count_parameters
    from speechbrain_imlkd.scoring import evaluate_model, plot_det

    start = time.time()
    with open(config, encoding="utf-8") as f:
        cfg = load_hyperpyyaml(f)
    if toy:
        for key, value in cfg["toy"].items():
            cfg[key] = {**cfg[key], **value}
    import torch

    torch.set_num_threads(cfg["threads"])
    seeds = cfg["seeds"][:n_seeds]
    if n_seeds < 1 or len(seeds) < n_seeds:
        raise ValueError(f"seeds={n_seeds}: the demo config lists {len(cfg['seeds'])} seeds")
    out_dir, work_dir = Path(out_dir).resolve(), Path(work_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = work_dir / "corpus"

    say(f"1/6 synthetic corpus -> {corpus}")
    generate_corpus(corpus, **cfg["corpus"])
    trials = corpus / "veri_test2.txt"

    say("2/6 teacher training (train_teacher.py)")
    t0 = time.time()
    teacher_out = work_dir / "teacher"
    teacher_brain, teacher_dir = load_recipe("train_teacher").main(
        [str(RECIPE / "hparams" / "train_teacher_ecapa.yaml"), f"--data_folder={corpus}",
         f"--output_folder={teacher_out}", *as_overrides(cfg["teacher"])]
    )
    teacher_time = time.time() - t0
    teacher_eval = evaluate_model(teacher_dir, corpus, trials, out_dir / "teacher", progress=False)
    t = first_trials(teacher_eval)
    teacher_row = {
        "parameters": count_parameters(teacher_brain.hparams.embedding_model),
        "eer": t["eer"], "min_dcf_0.01": t["min_dcf_0.01"], "train_time_s": teacher_time,
    }
    say(f"   teacher EER {100 * t['eer']:.2f}% ({teacher_row['parameters']:,} parameters)")

    train_kd = load_recipe("train_kd")
    runs, exported = [], {}
    n_runs = len(seeds) * len(cfg["methods"])
    for i_seed, seed in enumerate(seeds):
        for i_m, method in enumerate(cfg["methods"]):
            k = i_seed * len(cfg["methods"]) + i_m + 1
            say(f"3/6 student {k}/{n_runs}: {method}, seed {seed}")
            overrides = {**cfg["students"], **cfg["method_overrides"].get(method, {})}
            t0 = time.time()
            res = train_kd.main(
                [str(RECIPE / "hparams" / f"{method}_ecapa.yaml"), f"--data_folder={corpus}",
                 f"--teacher_source={teacher_dir}", f"--output_root={work_dir / 'students'}",
                 f"--seed={seed}", *as_overrides(overrides)]
            )
            elapsed = time.time() - t0
            m = first_trials(res)
            runs.append({"method": method, "seed": seed, "parameters": res["parameters"],
                         "eer": m["eer"], "min_dcf_0.01": m["min_dcf_0.01"],
                         "train_time_s": elapsed})
            exported[(method, seed)] = work_dir / "students" / method / f"seed{seed}"
            say(f"   {method} seed {seed}: EER {100 * m['eer']:.2f}% in {elapsed:.0f} s")

    say("4/6 DET plot")
    first = seeds[0]
    systems = {"teacher": out_dir / "teacher"}
    systems.update({m: exported[(m, first)] / "eval" for m in cfg["methods"]})
    plot_det(systems, out_dir / "det.png", title="Synthetic corpus, held-out speakers")

    say("5/6 saliency maps and deletion/insertion curves")
    students = {m: exported[(m, first)] / "exported" for m in ("imlkd", "kd") if m in cfg["methods"]}
    run_analyses(teacher_dir, students, corpus, trials, out_dir, seed=first, **cfg["analysis"])

    say("6/6 report")
    note = (f"`make demo SEEDS={n_seeds}`{' (toy sizes)' if toy else ''}; "
            f"total wall time {time.time() - start:.0f} s.")
    result = write_report(out_dir, teacher_row, runs, cfg["methods"], note)
    print((out_dir / "results.md").read_text())
    say(f"results in {out_dir}")
    return result


def main(argv=None):
    """Command-line entry of ``make demo``.

    Arguments
    ---------
    argv : list of str, optional
        ``--output DIR --work DIR --seeds N [--toy]``.

    Returns
    -------
    dict
        The content of ``results.json``.

    Example
    -------
    >>> callable(main)
    True
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="demo_results")
    parser.add_argument("--work", default="demo_work")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--toy", action="store_true", help="toy sizes (tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run_demo(args.output, args.work, args.seeds, args.config, args.toy)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
