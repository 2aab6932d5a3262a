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
- ``saliency_maps.png``, ``deletion_insertion.png``, ``faithfulness.json``;
- ``demo.log``: everything the recipes and libraries print (SpeechBrain's
  logging, warnings). The terminal gets one progress bar per stage (its
  result in the bar's postfix) and the final table; ``--verbose``
  (``make demo VERBOSE=1``) prints everything on the terminal instead,
  SpeechBrain's per-epoch progress bars included.

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
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from hyperpyyaml import load_hyperpyyaml

# The terminal part lives in console.py; its names stay importable from here.
from speechbrain_imlkd.console import (  # noqa: F401
    ANALYSED,
    DESC_WIDTH,
    EPOCH_LOGGER,
    IG_SHARD,
    LOG_FORMAT,
    POLL_SECONDS,
    TICK_LOGGERS,
    Console,
    analysis_tick,
    epoch_tick,
    say,
    shard_tick,
)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb1" / "imlkd"
DEFAULT_CONFIG = REPO / "hparams" / "demo.yaml"

#: Pins torch's CPU libraries at their AVX2 code paths (ATen kernels, MKL's
#: conditional numerical reproducibility, oneDNN convolutions), so that
#: machines with and without AVX-512 run the same kernels. Measured at
#: 1.03x (student) and 1.09x (teacher) the CPU time of a native training
#: step, with other bits than the native AVX-512 paths (BENCHMARKS.md,
#: "CPU-independent numerics"). Read when the libraries load: set before
#: torch is imported. NumPy's SIMD switches were measured not to change the
#: synthetic corpus and are left alone.
PINNED_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
X86_64 = ("x86_64", "AMD64")
CPUINFO = "/proc/cpuinfo"
LOG_NAME = "demo.log"
#: The method whose runs read precomputed IG targets.
IG_METHOD = "imlkd"
#: Students whose saliency is compared with the teacher's.
ANALYSED_STUDENTS = ("imlkd", "kd")

logger = logging.getLogger(__name__)


def cpu_has_avx2(cpuinfo=CPUINFO):
    """Whether the CPU flags (Linux ``/proc/cpuinfo``) include AVX2.

    Arguments
    ---------
    cpuinfo : str or Path
        The CPU description file.

    Returns
    -------
    bool
        False when the file cannot be read (other systems).

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "cpuinfo"
    >>> _ = f.write_text("flags\\t\\t: fpu sse avx avx2 fma\\n")
    >>> cpu_has_avx2(f), cpu_has_avx2(f.parent / "missing")
    (True, False)
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "avx2" in line.split() for line in text.splitlines())


def pin_numerics(environ=None, modules=None, machine=None, cpuinfo=CPUINFO):
    """Sets :data:`PINNED_NUMERICS` in the environment before torch loads.

    Values already in the environment are kept (a user's own choice wins).
    Nothing is set when torch is already imported (too late: the libraries
    have read their settings) or on a CPU that is not x86-64 with AVX2.

    Arguments
    ---------
    environ : dict, optional
        The environment (default: ``os.environ``).
    modules : dict, optional
        Loaded modules (default: ``sys.modules``).
    machine : str, optional
        ``platform.machine()`` (default: this machine's).
    cpuinfo : str or Path
        For :func:`cpu_has_avx2`.

    Returns
    -------
    str
        What was done, for the report.

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "cpuinfo"
    >>> _ = f.write_text("flags : avx2\\n")
    >>> env = {"MKL_CBWR": "COMPATIBLE"}
    >>> pin_numerics(env, modules={}, machine="x86_64", cpuinfo=f)
    'pinned: ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=COMPATIBLE, ONEDNN_MAX_CPU_ISA=AVX2'
    >>> pin_numerics({}, modules={"torch": None}, machine="x86_64", cpuinfo=f)
    'native (torch was loaded before the demo started)'
    >>> pin_numerics({}, modules={}, machine="arm64", cpuinfo=f)
    'native (not an x86-64 CPU with AVX2)'
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    machine = platform.machine() if machine is None else machine
    if "torch" in modules:
        return "native (torch was loaded before the demo started)"
    if machine not in X86_64 or not cpu_has_avx2(cpuinfo):
        return "native (not an x86-64 CPU with AVX2)"
    for key, value in PINNED_NUMERICS.items():
        environ.setdefault(key, value)
    return "pinned: " + ", ".join(f"{key}={environ[key]}" for key in PINNED_NUMERICS)


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
    # compute_ig.py imports train_kd.py as a sibling module.
    if str(RECIPE) not in sys.path:
        sys.path.insert(0, str(RECIPE))
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


def corpus_size(corpus_cfg):
    """Number of wav files :func:`generate_corpus` writes for these options.

    Arguments
    ---------
    corpus_cfg : dict
        The ``corpus`` section of the demo YAML.

    Returns
    -------
    int

    Example
    -------
    >>> corpus_size({"n_train_speakers": 4, "n_test_speakers": 2,
    ...              "sessions_per_speaker": 2, "utterances_per_session": 3})
    36
    """
    speakers = corpus_cfg["n_train_speakers"] + corpus_cfg["n_test_speakers"]
    return speakers * corpus_cfg["sessions_per_speaker"] * corpus_cfg["utterances_per_session"]


def student_overrides(cfg, method):
    """Overrides of one student run: shared ones, then the method's own.

    Arguments
    ---------
    cfg : dict
        The demo configuration.
    method : str
        The method.

    Returns
    -------
    dict

    Example
    -------
    >>> cfg = {"students": {"lr": 1, "eta": 2}, "method_overrides": {"imlkd": {"eta": 3}}}
    >>> student_overrides(cfg, "imlkd"), student_overrides(cfg, "kd")
    ({'lr': 1, 'eta': 3}, {'lr': 1, 'eta': 2})
    """
    return {**cfg["students"], **(cfg.get("method_overrides") or {}).get(method, {})}


def uses_ig_cache(cfg, method):
    """Whether a student run reads precomputed IG targets.

    Only :data:`IG_METHOD` computes IG; its recipe's ``ig_mode`` defaults
    to ``cached``.

    Arguments
    ---------
    cfg : dict
        The demo configuration.
    method : str
        The method.

    Returns
    -------
    bool

    Example
    -------
    >>> cfg = {"students": {}, "method_overrides": {"imlkd": {"ig_mode": "online"}}}
    >>> uses_ig_cache(cfg, "imlkd"), uses_ig_cache(cfg, "kd")
    (False, False)
    """
    return method == IG_METHOD and student_overrides(cfg, method).get("ig_mode", "cached") == "cached"


def run_demo(out_dir, work_dir, n_seeds=1, config=DEFAULT_CONFIG, toy=False, verbose=False,
             console=None, numerics=None):
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
    verbose : bool
        Print everything on the terminal instead of one bar per stage and
        ``<out_dir>/demo.log``.
    console : Console, optional
        The terminal (default: a :class:`Console` on ``sys.stdout``).
    numerics : str, optional
        What :func:`pin_numerics` did (for the report).

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
    console = console or Console(verbose=verbose)
    out_dir, work_dir = Path(out_dir).resolve(), Path(work_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not console.verbose:
        console.say(f"log: {out_dir / LOG_NAME} (make demo VERBOSE=1 prints it here)")
    try:
        with console.capture(out_dir / LOG_NAME):
            result = _run_stages(out_dir, work_dir, n_seeds, config, toy, console, numerics)
    except Exception as error:
        if not console.verbose:
            console.say(f"failed ({type(error).__name__}); the log is {out_dir / LOG_NAME}")
        raise
    console.stream.write((out_dir / "results.md").read_text())
    console.say(f"results in {out_dir}")
    return result


def _run_stages(out_dir, work_dir, n_seeds, config, toy, console, numerics=None):
    """The stages of :func:`run_demo` (its output captured in quiet mode).

    Arguments
    ---------
    out_dir : Path
        Results folder.
    work_dir : Path
        Work folder.
    n_seeds : int
        Number of seeds.
    config : str or Path
        The demo YAML.
    toy : bool
        Toy sizes.
    console : Console
        The terminal.
    numerics : str, optional
        What :func:`pin_numerics` did.

    Returns
    -------
    dict
        The content of ``results.json``.
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
    methods = cfg["methods"]
    ig_methods = [m for m in methods if uses_ig_cache(cfg, m)]
    # SpeechBrain's per-epoch bars would bury the stage bars (and the log).
    run_opts = [] if console.verbose else ["--noprogressbar"]
    corpus = work_dir / "corpus"
    students_root = work_dir / "students"
    n_stages = 5 + bool(ig_methods)
    stage = iter(range(1, n_stages + 1))

    def label(name):
        return f"{next(stage)}/{n_stages} {name}"

    wavs = corpus_size(cfg["corpus"])
    with console.stage(label("corpus"), total=wavs, unit="wav",
                       poll=lambda: sum(1 for _ in corpus.glob("wav/*/*/*.wav"))):
        generate_corpus(corpus, **cfg["corpus"])
    trials = corpus / "veri_test2.txt"

    teacher_out = work_dir / "teacher"
    with console.stage(label("teacher"), total=cfg["teacher"]["number_of_epochs"],
                       unit="epoch", tick=epoch_tick) as bar:
        t0 = time.time()
        teacher_brain, teacher_dir = load_recipe("train_teacher").main(
            [str(RECIPE / "hparams" / "train_teacher_ecapa.yaml"), f"--data_folder={corpus}",
             f"--output_folder={teacher_out}", *as_overrides(cfg["teacher"]), *run_opts]
        )
        teacher_time = time.time() - t0
        teacher_params = count_parameters(teacher_brain.hparams.embedding_model)
        bar.set_postfix_str(f"{teacher_params:,} parameters")

    def student_argv(method, seed, script_overrides=()):
        return [str(RECIPE / "hparams" / f"{method}_ecapa.yaml"), f"--data_folder={corpus}",
                f"--teacher_source={teacher_dir}", f"--output_root={students_root}",
                f"--seed={seed}", *as_overrides(student_overrides(cfg, method)),
                *script_overrides, *run_opts]

    ig_time = 0.0
    if ig_methods:
        # The cache does not depend on the seed: computed once, read by every run.
        with console.stage(label("IG precompute"), unit="shard", tick=shard_tick):
            t0 = time.time()
            for method in ig_methods:
                load_recipe("compute_ig").main(student_argv(method, seeds[0]))
            ig_time = time.time() - t0

    train_kd = load_recipe("train_kd")
    runs, exported = [], {}
    n_runs = len(seeds) * len(methods)
    students_stage = next(stage)
    for i_seed, seed in enumerate(seeds):
        for i_m, method in enumerate(methods):
            k = i_seed * len(methods) + i_m + 1
            epochs = student_overrides(cfg, method)["number_of_epochs"]
            desc = f"{students_stage}/{n_stages} student {k}/{n_runs} {method} s{seed}"
            with console.stage(desc, total=epochs, unit="epoch", tick=epoch_tick) as bar:
                t0 = time.time()
                res = train_kd.main(student_argv(method, seed))
                elapsed = time.time() - t0
                if method in ig_methods and i_seed == 0:
                    # As before the stage split: the one-off precompute is
                    # part of the first imlkd run's training time.
                    elapsed += ig_time
                m = first_trials(res)
                bar.set_postfix_str(f"EER {100 * m['eer']:.2f}%")
            runs.append({"method": method, "seed": seed, "parameters": res["parameters"],
                         "eer": m["eer"], "min_dcf_0.01": m["min_dcf_0.01"],
                         "train_time_s": elapsed})
            exported[(method, seed)] = students_root / method / f"seed{seed}"

    first = seeds[0]
    with console.stage(label("scoring, DET"), total=2, unit="step") as bar:
        teacher_eval = evaluate_model(teacher_dir, corpus, trials, out_dir / "teacher", progress=False)
        t = first_trials(teacher_eval)
        teacher_row = {"parameters": teacher_params, "eer": t["eer"],
                       "min_dcf_0.01": t["min_dcf_0.01"], "train_time_s": teacher_time}
        bar.update(1)
        systems = {"teacher": out_dir / "teacher"}
        systems.update({m: exported[(m, first)] / "eval" for m in methods})
        plot_det(systems, out_dir / "det.png", title="Synthetic corpus, held-out speakers")
        bar.update(1)
        bar.set_postfix_str(f"teacher EER {100 * t['eer']:.2f}%")

    students = {m: exported[(m, first)] / "exported" for m in ANALYSED_STUDENTS if m in methods}
    with console.stage(label("analyses"), total=1 + len(students), unit="model",
                       tick=analysis_tick):
        run_analyses(teacher_dir, students, corpus, trials, out_dir, seed=first, **cfg["analysis"])

    settings = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in PINNED_NUMERICS)
    note = (f"`make demo SEEDS={n_seeds}`{' (toy sizes)' if toy else ''}; "
            f"total wall time {time.time() - start:.0f} s. CPU numerics: "
            f"{numerics or 'not set by the demo'} (ATen capability "
            f"{torch.backends.cpu.get_cpu_capability()}, {settings}; "
            f"{torch.get_num_threads()} thread(s)).")
    result = write_report(out_dir, teacher_row, runs, methods, note)
    if ig_methods:
        result["ig_precompute_s"] = ig_time
        (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None):
    """Command-line entry of ``make demo``.

    Arguments
    ---------
    argv : list of str, optional
        ``--output DIR --work DIR --seeds N [--toy] [--verbose] [--native-numerics]``.

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
    parser.add_argument("--verbose", action="store_true",
                        help="print everything instead of one bar per stage (make demo VERBOSE=1)")
    parser.add_argument("--native-numerics", action="store_true",
                        help="use this CPU's fastest kernels instead of the AVX2 ones pinned "
                             "for results that match across machines")
    args = parser.parse_args(argv)
    # Before anything imports torch.
    numerics = "native (--native-numerics)" if args.native_numerics else pin_numerics()
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    return run_demo(args.output, args.work, args.seeds, args.config, args.toy, args.verbose,
                    numerics=numerics)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
