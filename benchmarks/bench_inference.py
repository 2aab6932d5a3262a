"""Benchmark: inference latency, real-time factor and memory of teacher and students.

Every figure comes from one run and is printed side by side:

- models: the C=1024 teacher (``build_ecapa(1024)``, the hub teacher's
  architecture and compute, **random weights**: the hub weights cannot be
  downloaded here, and speed does not depend on them), the paper's students
  C=512/256/128 (random weights too), and the demo's trained ``kd`` student
  (C=32, from ``make demo``'s work folder, trained here when ``--train-demo``
  is given and it is absent);
- runtimes: torch eager (the hub-layout folder loaded by SpeechBrain,
  ``EncoderClassifier.encode_batch``: Fbank, sentence normalisation,
  ECAPA-TDNN), ONNX Runtime fp32 and ONNX Runtime dynamic int8 (the graphs of
  :mod:`speechbrain_imlkd.onnx_export`, the whole pipeline from waveform);
- inputs: 1 s, 3 s and 10 s of synthetic speech-like audio, batch 1 and
  batch 16 (every row full length), one and two threads.

Each (model, runtime) runs in its own subprocess, so that one runtime's
allocations do not count against another's. In it, each configuration is
called ``--reps`` times after one warm-up call of the smallest input (more
calls for fast configurations, up to ``MIN_SECONDS`` of timing), and the
median wall time of a call gives the latency per utterance (call time /
batch) and the real-time factor (call time / seconds of audio in the call).
The speed-up is the C=1024 teacher's torch latency in the same configuration
divided by the row's.

Memory: ``model MB`` is the growth of the worker's resident set (``VmRSS``)
from before loading the model to after its warm-up call; ``peak MB`` is the
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before
each configuration) while running batch 16 x 10 s, the largest input, and
``+peak MB`` its growth over the resident set just before. These are
process-level figures (torch's and ONNX Runtime's native allocations
included), not Python's ``tracemalloc``, which sees neither.

Accuracy of the demo student: EER and minDCF on the demo's test trials
through ``imlkd-verify``'s code path (:func:`speechbrain_imlkd.verify_cli.verify`)
with torch, ONNX fp32 and ONNX int8, and the relative EER change of int8.

Example
-------
``python benchmarks/bench_inference.py --train-demo --output benchmarks/results_inference.md``

``python benchmarks/bench_inference.py --quick`` (C=128 and the demo student
only, one thread, 1 s and 3 s; about a minute)
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "hparams" / "demo.yaml"
DEMO_METHOD = "kd"
TEACHER = "teacher C=1024"
DEMO_STUDENT = "demo student (kd)"
STUDENT_WIDTHS = (512, 256, 128)
RUNTIMES = ("torch", "onnx fp32", "onnx int8")
DURATIONS = (1.0, 3.0, 10.0)
BATCHES = (1, 16)
THREADS = (1, 2)
REPS = 3
#: Fast configurations are repeated until this much time is timed (more
#: samples for the median where they are cheap).
MIN_SECONDS = 0.5
MAX_REPS = 25
SAMPLE_RATE = 16000
SEED = 0
# The goal checked in the report (the issue's): the C=256 student under
# ONNX Runtime, batch 1, 3 s, one thread, against the teacher in torch.
GOAL_MODEL = "student C=256"
GOAL_SPEEDUP = 8.0
GOAL_CONFIG = (3.0, 1, 1)
GOAL_INT8_REL_EER = 0.02
KIB = 1024


# --------------------------------------------------------------------------
# memory (Linux /proc)
# --------------------------------------------------------------------------
def _status_kib(field):
    """A ``VmRSS``/``VmHWM`` value of this process, in KiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _reset_peak():
    """Resets ``VmHWM`` to the current resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# worker: one (model, runtime) in its own process
# --------------------------------------------------------------------------
def _inputs(seconds, batch):
    """``batch`` full-length rows of synthetic speech-like audio."""
    from speechbrain_imlkd.onnx_export import synthetic_waveforms

    rows = [synthetic_waveforms(seconds, batch=1, sample_rate=SAMPLE_RATE, seed=SEED + i)[0]
            for i in range(batch)]
    return torch.cat(rows), torch.ones(batch)


def _load(runtime, model_dir, onnx_files, threads):
    """The embedder of a runtime (ONNX sessions fix their threads at creation)."""
    if runtime == "torch":
        from speechbrain_imlkd.embeddings import load_model

        return load_model(model_dir)
    from speechbrain_imlkd.onnx_export import OnnxEmbedder

    return OnnxEmbedder(onnx_files[runtime], threads=threads)


def run_worker(spec):
    """Times one (model, runtime) over every configuration.

    Arguments
    ---------
    spec : dict
        ``model_dir``, ``onnx_files``, ``runtime``, ``durations``,
        ``batches``, ``threads``, ``reps``.

    Returns
    -------
    dict
        ``model_mb``, ``peak_reset`` and ``configs`` (one dict per
        duration, batch and thread count).
    """
    runtime = spec["runtime"]
    rss0 = _status_kib("VmRSS")
    embedders = {}
    warm = _inputs(min(spec["durations"]), 1)
    results, model_mb = [], None
    peak_reset = True
    with torch.inference_mode():
        for threads in spec["threads"]:
            torch.set_num_threads(threads)
            if runtime == "torch":
                embedder = embedders.setdefault("torch", _load(runtime, spec["model_dir"], None, threads))
            else:
                embedder = _load(runtime, spec["model_dir"], spec["onnx_files"], threads)
            embedder.encode_batch(*warm)
            if model_mb is None:
                model_mb = (_status_kib("VmRSS") - rss0) / KIB
            for seconds in spec["durations"]:
                for batch in spec["batches"]:
                    wavs, lens = _inputs(seconds, batch)
                    rss_before = _status_kib("VmRSS")
                    peak_reset = _reset_peak() and peak_reset
                    times = []
                    while len(times) < spec["reps"] or (
                        sum(times) < MIN_SECONDS and len(times) < MAX_REPS
                    ):
                        start = time.perf_counter()
                        embedder.encode_batch(wavs, lens)
                        times.append(time.perf_counter() - start)
                    peak = _status_kib("VmHWM")
                    call = statistics.median(times)
                    results.append(dict(
                        seconds=seconds, batch=batch, threads=threads, reps=len(times),
                        call_s=call, latency_ms=1000 * call / batch,
                        rtf=call / (batch * seconds),
                        peak_mb=peak / KIB, extra_peak_mb=(peak - rss_before) / KIB,
                    ))
            del embedder
    return dict(model_mb=model_mb, peak_reset=peak_reset, configs=results)


def _spawn_worker(spec):
    """Runs :func:`run_worker` in a fresh interpreter; returns its result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(max(spec["threads"])))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"worker {spec['runtime']} on {spec['model_dir']} failed:\n{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------
def ensure_demo_student(work_dir, config=DEMO_CONFIG, method=DEMO_METHOD):
    """The demo's ``kd`` student (and its corpus), trained here when absent.

    Runs the first stages of ``make demo`` for one method and the first
    seed, with the demo config's sizes: the synthetic corpus, the teacher
    (``train_teacher.py``, skipped when already exported) and the student
    (``train_kd.py``). A ``make demo`` work folder (``demo_work/``) already
    holds all of them and is reused as is.

    Arguments
    ---------
    work_dir : str or pathlib.Path
        The work folder (``make demo``'s ``--work``).
    config : str or pathlib.Path
        The demo YAML.
    method : str
        The student's method.

    Returns
    -------
    dict
        ``student`` (hub-layout folder), ``corpus``, ``trials``, ``seed``,
        ``trained_now`` (bool), ``train_time_s``.
    """
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_imlkd.data.synthetic import generate_corpus
    from speechbrain_imlkd.demo import RECIPE, as_overrides, load_recipe, student_overrides

    with open(config, encoding="utf-8") as f:
        cfg = load_hyperpyyaml(f)
    work_dir = Path(work_dir).resolve()
    seed = cfg["seeds"][0]
    corpus = work_dir / "corpus"
    student = work_dir / "students" / method / f"seed{seed}" / "exported"
    teacher_dir = work_dir / "teacher"
    info = dict(student=student, corpus=corpus, trials=corpus / "veri_test2.txt",
                seed=seed, trained_now=False, train_time_s=0.0)
    if (student / "hyperparams.yaml").is_file() and info["trials"].is_file():
        return info
    torch.set_num_threads(cfg["threads"])
    start = time.time()
    generate_corpus(corpus, **cfg["corpus"])
    teacher_export = teacher_dir / "exported"
    if not (teacher_export / "hyperparams.yaml").is_file():
        _, teacher_export = load_recipe("train_teacher").main(
            [str(RECIPE / "hparams" / "train_teacher_ecapa.yaml"), f"--data_folder={corpus}",
             f"--output_folder={teacher_dir}", *as_overrides(cfg["teacher"]), "--noprogressbar"]
        )
    load_recipe("train_kd").main(
        [str(RECIPE / "hparams" / f"{method}_ecapa.yaml"), f"--data_folder={corpus}",
         f"--teacher_source={teacher_export}", f"--output_root={work_dir / 'students'}",
         f"--seed={seed}", *as_overrides(student_overrides(cfg, method)), "--noprogressbar"]
    )
    info.update(trained_now=True, train_time_s=time.time() - start)
    return info


def prepare_models(work, widths, demo_student=None, say=print):
    """Hub folders and ONNX graphs (fp32, int8) of every benchmarked model.

    Arguments
    ---------
    work : pathlib.Path
        Scratch folder.
    widths : sequence of int
        Widths of the random-weight models (1024 = the teacher).
    demo_student : pathlib.Path or None
        The trained demo student's hub folder.
    say : callable
        Progress messages.

    Returns
    -------
    dict
        ``{name: {"dir", "onnx fp32", "onnx int8", "parameters",
        "export_s", "onnx_mb", "int8_mb"}}``.
    """
    from speechbrain_imlkd.export import export_model
    from speechbrain_imlkd.models import build_ecapa, count_parameters
    from speechbrain_imlkd.onnx_export import export_onnx, quantize_int8

    models = {}
    sources = []
    for width in widths:
        name = TEACHER if width == 1024 else f"student C={width}"
        torch.manual_seed(SEED)
        model = build_ecapa(width)
        sources.append((name, export_model(work / f"c{width}", model), count_parameters(model)))
    if demo_student is not None:
        from speechbrain_imlkd.embeddings import load_model

        n_params = count_parameters(load_model(demo_student).mods["embedding_model"])
        sources.append((DEMO_STUDENT, Path(demo_student), n_params))
    for name, folder, n_params in sources:
        start = time.time()
        fp32 = export_onnx(folder, work / f"{folder.name}.onnx")
        export_s = time.time() - start
        int8 = quantize_int8(fp32)
        say(f"  {name}: exported in {export_s:.0f} s")
        models[name] = {"dir": str(folder), "onnx fp32": str(fp32), "onnx int8": str(int8),
                        "parameters": n_params, "export_s": export_s,
                        "onnx_mb": fp32.stat().st_size / KIB**2,
                        "int8_mb": int8.stat().st_size / KIB**2}
    return models


def demo_accuracy(models, demo):
    """EER / minDCF of the demo student with each runtime on the demo trials."""
    from speechbrain_imlkd.verify_cli import verify

    entry = models[DEMO_STUDENT]
    rows = {}
    for runtime, model in (("torch", entry["dir"]), ("onnx fp32", entry["onnx fp32"]),
                           ("onnx int8", entry["onnx int8"])):
        start = time.time()
        result = verify(model, trials=demo["trials"], wav_root=demo["corpus"] / "wav")
        rows[runtime] = dict(
            eer=result.metrics["eer"], min_dcf=result.metrics["min_dcf_0.01"],
            n_trials=result.metrics["n_trials"], seconds=time.time() - start,
            scores=result.scores,
        )
    ref = rows["torch"]["scores"]
    for row in rows.values():
        diff = row.pop("scores") - ref
        row["max_score_diff"] = float(abs(diff).max())
    return rows


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def _index(results):
    """``{(model, runtime, seconds, batch, threads): config}``."""
    out = {}
    for (model, runtime), res in results.items():
        for c in res["configs"]:
            out[(model, runtime, c["seconds"], c["batch"], c["threads"])] = c
    return out


def format_report(models, results, accuracy, args, meta):
    """The markdown report."""
    idx = _index(results)
    lines = [
        "# Inference speed and memory: teacher vs students, torch vs ONNX Runtime",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}. Load average (1 min) {meta['load_start']:.1f} at the "
        f"start, {meta['load_end']:.1f} at the end (a shared machine: other jobs run too, "
        "so two-thread figures in particular are noisy). Total run time "
        f"{meta['total_s']:.0f} s.",
        "",
        f"Environment: {meta['environment']}.",
        "",
        "Latency is per utterance (median call time / batch), RTF the call time over the "
        "seconds of audio in the call, `x` the speed-up over the C=1024 teacher in torch "
        f"in the same configuration. Median of at least {args.reps} calls after a warm-up. "
        "The teacher and the C=512/256/128 students have random weights "
        "(same architecture and compute as trained ones); the demo student is trained.",
        "",
    ]
    durations = sorted({k[2] for k in idx})
    batches = sorted({k[3] for k in idx})
    threads = sorted({k[4] for k in idx})
    for n_threads in threads:
        for batch in batches:
            lines += [f"## Batch {batch}, {n_threads} thread{'s' if n_threads > 1 else ''}", ""]
            head = "| model | runtime |"
            rule = "|---|---|"
            for sec in durations:
                head += f" {sec:g} s ms/utt | {sec:g} s RTF | {sec:g} s x |"
                rule += "---:|---:|---:|"
            lines += [head, rule]
            for model in models:
                for runtime in RUNTIMES:
                    if (model, runtime) not in results:
                        continue
                    row = f"| {model} | {runtime} |"
                    for sec in durations:
                        c = idx.get((model, runtime, sec, batch, n_threads))
                        t = idx.get((TEACHER, "torch", sec, batch, n_threads))
                        if c is None:
                            row += " | | |"
                            continue
                        speedup = f"{t['call_s'] / c['call_s']:.1f}" if t else ""
                        row += f" {c['latency_ms']:.1f} | {c['rtf']:.4f} | {speedup} |"
                    lines.append(row)
            lines.append("")
    big = (max(durations), max(batches), min(threads))
    lines += [
        f"## Memory (batch {big[1]}, {big[0]:g} s, {big[2]} thread) and model size",
        "",
        "| model | parameters | runtime | model MB | peak MB | +peak MB | file MB | export s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for model, entry in models.items():
        for runtime in RUNTIMES:
            if (model, runtime) not in results:
                continue
            c = idx.get((model, runtime) + big)
            res = results[(model, runtime)]
            size = {"torch": "", "onnx fp32": f"{entry['onnx_mb']:.1f}",
                    "onnx int8": f"{entry['int8_mb']:.1f}"}[runtime]
            export = f"{entry['export_s']:.0f}" if runtime == "onnx fp32" else ""
            peak = f"{c['peak_mb']:.0f} | {c['extra_peak_mb']:.0f}" if c else " | "
            lines.append(
                f"| {model} | {entry['parameters']:,} | {runtime} | {res['model_mb']:.0f} | "
                f"{peak} | {size} | {export} |"
            )
    lines.append("")
    goal = _goal(idx)
    if goal:
        lines += ["## Goal", ""] + goal + [""]
    if accuracy:
        lines += [
            "## Demo student accuracy by runtime (demo test trials)",
            "",
            "| runtime | EER (%) | minDCF(0.01) | EER vs torch | EER vs onnx fp32 | max |score diff| vs torch | scoring s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        ref, fp32 = accuracy["torch"]["eer"], accuracy["onnx fp32"]["eer"]
        for runtime, a in accuracy.items():
            lines.append(
                f"| {runtime} | {100 * a['eer']:.2f} | {a['min_dcf']:.3f} | "
                f"{100 * (a['eer'] - ref) / ref:+.2f}% | {100 * (a['eer'] - fp32) / fp32:+.2f}% | "
                f"{a['max_score_diff']:.1e} | {a['seconds']:.1f} |"
            )
        rel = (accuracy["onnx int8"]["eer"] - fp32) / fp32
        verdict = "met" if abs(rel) <= GOAL_INT8_REL_EER else "NOT met"
        lines += ["", f"int8 EER change relative to fp32: {100 * rel:+.2f}% "
                      f"(goal: within {100 * GOAL_INT8_REL_EER:.0f}%: {verdict}); "
                      f"{accuracy['torch']['n_trials']} trials.", ""]
    if meta.get("demo_note"):
        lines += [meta["demo_note"], ""]
    return "\n".join(lines)


def _goal(idx):
    """The issue's speed goal, as report lines (empty when not measured)."""
    sec, batch, threads = GOAL_CONFIG
    teacher = idx.get((TEACHER, "torch", sec, batch, threads))
    if teacher is None:
        return []
    out = []
    for runtime in ("onnx fp32", "onnx int8"):
        c = idx.get((GOAL_MODEL, runtime, sec, batch, threads))
        if c is None:
            continue
        speedup = teacher["call_s"] / c["call_s"]
        verdict = "met" if speedup >= GOAL_SPEEDUP else "NOT met"
        out.append(
            f"- {GOAL_MODEL}, {runtime}, batch {batch}, {sec:g} s, {threads} thread: "
            f"{c['latency_ms']:.1f} ms vs the teacher's {teacher['latency_ms']:.1f} ms in torch: "
            f"**{speedup:.1f}x** (goal {GOAL_SPEEDUP:g}x: {verdict})"
        )
    return out


def _machine():
    """CPU model and count."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        cpu = match.group(1).strip() if match else platform.processor()
    except OSError:
        cpu = platform.processor()
    return f"{cpu}, {os.cpu_count()} CPU cores"


def parse_args(argv=None):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="write the markdown report (and .json)")
    parser.add_argument("--demo-work", default=str(REPO / "demo_work"),
                        help="make demo's work folder holding the trained student")
    parser.add_argument("--train-demo", action="store_true",
                        help="train the demo student (corpus, teacher, kd) when absent")
    parser.add_argument("--reps", type=int, default=REPS)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the benchmark and prints (and optionally writes) the report."""
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    start = time.time()
    load_start = os.getloadavg()[0]
    widths = (128,) if args.quick else (1024,) + STUDENT_WIDTHS
    durations = (1.0, 3.0) if args.quick else DURATIONS
    threads = (1,) if args.quick else THREADS
    demo, demo_note = None, ""
    demo_work = Path(args.demo_work)
    student = demo_work / "students" / DEMO_METHOD
    if args.train_demo or any(student.glob("seed*/exported/hyperparams.yaml")):
        demo = ensure_demo_student(demo_work)
        demo_note = (
            f"Demo student: `{DEMO_METHOD}`, seed {demo['seed']}, `hparams/demo.yaml` sizes "
            f"(`{demo['student']}`)"
            + (f"; trained by this run in {demo['train_time_s']:.0f} s." if demo["trained_now"]
               else "; reused from the work folder.")
        )
    else:
        demo_note = f"Demo student: absent from {demo_work} (pass --train-demo); not measured."
    print(demo_note, flush=True)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        print("Exporting models", flush=True)
        models = prepare_models(Path(tmp), widths, demo and demo["student"])
        results = {}
        for name, entry in models.items():
            for runtime in RUNTIMES:
                spec = dict(model_dir=entry["dir"], onnx_files={k: entry[k] for k in RUNTIMES[1:]},
                            runtime=runtime, durations=durations, batches=BATCHES,
                            threads=threads, reps=args.reps)
                t0 = time.time()
                results[(name, runtime)] = _spawn_worker(spec)
                print(f"  {name} / {runtime}: {time.time() - t0:.0f} s", flush=True)
        accuracy = demo_accuracy(models, demo) if demo else None
    import onnxruntime

    meta = dict(
        command="python benchmarks/bench_inference.py "
        + " ".join(a for a in (argv if argv is not None else sys.argv[1:])),
        machine=_machine(), load_start=load_start, load_end=os.getloadavg()[0],
        total_s=time.time() - start, demo_note=demo_note,
        environment=f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}",
    )
    report = format_report(models, results, accuracy, args, meta)
    print(report)
    if args.output:
        out = Path(args.output)
        out.write_text(report + "\n", encoding="utf-8")
        dump = dict(meta=meta, models=models, accuracy=accuracy,
                    results=[dict(model=m, runtime=r, **res) for (m, r), res in results.items()])
        out.with_suffix(".json").write_text(json.dumps(dump, indent=1, default=str))


if __name__ == "__main__":
    main()
