#!/usr/bin/env python3
"""Real-speech benchmark: a real pretrained teacher distilled on real voices.

One command runs the LibriSpeech recipe (``recipes/LibriSpeech/imlkd``) with
the GE2E encoder of the ``resemblyzer`` wheel as the teacher, on the 251
real LibriSpeech speakers of ``../shared/data``: speaker-disjoint train, dev
and test speakers, every method for every seed with the same student and
budget, then one table of test EER and minDCF(0.01) with seed spread,
speaker-bootstrap intervals of the seed mean and a paired comparison with
``kd`` (:func:`speechbrain_imlkd.significance.compare_methods`), beside the
teacher's own EER on the same trials::

    .venv/bin/python benchmarks/bench_real_teacher.py            # all methods, 3 seeds
    .venv/bin/python benchmarks/bench_real_teacher.py --jobs 2 --out results/study/real

Runs whose ``results.json`` exists are kept (the script resumes). The
table goes to ``<out>/results_real_teacher.md`` and ``summary.json``, and
is copied to ``benchmarks/results_real_teacher.md``. Knobs are the recipe's
YAML values (chosen on dev trials by ``benchmarks/study.py``); the test
trials are only read for this report.

Authors
 * speechbrain-imlkd contributors
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study  # noqa: E402  (the ablation driver's runner and preparation)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "LibriSpeech" / "imlkd"
STUDY_CONFIG = yaml.safe_load((ROOT / "benchmarks" / "study.yaml").read_text())
DEFAULT_DATA = ROOT / STUDY_CONFIG["settings"]["real"]["data"]
# The study (benchmarks/study.py, setting "real") reads the same runs.
DEFAULT_OUT = ROOT / "results" / "study" / "real"
REPORT = ROOT / "benchmarks" / "results_real_teacher.md"
METHODS = ["scratch", "kd", "emb_kd", "mlkd", "imlkd"]
SEEDS = [1986, 2024, 7]
REFERENCE = "kd"
LISTS = ("dev", "test")


def teacher_results(hparams, out):
    """Scores the teacher itself on the dev and test trials.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters.
    out : pathlib.Path
        Output root.

    Returns
    -------
    dict
        ``evaluate_model``'s results.
    """
    from speechbrain_imlkd.scoring import evaluate_model
    from speechbrain_imlkd.teacher import load_teacher

    folder = out / "teacher" / "eval"
    if (folder / "results.json").is_file():
        return json.loads((folder / "results.json").read_text())
    teacher = load_teacher(hparams["teacher_source"], out / "pretrained_teacher")
    return evaluate_model(
        teacher.embed_wavs,
        hparams["eval_data_folder"],
        hparams["eval_trials"],
        folder,
        model_key=f"teacher-{teacher.front_end['adapter']}",
        sample_rate=hparams["sample_rate"],
        progress=False,
        extra={"parameters": sum(p.numel() for p in teacher.parameters())},
    )


def train_all(methods, seeds, out, jobs, threads, extra):
    """Trains (or finds) every method x seed with the study's runner.

    Every run is scored on the dev and the test trials; IML-KD's IG cache is
    built once, before its first seed, and shared with the study's cells of
    the same IG settings.
    """
    setting = dict(STUDY_CONFIG["settings"]["real"])
    setting["overrides"] = {**setting.get("overrides", {}), **extra}
    base, _ = study.setup_real(setting, out, lists=LISTS)
    runner = study.Runner(study.ROOT / setting["recipe"], out, threads)
    cells = [{"name": m, "method": m, "ig_cache": "default"} for m in methods]
    study.train_cells(setting, cells, seeds, base, out, runner, jobs)
    return runner.times


def load_scores(out, method, seed, name):
    """Labels and scores of one run on one trial list."""
    from speechbrain_imlkd.scoring import read_scores

    base = out / method / f"seed{seed}" / "eval" if method != "teacher" else out / "teacher" / "eval"
    return read_scores(base / f"scores_{name}.txt")


def summarise(methods, seeds, hparams, out, n_boot):
    """Seed means, intervals and paired comparisons on every list."""
    from speechbrain_imlkd.data.trials import read_trials
    from speechbrain_imlkd.significance import bootstrap_ci, compare_methods, speakers_of_trials

    summary = {}
    for name in LISTS:
        trials = read_trials(hparams["eval_trials"][name])
        speakers = speakers_of_trials(trials.enrol)
        labels = np.asarray(trials.labels)
        per_metric = {}
        for metric in ("eer", "min_dcf"):
            runs = {}
            for method in methods:
                runs[method] = []
                for seed in seeds:
                    lab, scores = load_scores(out, method, seed, name)
                    if not np.array_equal(lab, labels):
                        raise ValueError(f"{method} seed {seed}: scores_{name}.txt is not in trial order")
                    runs[method].append(scores)
            table = compare_methods(
                runs, labels, speakers, reference=REFERENCE if REFERENCE in runs else None,
                n_boot=n_boot, metric=metric,
            )
            _, t_scores = load_scores(out, "teacher", None, name)
            teacher = bootstrap_ci(t_scores, labels, speakers, metric=metric, n_boot=n_boot)
            per_metric[metric] = {
                "teacher": {"estimate": teacher.estimate, "low": teacher.low, "high": teacher.high},
                "methods": {m: vars(s) for m, s in table.items()},
            }
        summary[name] = {
            "n_trials": int(labels.size),
            "n_target": int(labels.sum()),
            "n_speakers": int(len(set(speakers))),
            "metrics": per_metric,
        }
    return summary


def pct(x):
    """A fraction as a percentage with two decimals."""
    return f"{100 * x:.2f}"


def markdown(summary, teacher, hparams, times, args, wall, jobs):
    """The report table."""
    prep = json.loads(
        (Path(hparams["prep_folder"]) / "prepare_librispeech_options.json").read_text()
    )
    lines = [
        "# Real speech: resemblyzer GE2E teacher -> ECAPA student, LibriSpeech",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_real_teacher.py {' '.join(args)}`",
        "",
        f"Data: {prep['stats']['n_speakers']} real LibriSpeech speakers (one utterance each, "
        f"`../shared/data`), speaker-disjoint: {prep['stats']['train_speakers']} train, "
        f"{prep['stats']['trials']['dev']['n_speakers']} dev, "
        f"{prep['stats']['trials']['test']['n_speakers']} test speakers. "
        f"Trials: {hparams['trial_window']:g} s windows; **target trials are same-session** "
        "(disjoint windows of one recording: each speaker has one file).",
        "",
        f"Teacher: {teacher['parameters']:,} parameters; student ECAPA C={hparams['student_channels']}, "
        f"{summary['test']['metrics']['eer']['methods'][next(iter(summary['test']['metrics']['eer']['methods']))]['n_seeds']} seeds, "
        f"{hparams['number_of_epochs']} epochs, batch {hparams['batch_size']}, same for every method.",
        "",
    ]
    for name in LISTS:
        s = summary[name]
        eer, dcf = s["metrics"]["eer"], s["metrics"]["min_dcf"]
        lines += [
            f"## {name} trials ({s['n_trials']:,} trials, {s['n_target']:,} target, "
            f"{s['n_speakers']} enrolment speakers)",
            "",
            "| system | EER % mean +- std over seeds | 95% CI (speakers) | vs kd: diff [CI], P(lower) | "
            "minDCF(0.01) mean +- std | per-seed EER % |",
            "|---|---|---|---|---|---|",
            f"| teacher | {pct(eer['teacher']['estimate'])} | [{pct(eer['teacher']['low'])}, "
            f"{pct(eer['teacher']['high'])}] | | {dcf['teacher']['estimate']:.3f} | |",
        ]
        for method, m in eer["methods"].items():
            d = dcf["methods"][method]
            versus = ""
            if m["difference"] is not None:
                versus = (f"{pct(m['difference'])} [{pct(m['diff_low'])}, {pct(m['diff_high'])}], "
                          f"{m['p_better']:.2f}")
            lines.append(
                f"| {method} | {pct(m['mean'])} +- {pct(m['seed_std'])} | [{pct(m['low'])}, "
                f"{pct(m['high'])}] | {versus} | {d['mean']:.3f} +- {d['seed_std']:.3f} | "
                f"{', '.join(pct(v) for v in m['per_seed'])} |"
            )
        lines.append("")
    lines += [
        f"Wall time of the training invocations: {wall / 60:.1f} min on this machine "
        f"({os.cpu_count()} cores shared with other jobs, {jobs} runs in parallel, "
        "1 thread each; later invocations resume). Per run (s, wall): "
        + ", ".join(f"{k} {v:.0f}" for k, v in times.items()),
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    """Runs the benchmark.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    dict
        The summary.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra recipe overrides, e.g. --override number_of_epochs=5")
    parser.add_argument("--no_report_copy", action="store_true")
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    if not DEFAULT_DATA.is_dir():
        raise SystemExit(f"LibriSpeech folder not found: {DEFAULT_DATA} (see ../shared/data/README.md)")
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    print("preparing the data", flush=True)
    hparams = study.prepare_real(DEFAULT_DATA.resolve(), args.out)
    print("scoring the teacher", flush=True)
    teacher = teacher_results(hparams, args.out)
    print(f"training {len(args.methods)} methods x {len(args.seeds)} seeds", flush=True)
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.override)}
    times = train_all(args.methods, args.seeds, args.out, args.jobs, args.threads, overrides)
    summary = summarise(args.methods, args.seeds, hparams, args.out, args.n_boot)
    summary["teacher"] = teacher
    # Run times persist across resumed invocations (a resumed run costs 0 s).
    times_file = args.out / "times.json"
    recorded = json.loads(times_file.read_text()) if times_file.is_file() else {}
    recorded["runs"] = {**recorded.get("runs", {}), **times}
    wall = time.perf_counter() - t0
    if times:
        recorded["wall_s"] = recorded.get("wall_s", 0.0) + wall
    times_file.write_text(json.dumps(recorded, indent=2))
    times, wall = recorded["runs"], recorded.get("wall_s", wall)
    summary["times_s"] = times
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    report = markdown(summary, teacher, hparams, times, raw, wall, args.jobs)
    (args.out / "results_real_teacher.md").write_text(report)
    if not args.no_report_copy:
        shutil.copyfile(args.out / "results_real_teacher.md", REPORT)
    print(report)
    return summary


if __name__ == "__main__":
    main()
