#!/usr/bin/env python3
"""Ablation study of IML-KD: cells chosen on DEV trials, verdict on TEST trials.

Reads ``benchmarks/study.yaml``: settings (``real``: the resemblyzer teacher
on LibriSpeech; ``synthetic``: the demo's synthetic voices and teacher) and
cells (a method YAML plus overrides, one knob at a time). For each setting::

    1. every cell x seed is trained by the setting's recipe and scored on
       DEV trials only (runs in parallel, resumable: a run with results is
       kept);
    2. a table of every cell: mean, std over seeds and 95% speaker-bootstrap
       interval of the seed-mean dev EER and minDCF(0.01), paired against
       the reference (`kd`) on the same trials
       (:func:`speechbrain_imlkd.significance.compare_methods`);
    3. the pick: the `candidate` cell with the lowest mean dev EER;
    4. the pick, `kd`, `mlkd` and the pick's plain-input twin (`twin`: the
       same loss on plain segments) are scored once on the TEST trials; the
       pick is paired with `kd`, its twin and `mlkd`;
    5. (synthetic) every student is also scored on real speech (the real
       setting's test trials), to measure transfer; never used for choices.

Usage::

    .venv/bin/python benchmarks/study.py --settings real --cells kd mlkd imlkd "imlkd+kd"
    .venv/bin/python benchmarks/study.py --settings synthetic --seeds 1986 2024 7

Tables go to ``<out>/<setting>/study.md`` and are copied to
``benchmarks/results_study_<setting>.md``.

Authors
 * speechbrain-imlkd contributors
"""

import argparse
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from speechbrain_imlkd.demo import as_overrides

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "benchmarks" / "study.yaml"
DEFAULT_OUT = ROOT / "results" / "study"
#: Non-target trials drawn per target trial in the synthetic dev list.
DEV_NONTARGET_PER_TARGET = 10


def slug(name):
    """A folder name for a cell.

    Arguments
    ---------
    name : str
        Cell name.

    Returns
    -------
    str

    Example
    -------
    >>> slug("imlkd+kd alpha2")
    'imlkd_kd_alpha2'
    """
    return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")


def dev_trials_from_csv(dev_csv, wav_root, out_file, seed=0, per_target=DEV_NONTARGET_PER_TARGET):
    """A dev trial list over the files of a dev CSV (held-out files of training speakers).

    Target trials pair every two files of a speaker (across sessions when it
    has several); non-target trials are ``per_target`` random pairs of files
    of different speakers per target trial (deterministic for ``seed``).

    Arguments
    ---------
    dev_csv : str or pathlib.Path
        SpeechBrain CSV with ``wav`` (absolute) and ``spk_id``.
    wav_root : str or pathlib.Path
        The folder trial paths are relative to.
    out_file : str or pathlib.Path
        Where the list is written.
    seed : int
        Seed of the non-target draw.
    per_target : int
        Non-target trials per target trial.

    Returns
    -------
    dict
        Counts of target and non-target trials.

    Example
    -------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> rows = ["ID,duration,wav,start,stop,spk_id"] + [
    ...     f"{s}{v},1,{d}/wav/{s}/{v}/1.wav,0,1,{s}" for s in ("a", "b", "c") for v in ("x", "y")]
    >>> _ = (d / "dev.csv").write_text("\\n".join(rows) + "\\n")
    >>> dev_trials_from_csv(d / "dev.csv", d / "wav", d / "t.txt", per_target=2)
    {'n_target': 3, 'n_nontarget': 6}
    """
    wav_root = Path(wav_root).resolve()
    files = {}
    with open(dev_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = Path(row["wav"]).resolve().relative_to(wav_root).as_posix()
            files.setdefault(row["spk_id"], set()).add(path)
    targets = []
    for spk in sorted(files):
        paths = sorted(files[spk])
        targets += [(a, b) for i, a in enumerate(paths) for b in paths[i + 1 :]]
    everything = [(spk, p) for spk in sorted(files) for p in sorted(files[spk])]
    rng = random.Random(seed)
    wanted = per_target * len(targets)
    possible = sum(len(v) for v in files.values()) ** 2
    if not targets or wanted > possible // 2:
        raise ValueError(f"{dev_csv}: cannot build {len(targets)} target / {wanted} non-target trials")
    nontargets = set()
    while len(nontargets) < wanted:
        (sa, a), (sb, b) = rng.choice(everything), rng.choice(everything)
        if sa != sb:
            nontargets.add((a, b))
    lines = [f"1 {a} {b}" for a, b in targets] + [f"0 {a} {b}" for a, b in sorted(nontargets)]
    Path(out_file).write_text("\n".join(lines) + "\n")
    return {"n_target": len(targets), "n_nontarget": len(nontargets)}


class Runner:
    """Runs recipe commands in parallel, one log each, with per-cell cache locks.

    Arguments
    ---------
    recipe : pathlib.Path
        The recipe folder (working directory of the scripts).
    out : pathlib.Path
        Where logs go.
    threads : int
        Torch threads per run.
    """

    def __init__(self, recipe, out, threads):
        self.recipe = recipe
        self.out = out
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.locks = {}
        self.guard = threading.Lock()
        self.times = {}

    def lock(self, key):
        """A lock shared by the runs of one IG cache (one precompute at a time)."""
        with self.guard:
            return self.locks.setdefault(key, threading.Lock())

    def run(self, name, cmd):
        """Runs ``cmd`` in the recipe folder; raises naming the log on failure."""
        log = self.out / "logs" / f"{slug(name)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.run(cmd, cwd=self.recipe, stdout=f, stderr=subprocess.STDOUT, env=self.env)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}); see {log}")
        self.times[name] = time.perf_counter() - t0
        print(f"  {name}: {self.times[name]:.0f} s", flush=True)


def cell_overrides(setting, cell):
    """A cell's recipe overrides: the setting's, its method's, then its own.

    Arguments
    ---------
    setting : dict
        ``overrides`` (every run) and ``method_overrides`` (``{method: {...}}``).
    cell : dict
        ``method`` and ``overrides``.

    Returns
    -------
    dict

    Example
    -------
    >>> cell_overrides({"overrides": {"a": 1}, "method_overrides": {"imlkd": {"a": 2, "b": 3}}},
    ...                {"method": "imlkd", "overrides": {"b": 4}})
    {'a': 2, 'b': 4}
    """
    return {
        **setting.get("overrides", {}),
        **setting.get("method_overrides", {}).get(cell["method"], {}),
        **cell.get("overrides", {}),
    }


def cell_run(setting, cell, seed, base_args, out, runner, uses_cache):
    """Trains one cell with one seed (skipped when its dev results exist)."""
    folder = out / slug(cell["name"]) / f"seed{seed}"
    if (folder / "eval" / "results.json").is_file():
        return folder
    overrides = cell_overrides(setting, cell)
    yaml_name = setting["method_yaml"].format(method=cell["method"])
    # Cells whose IG settings are the same share one cache (`ig_cache` name).
    cache = out / "ig_cache" / cell.get("ig_cache", slug(cell["name"]))
    cmd_tail = [*base_args, f"--seed={seed}", f"--output_folder={folder}",
                f"--ig_cache_folder={cache}", *as_overrides(overrides), "--noprogressbar"]
    if uses_cache:
        # The cache depends on the cell, not the seed: the first seed builds
        # it, the others wait for it and read it.
        with runner.lock(cache):
            if not (cache / "index.json").is_file():
                runner.run(f"{cell['name']} IG cache",
                           [sys.executable, "compute_ig.py", yaml_name, *cmd_tail])
    runner.run(f"{cell['name']} seed{seed}", [sys.executable, "train_kd.py", yaml_name, *cmd_tail])
    return folder


def train_cells(setting, cells, seeds, base_args, out, runner, jobs):
    """Every cell x seed, ``jobs`` at a time; returns ``{cell: [run folders]}``."""
    # Seed-major order: the first seeds of the cells go first, so that two
    # workers build two different IG caches side by side instead of one
    # waiting on the lock of the cache the other is building.
    jobs_list = []
    for seed in seeds:
        for cell in cells:
            overrides = cell_overrides(setting, cell)
            uses_cache = cell["method"] == "imlkd" and overrides.get("ig_mode", "cached") == "cached"
            jobs_list.append((cell, seed, uses_cache))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(cell_run, setting, cell, seed, base_args, out, runner, uses_cache)
            for cell, seed, uses_cache in jobs_list
        ]
        folders = [f.result() for f in futures]
    out_map = {}
    for (cell, _, _), folder in zip(jobs_list, folders):
        out_map.setdefault(cell["name"], []).append(folder)
    return out_map


def score_list(folders, data_folder, trials, name, sample_rate=16000):
    """Scores exported students on one trial list (once; kept for resumes).

    Returns
    -------
    list of numpy.ndarray
        One score array per run, in trial order.
    """
    from speechbrain_imlkd.scoring import evaluate_model, read_scores

    out = []
    for folder in folders:
        target = folder / f"eval_{name}"
        scores_file = target / f"scores_{name}.txt"
        if not scores_file.is_file():
            evaluate_model(folder / "exported", data_folder, {name: trials}, target,
                           progress=False, sample_rate=sample_rate)
        out.append(read_scores(scores_file)[1])
    return out


def dev_scores(folders, name="dev"):
    """Dev scores written by the recipe's own evaluation of each run."""
    from speechbrain_imlkd.scoring import read_scores

    return [read_scores(f / "eval" / f"scores_{name}.txt")[1] for f in folders]


def table(runs, trials_file, reference, n_boot):
    """``compare_methods`` on EER and minDCF for one trial list."""
    from speechbrain_imlkd.data.trials import read_trials
    from speechbrain_imlkd.significance import compare_methods, speakers_of_trials

    trials = read_trials(trials_file)
    labels = np.asarray(trials.labels)
    speakers = speakers_of_trials(trials.enrol)
    ref = reference if reference in runs else None
    return {
        "n_trials": int(labels.size),
        "n_target": int(labels.sum()),
        "n_speakers": len(set(speakers)),
        "eer": {k: vars(v) for k, v in compare_methods(runs, labels, speakers, ref, n_boot).items()},
        "min_dcf": {
            k: vars(v)
            for k, v in compare_methods(runs, labels, speakers, ref, n_boot, metric="min_dcf").items()
        },
    }


def pct(x):
    """A fraction as a percentage, two decimals."""
    return "" if x is None else f"{100 * x:.2f}"


def markdown_table(title, t, reference):
    """One markdown table of a :func:`table` result."""
    lines = [
        f"### {title} ({t['n_trials']:,} trials, {t['n_target']:,} target, "
        f"{t['n_speakers']} enrolment speakers)",
        "",
        f"| cell | EER % mean +- std (seeds) | 95% CI | vs {reference}: diff [95% CI] | "
        f"P(lower than {reference}) | minDCF(0.01) mean +- std | per-seed EER % |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in t["eer"].items():
        d = t["min_dcf"][name]
        diff = "" if m["difference"] is None else (
            f"{pct(m['difference'])} [{pct(m['diff_low'])}, {pct(m['diff_high'])}]")
        p = "" if m["p_better"] is None else f"{m['p_better']:.2f}"
        lines.append(
            f"| {name} | {pct(m['mean'])} +- {pct(m['seed_std'])} | [{pct(m['low'])}, "
            f"{pct(m['high'])}] | {diff} | {p} | {d['mean']:.3f} +- {d['seed_std']:.3f} | "
            f"{', '.join(pct(v) for v in m['per_seed'])} |"
        )
    return lines + [""]


def choose_pick(dev, cells):
    """The candidate cell with the lowest mean dev EER (None without candidates).

    Arguments
    ---------
    dev : dict
        A :func:`table` result on the dev trials.
    cells : list of dict
        The cells (``candidate: true`` marks the competitors).

    Returns
    -------
    str or None

    Example
    -------
    >>> dev = {"eer": {"kd": {"mean": 0.1}, "a": {"mean": 0.2}, "b": {"mean": 0.15}}}
    >>> choose_pick(dev, [{"name": "kd"}, {"name": "a", "candidate": True},
    ...                   {"name": "b", "candidate": True}])
    'b'
    """
    candidates = [c["name"] for c in cells if c.get("candidate") and c["name"] in dev["eer"]]
    return min(candidates, key=lambda c: dev["eer"][c]["mean"]) if candidates else None


def twin_of(pick, cells):
    """The plain-input twin a cell names (``twin``), or None.

    Arguments
    ---------
    pick : str or None
        A cell name.
    cells : list of dict
        The cells.

    Returns
    -------
    str or None

    Example
    -------
    >>> twin_of("imlkd", [{"name": "imlkd", "twin": "mlkd"}]), twin_of("kd", [{"name": "kd"}])
    ('mlkd', None)
    """
    return next((c.get("twin") for c in cells if c["name"] == pick), None)


def scoring_plan(pick, cells, baselines, others):
    """Which cells are scored on the test trials, and what the pick is paired with.

    The pick is compared with ``kd`` (every table) and, each in its own
    paired table, with its plain-input twin when it names one (``twin``: the
    same loss composition on plain segments, so that the pair differs only
    in the integrated inputs) and with the ``others``.

    Arguments
    ---------
    pick : str or None
        The dev pick.
    cells : list of dict
        The cells that ran.
    baselines : list of str
        Cells always scored on the test trials.
    others : list of str
        Further cells the pick is paired with (``second_reference``).

    Returns
    -------
    test_cells : list of str
        Cells to score on the test trials, each once, in order.
    pairs : list of str
        The cells the pick is paired with, twin first (none is the pick).

    Example
    -------
    >>> cells = [{"name": "kd"}, {"name": "mlkd"}, {"name": "mlkd+kd"},
    ...          {"name": "imlkd+kd", "twin": "mlkd+kd"}]
    >>> scoring_plan("imlkd+kd", cells, ["kd", "mlkd"], ["mlkd"])
    (['imlkd+kd', 'kd', 'mlkd', 'mlkd+kd'], ['mlkd+kd', 'mlkd'])
    """
    ran = {c["name"] for c in cells}
    pairs = [c for c in dict.fromkeys([twin_of(pick, cells), *others]) if c in ran and c != pick]
    if pick is None:
        pairs = []
    wanted = dict.fromkeys([pick, *baselines, *pairs])
    return [c for c in wanted if c is not None and c in ran], pairs


def prepare_real(data, out):
    """Prepares LibriSpeech exactly as its recipe does (once; reused after).

    Arguments
    ---------
    data : pathlib.Path
        LibriSpeech folder.
    out : pathlib.Path
        Output root of every run.

    Returns
    -------
    dict
        The recipe's hyperparameters (of ``kd.yaml``).
    """
    import importlib.util

    recipe = ROOT / "recipes" / "LibriSpeech" / "imlkd"
    spec = importlib.util.spec_from_file_location("ls_train_kd", recipe / "train_kd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hparams, _ = module.load_hparams(
        str(recipe / "hparams" / "kd.yaml"), {"data_folder": str(data), "output_root": str(out)}
    )
    return hparams


def setup_real(setting, out, lists=("dev",)):
    """Prepares LibriSpeech once; returns the recipe args and trial lists.

    Arguments
    ---------
    setting : dict
        The ``real`` setting of the config.
    out : pathlib.Path
        The setting's output root.
    lists : sequence of str
        Trial lists the recipe scores after training (``dev`` for the study;
        the benchmark adds ``test``).

    Returns
    -------
    base : list of str
        Recipe arguments shared by every run.
    lists : dict
        Trial lists and their data folders.
    """
    data = (ROOT / setting["data"]).resolve()
    hparams = prepare_real(data, out)
    prep = Path(hparams["prep_folder"])
    files = {"dev": prep / "trials_dev.txt", "test": prep / "trials_test.txt"}
    wanted = ", ".join(f"{name}: {files[name]}" for name in lists)
    base = [f"--data_folder={data}", f"--output_root={out}", "--skip_prep=True",
            f"--eval_data_folder={prep}", f"--eval_trials={{{wanted}}}"]
    return base, {**files, "data_folder": prep, "test_data_folder": prep, "hparams": hparams}


def setup_synthetic(setting, out, real_out):
    """The demo's corpus and teacher, a dev trial list; returns recipe args."""
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_imlkd.data.synthetic import generate_corpus
    from speechbrain_imlkd.demo import RECIPE, load_recipe

    with open(ROOT / setting["demo_config"], encoding="utf-8") as f:
        cfg = load_hyperpyyaml(f)
    corpus = out / "corpus"
    generate_corpus(corpus, **cfg["corpus"])
    teacher_dir = out / "teacher" / "exported"
    if not (teacher_dir / "hyperparams.yaml").is_file():
        load_recipe("train_teacher").main(
            [str(RECIPE / "hparams" / "train_teacher_ecapa.yaml"), f"--data_folder={corpus}",
             f"--output_folder={out / 'teacher'}", *as_overrides(cfg["teacher"]), "--noprogressbar"]
        )
    prep = out / "prepared"
    student = cfg["students"]
    base = [f"--data_folder={corpus}", f"--teacher_source={teacher_dir}", f"--output_root={out}",
            f"--prep_folder={prep}", *as_overrides(student)]
    # Preparation through one short scratch run's loader (as the recipe does).
    train_kd = load_recipe("train_kd")
    train_kd.load_hparams(str(RECIPE / "hparams" / "scratch_ecapa.yaml"),
                          {"data_folder": str(corpus), "output_root": str(out),
                           "prep_folder": str(prep), "seg_dur": student["seg_dur"]})
    # Named dev.txt: the recipe names its scores file after the list's stem.
    dev = out / "dev.txt"
    if not dev.is_file():
        dev_trials_from_csv(prep / "dev.csv", corpus / "wav", dev)
    base += ["--skip_prep=True", f"--eval_data_folder={corpus}", f"--eval_trials={dev}"]
    lists = {"dev": dev, "test": corpus / "veri_test2.txt", "data_folder": corpus,
             "test_data_folder": corpus}
    real_prep = real_out / "prepared"
    if (real_prep / "trials_test.txt").is_file():
        lists["transfer"] = real_prep / "trials_test.txt"
        lists["transfer_data_folder"] = real_prep
    return base, lists


def run_setting(name, cfg, cells, seeds, out_root, jobs, n_boot):
    """The whole study of one setting; returns its summary."""
    setting = cfg["settings"][name]
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if name == "real":
        base, lists = setup_real(setting, out)
    else:
        base, lists = setup_synthetic(setting, out, out_root / "real")
    runner = Runner(ROOT / setting["recipe"], out, cfg["threads"])
    print(f"[{name}] {len(cells)} cells x {len(seeds)} seeds", flush=True)
    folders = train_cells(setting, cells, seeds, base, out, runner, jobs)
    reference = cfg["reference"]
    dev = table({c: dev_scores(f) for c, f in folders.items()}, lists["dev"], reference, n_boot)
    pick = choose_pick(dev, cells)
    ran = [c for c in cells if c["name"] in folders]
    others = [cfg["second_reference"]] if cfg.get("second_reference") else []
    test_cells, pairs = scoring_plan(pick, ran, cfg["test_baselines"], others)
    test_scores = {c: score_list(folders[c], lists["test_data_folder"], lists["test"], "test")
                   for c in test_cells}
    test = table(test_scores, lists["test"], reference, n_boot)
    summary = {"setting": name, "seeds": seeds, "cells": cells, "pick": pick, "dev": dev,
               "test": test, "times_s": runner.times}
    # The pick against its plain-input twin and against mlkd, each paired
    # on the same trials.
    summary["test_vs"] = {
        ref: table({c: test_scores[c] for c in (ref, pick)}, lists["test"], ref, n_boot)
        for ref in pairs
    }
    if "transfer" in lists:
        summary["transfer"] = table(
            {c: score_list(f, lists["transfer_data_folder"], lists["transfer"], "real")
             for c, f in folders.items()},
            lists["transfer"], reference, n_boot,
        )
    # Run times persist across resumed invocations (a resumed run costs 0 s).
    times_file = out / "study_times.json"
    recorded = json.loads(times_file.read_text()) if times_file.is_file() else {"runs": {}, "wall_s": 0.0}
    recorded["runs"].update(runner.times)
    recorded["wall_s"] += time.perf_counter() - t0
    times_file.write_text(json.dumps(recorded, indent=2))
    summary["times_s"], summary["wall_s"] = recorded["runs"], recorded["wall_s"]
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def report(summary, argv):
    """The study's markdown report."""
    name = summary["setting"]
    lines = [
        f"## IML-KD study, {name} setting",
        "",
        f"Command: `.venv/bin/python benchmarks/study.py {' '.join(argv)}`",
        "",
        f"Seeds: {summary['seeds']}. Knobs are chosen on the DEV trials only; the pick "
        f"(**{summary['pick']}**, lowest mean dev EER among the candidate cells) and the "
        "baselines are then scored once on the TEST trials. Intervals: 95% speaker bootstrap "
        "of the seed mean (1,000 resamples); the paired column resamples the same speakers "
        "for both cells.",
        "",
    ]
    lines += markdown_table("Dev trials (choices)", summary["dev"], "kd")
    lines += markdown_table("Test trials (report)", summary["test"], "kd")
    twin = twin_of(summary["pick"], summary["cells"])
    for ref, paired in summary.get("test_vs", {}).items():
        why = " (its plain-input twin: the same loss, plain segments)" if ref == twin else ""
        lines += markdown_table(f"Test trials, the pick against {ref}{why}", paired, ref)
    if "transfer" in summary:
        lines += markdown_table(
            "Transfer to real speech (LibriSpeech test trials; never used for choices)",
            summary["transfer"], "kd")
    lines += [f"Wall time of all invocations {summary['wall_s'] / 60:.1f} min (2 shared cores). Run times (s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in summary["times_s"].items()), ""]
    return "\n".join(lines)


def main(argv=None):
    """Runs the study.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    dict
        ``{setting: summary}``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--settings", nargs="+", default=["real", "synthetic"])
    parser.add_argument("--cells", nargs="+", default=None, help="cell names (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--n_boot", type=int, default=None)
    parser.add_argument("--no_report_copy", action="store_true")
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(raw)
    cfg = yaml.safe_load(args.config.read_text())
    cells = cfg["cells"]
    if args.cells:
        unknown = set(args.cells) - {c["name"] for c in cells}
        if unknown:
            raise SystemExit(f"unknown cells {sorted(unknown)}; the config has "
                             f"{[c['name'] for c in cells]}")
        cells = [c for c in cells if c["name"] in args.cells]
    seeds = args.seeds or cfg["seeds"]
    results = {}
    for name in args.settings:
        if name not in cfg["settings"]:
            raise SystemExit(f"unknown setting {name!r}; the config has {sorted(cfg['settings'])}")
        summary = run_setting(name, cfg, cells, seeds, args.out.resolve(), args.jobs or cfg["jobs"],
                              args.n_boot or cfg["n_boot"])
        text = report(summary, raw)
        (args.out / name / "study.md").write_text(text)
        if not args.no_report_copy:
            shutil.copyfile(args.out / name / "study.md", ROOT / "benchmarks" / f"results_study_{name}.md")
        print(text, flush=True)
        results[name] = summary
    return results


if __name__ == "__main__":
    main()
