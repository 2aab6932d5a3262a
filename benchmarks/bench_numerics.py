"""Benchmark: what the switches for CPU-independent numerics cost and change.

The same pipeline gives the same bits twice on one machine but other bits on
another: CPU libraries pick their kernels at run time from the instruction
sets of the processor (AVX-512 here, AVX2 on many machines), and differently
vectorised kernels sum in other orders. Training amplifies the last-bit
differences into different models. Each library has a documented switch that
pins its code path:

* ``ATEN_CPU_CAPABILITY`` (PyTorch's own vectorised kernels: ``avx2``,
  ``default`` = no explicit vectorisation),
* ``MKL_CBWR`` (MKL's conditional numerical reproducibility, for torch's
  BLAS and FFT: ``AVX2``, ``COMPATIBLE``),
* ``ONEDNN_MAX_CPU_ISA`` (oneDNN, torch's CPU convolutions: ``AVX2``), or
  oneDNN off (``torch.backends.mkldnn.enabled = False``),
* ``NPY_DISABLE_CPU_FEATURES`` and ``OPENBLAS_CORETYPE`` (NumPy's SIMD loops
  and its OpenBLAS, which synthesise the corpus),
* fixed thread counts (``OMP_NUM_THREADS``; the demo uses one).

Every configuration runs in its own process (the switches are read at
start-up), round-robin over ``--rounds`` rounds so that load drift on a
shared machine hits all alike, and measures:

1. **speed**: median CPU seconds per training step (80-band Fbank, sentence
   mean normalisation, ECAPA-TDNN, AAM softmax, backward, Adam) on one
   batch of the demo's size (32 chunks of 3 s) for the demo's student
   (C=32) and teacher (C=128), after one warm-up step;
2. **numerics of the steps**: whether the weights after those steps are
   bitwise those of the baseline, and the largest difference;
3. **the corpus** (round 0): a small synthetic corpus generated in the
   configuration, compared byte by byte with the baseline's;
4. **a tiny training run** (round 0): ``train_kd.py`` with
   ``scratch_ecapa.yaml`` (C=16, 2 epochs) on one shared small corpus, its
   exported weights and its EER on the held-out trials, against the
   baseline's.

It also records what the libraries report (ATen capability, the ISA line of
oneDNN's and MKL's verbose output) to show that each switch took effect.

Only one machine was available: an "AVX2 machine" is emulated by capping the
libraries at AVX2 (``avx2_set``), which shows the size of the cross-machine
drift but cannot show that another processor with the same caps gives the
same bits (cache sizes, vendors and library heuristics may still differ).

Example
-------
``python benchmarks/bench_numerics.py --output benchmarks/results_numerics.md``

``python benchmarks/bench_numerics.py --quick`` (fewer configurations and steps)
"""

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb1" / "imlkd"

#: The demo's sizes (hparams/demo.yaml): batch of 3 s chunks, 40 speakers.
BATCH, SECONDS, N_SPEAKERS, SAMPLE_RATE = 32, 3.0, 40, 16000
#: name -> (channels, attention_channels, lin_neurons), as in hparams/demo.yaml.
MODELS = {"student": (32, 16, 64), "teacher": (128, 64, 128)}
LR = 0.002
#: NumPy 2.x names of the SIMD targets above x86-64-v2 and above AVX2.
NPY_ABOVE_AVX2 = "X86_V4 AVX512_ICL AVX512_SPR"
NPY_ABOVE_V2 = "X86_V3 " + NPY_ABOVE_AVX2
#: Switch -> environment. ``IMLKD_BENCH_MKLDNN=0`` makes the worker set
#: ``torch.backends.mkldnn.enabled = False``.
SWITCHES = {
    "aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl_cbwr_avx2": {"MKL_CBWR": "AVX2"},
    "mkl_cbwr_compatible": {"MKL_CBWR": "COMPATIBLE"},
    "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn_off": {"IMLKD_BENCH_MKLDNN": "0"},
    "numpy_avx2": {"NPY_DISABLE_CPU_FEATURES": NPY_ABOVE_AVX2, "OPENBLAS_CORETYPE": "Haswell"},
    "threads2": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
}
CONFIGS = {
    "baseline": {},
    **SWITCHES,
    # Every library capped at AVX2: what an AVX2-only machine runs.
    "avx2_set": {**SWITCHES["aten_avx2"], **SWITCHES["mkl_cbwr_avx2"],
                 **SWITCHES["onednn_avx2"], **SWITCHES["numpy_avx2"]},
    # The most portable paths (x86-64-v2 and up).
    "portable_set": {**SWITCHES["aten_default"], **SWITCHES["mkl_cbwr_compatible"],
                     **SWITCHES["onednn_off"], "NPY_DISABLE_CPU_FEATURES": NPY_ABOVE_V2,
                     "OPENBLAS_CORETYPE": "Nehalem"},
}
QUICK_CONFIGS = ["baseline", "aten_avx2", "mkl_cbwr_avx2", "onednn_avx2", "avx2_set"]
#: Small corpus for the byte comparison (round 0).
CORPUS_CHECK = dict(n_train_speakers=3, n_test_speakers=2, sessions_per_speaker=2,
                    utterances_per_session=2, min_duration=2.0, max_duration=3.0,
                    n_trials=8, seed=11)
#: Corpus and recipe overrides of the tiny training run (round 0).
TINY_CORPUS = dict(n_train_speakers=8, n_test_speakers=4, sessions_per_speaker=3,
                   utterances_per_session=3, min_duration=2.0, max_duration=3.0,
                   n_trials=200, seed=21)
TINY_RUN = ["--student_channels=16", "--student_attention_channels=8", "--emb_dim=16",
            "--batch_size=8", "--num_workers=0", "--seg_dur=2.0", "--number_of_epochs=2",
            "--dev_max_pairs=2000", "--noprogressbar"]


def parse_args(argv=None):
    """Command line.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (round-robin)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model and round")
    parser.add_argument("--configs", nargs="*", default=None, help="subset of configurations")
    parser.add_argument("--quick", action="store_true", help="fewer configurations, 1 round, 2 steps")
    parser.add_argument("--output", default=None, help="also write the markdown report here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tasks", default="steps", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------
# Worker side: runs in a process started with the configuration's environment.
# --------------------------------------------------------------------------


def library_info(torch):
    """What the libraries say about their code paths (one verbose call each).

    Arguments
    ---------
    torch : module
        The imported torch.

    Returns
    -------
    dict
        ``aten`` capability; oneDNN and MKL verbose lines are printed on
        stdout (C level) and picked up by the parent.
    """
    info = {"aten": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_enabled": torch.backends.mkldnn.enabled}
    # Large enough for torch to hand the convolution to oneDNN.
    x = torch.randn(4, 32, 300)
    conv = torch.nn.Conv1d(32, 32, 3)
    sys.stdout.flush()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        conv(x)
    with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
        torch.randn(64, 64) @ torch.randn(64, 64)
    return info


def state_digest(state):
    """SHA-256 of a state dict's tensors (names, dtypes, bytes).

    Arguments
    ---------
    state : dict
        Name -> tensor.

    Returns
    -------
    str
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def time_steps(torch, n_steps, work):
    """Median seconds per training step of the demo's student and teacher.

    Arguments
    ---------
    torch : module
        The imported torch.
    n_steps : int
        Timed steps after one warm-up step.
    work : Path
        Where the final weights are saved (``steps_<model>.pt``).

    Returns
    -------
    dict
        ``{model: {"median_s", "times_s", "digest"}}``.
    """
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    from speechbrain_imlkd.models import build_classifier, build_ecapa, features_pipeline

    out = {}
    for name, (channels, attention, lin) in MODELS.items():
        torch.manual_seed(0)
        fbank, norm = features_pipeline(80, SAMPLE_RATE)
        model = build_ecapa(channels, lin_neurons=lin, attention_channels=attention)
        classifier = build_classifier(N_SPEAKERS, lin_neurons=lin)
        params = list(model.parameters()) + list(classifier.parameters())
        opt = torch.optim.Adam(params, lr=LR)
        loss_fn = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
        gen = torch.Generator().manual_seed(1)
        wavs = 0.1 * torch.randn(BATCH, int(SECONDS * SAMPLE_RATE), generator=gen)
        lens = torch.ones(BATCH)
        labels = (torch.arange(BATCH) % N_SPEAKERS).unsqueeze(1)
        times = []
        for step in range(n_steps + 1):
            # CPU time of this (one-thread) process: waiting for a core on
            # a shared machine does not count.
            t0 = time.process_time()
            feats = norm(fbank(wavs), lens)
            loss = loss_fn(classifier(model(feats, lens)), labels, lens)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step > 0:
                times.append(time.process_time() - t0)
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        torch.save(state, work / f"steps_{name}.pt")
        out[name] = {"median_s": statistics.median(times), "times_s": times,
                     "digest": state_digest(state)}
    return out


def corpus_digest(work):
    """Generates the small check corpus and hashes every file it wrote.

    Arguments
    ---------
    work : Path
        Scratch folder.

    Returns
    -------
    dict
        ``digest`` of all wav bytes and the trial list, ``n_files``.
    """
    from speechbrain_imlkd.data.synthetic import generate_corpus

    root = work / "corpus_check"
    generate_corpus(root, **CORPUS_CHECK)
    files = sorted(root.glob("wav/*/*/*.wav")) + [root / "veri_test2.txt"]
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return {"digest": h.hexdigest(), "n_files": len(files)}


def tiny_run(torch, work, corpus):
    """``train_kd.py scratch_ecapa.yaml`` at tiny size on the shared corpus.

    Arguments
    ---------
    torch : module
        The imported torch.
    work : Path
        Output root.
    corpus : str
        The corpus root (generated once by the parent).

    Returns
    -------
    dict
        ``eer``, ``digest`` of the exported embedding model, its path.
    """
    sys.path.insert(0, str(RECIPE))
    import train_kd

    res = train_kd.main([str(RECIPE / "hparams" / "scratch_ecapa.yaml"), f"--data_folder={corpus}",
                         f"--output_root={work / 'tiny'}", "--device=cpu", *TINY_RUN])
    folder = work / "tiny" / "scratch" / "seed1986"
    state = torch.load(folder / "exported" / "embedding_model.ckpt", map_location="cpu")
    return {"eer": res["trials"]["veri_test2"]["eer"], "digest": state_digest(state),
            "scores": str(folder / "eval" / "scores_veri_test2.txt")}


def worker(args):
    """Runs the requested tasks in this process's configuration.

    Arguments
    ---------
    args : argparse.Namespace
        ``--worker`` (configuration name), ``--work``, ``--tasks``,
        ``--steps``.
    """
    import torch

    if os.environ.get("IMLKD_BENCH_MKLDNN") == "0":
        torch.backends.mkldnn.enabled = False
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks.split(",")
    result = {"config": args.worker, "threads": torch.get_num_threads()}
    if "info" in tasks:
        result["info"] = library_info(torch)
    if "steps" in tasks:
        result["steps"] = time_steps(torch, args.steps, work)
    if "corpus" in tasks:
        result["corpus"] = corpus_digest(work)
    tiny = [t for t in tasks if t.startswith("tiny=")]
    if tiny:
        result["tiny"] = tiny_run(torch, work, tiny[0].split("=", 1)[1])
    (work / "result.json").write_text(json.dumps(result))


# --------------------------------------------------------------------------
# Parent side.
# --------------------------------------------------------------------------


def run_config(name, env_extra, work, tasks, steps):
    """Starts one worker process with the configuration's environment.

    Arguments
    ---------
    name : str
        Configuration name.
    env_extra : dict
        Environment variables of the configuration.
    work : Path
        The worker's scratch folder.
    tasks : str
        Comma-separated tasks.
    steps : int
        Timed steps.

    Returns
    -------
    dict
        The worker's result plus ``stdout`` (verbose lines).
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for key in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE", "IMLKD_BENCH_MKLDNN"):
        env.pop(key, None)
    env.update(env_extra)
    cmd = [sys.executable, __file__, "--worker", name, "--work", str(work), "--tasks", tasks,
           "--steps", str(steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"configuration {name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads((work / "result.json").read_text())
    result["stdout"] = proc.stdout
    return result


def max_difference(path_a, path_b):
    """Largest absolute weight difference, relative to the largest weight.

    Arguments
    ---------
    path_a, path_b : str or Path
        Saved state dicts.

    Returns
    -------
    float
    """
    import torch

    a, b = torch.load(path_a), torch.load(path_b)
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    scale = max(float(a[k].double().abs().max()) for k in a if a[k].is_floating_point())
    return diff / scale


def score_difference(path_a, path_b):
    """Largest absolute difference between two scores files of the same trials.

    Arguments
    ---------
    path_a, path_b : str or Path
        ``<label> <enrol> <test> <score>`` lines.

    Returns
    -------
    float

    Example
    -------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a").write_text("1 e t 0.5\\n0 e u 0.1\\n")
    >>> _ = (d / "b").write_text("1 e t 0.25\\n0 e u 0.1\\n")
    >>> score_difference(d / "a", d / "b")
    0.25
    """
    def read(path):
        return {tuple(line.split()[:3]): float(line.split()[3])
                for line in Path(path).read_text().splitlines() if line.strip()}

    a, b = read(path_a), read(path_b)
    if a.keys() != b.keys():
        raise ValueError(f"{path_a} and {path_b} score different trials")
    return max(abs(a[k] - b[k]) for k in a)


def isa_lines(stdout):
    """The code paths oneDNN and MKL report in their verbose output.

    Arguments
    ---------
    stdout : str
        A worker's standard output.

    Returns
    -------
    str

    Example
    -------
    >>> isa_lines("onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training\\n"
    ...           "MKL_VERBOSE oneMKL 2024.0 for Intel(R) 64 architecture Intel(R) Advanced "
    ...           "Vector Extensions 2 (Intel(R) AVX2) enabled processors, Lnx\\n"
    ...           "MKL_VERBOSE SGEMM(N,N) 1us CNR:AVX2 Dyn:1\\n")
    'oneDNN conv: jit:avx2; MKL: AVX2, CNR:AVX2'
    """
    m = re.search(r"convolution,([^,]+),", stdout)
    parts = [f"oneDNN conv: {m.group(1) if m else 'not used'}"]
    isa = re.search(r"MKL_VERBOSE [^\n]*?\(Intel\(R\) ([^)]+)\)", stdout)
    cnr = re.search(r"CNR:(\S+)", stdout)
    if isa or cnr:
        parts.append(f"MKL: {isa.group(1) if isa else '?'}, CNR:{cnr.group(1) if cnr else '?'}")
    return "; ".join(parts)


def report(results, configs, args, info):
    """Markdown report.

    Arguments
    ---------
    results : dict
        ``{config: [round results]}``.
    configs : list of str
        Configurations in display order.
    args : argparse.Namespace
        The parent's arguments.
    info : dict
        Machine and load.

    Returns
    -------
    str
    """
    base = results["baseline"]
    base_med = {m: statistics.median([r["steps"][m]["median_s"] for r in base]) for m in MODELS}
    cmd = "python benchmarks/bench_numerics.py " + " ".join(
        shlex.quote(a) for a in info["argv"])
    lines = [
        "## CPU-independent numerics: cost and effect",
        "",
        "Command (repository root): `" + cmd.strip() + "`",
        "",
        f"Machine: {info['machine']}; torch {info['torch']}, numpy {info['numpy']}; "
        f"load average {info['load'][0]:.1f} at start, {info['load'][1]:.1f} at end; "
        f"{args.rounds} rounds round-robin, {args.steps} timed steps per model and round "
        f"(after one warm-up), 1 thread unless stated; total {info['seconds']:.0f} s.",
        "",
        "Step times are CPU seconds of the one-thread worker (``time.process_time``), so "
        "that waiting for a core on the shared machine does not count (threads2: both "
        "threads' CPU time). Step: batch of 32 x 3 s, Fbank + mean norm + ECAPA-TDNN + AAM + backward + Adam. "
        "'bitwise' compares the weights after the timed steps, the corpus bytes and the "
        "tiny run's exported weights with the baseline's; 'max diff' is the largest "
        "weight difference after the steps relative to the largest weight. The tiny run "
        "(8 training speakers, 2 epochs, 200 trials) is near chance level: its EER only "
        "shows whether the decisions move, its scores by how much (cosine scores in [-1, 1]).",
        "",
        "| configuration | environment | libraries report | student step (s) | vs base | "
        "teacher step (s) | vs base | steps bitwise | max diff | corpus bitwise | "
        "tiny run bitwise | tiny run max score diff | tiny run EER (%) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|---|---:|---:|",
    ]
    first = {c: results[c][0] for c in configs}
    for c in configs:
        env = ", ".join(f"`{k}={v}`" for k, v in CONFIGS[c].items()) or "(none)"
        cells = [c, env, isa_lines(first[c].get("stdout", "")) + f"; ATen: {first[c]['info']['aten']}"]
        steps_bitwise = []
        for m in MODELS:
            med = statistics.median([r["steps"][m]["median_s"] for r in results[c]])
            cells += [f"{med:.3f}", f"{med / base_med[m]:.2f}x"]
            steps_bitwise.append(first[c]["steps"][m]["digest"] == first["baseline"]["steps"][m]["digest"])
        cells.append("yes" if all(steps_bitwise) else "no")
        diffs = [max_difference(Path(first[c]["work"]) / f"steps_{m}.pt",
                                Path(first["baseline"]["work"]) / f"steps_{m}.pt") for m in MODELS]
        cells.append(f"{max(diffs):.1e}")
        cells.append("yes" if first[c]["corpus"]["digest"] == first["baseline"]["corpus"]["digest"] else "no")
        tiny = first[c]["tiny"]
        cells.append("yes" if tiny["digest"] == first["baseline"]["tiny"]["digest"] else "no")
        cells.append(f"{score_difference(tiny['scores'], first['baseline']['tiny']['scores']):.1e}")
        cells.append(f"{100 * tiny['eer']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Repeat of the baseline in a second process (same-machine determinism): "
              + ("identical" if info["repeat_identical"] else "DIFFERENT") + " (steps, corpus, tiny run).", ""]
    return "\n".join(lines)


def main(argv=None):
    """Runs the benchmark (parent) or one configuration (worker).

    Arguments
    ---------
    argv : list of str, optional
        Command line.
    """
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.rounds, args.steps = 1, 2
    configs = args.configs or (QUICK_CONFIGS if args.quick else list(CONFIGS))
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise ValueError(f"unknown configurations {sorted(unknown)}; known: {list(CONFIGS)}")
    if "baseline" not in configs:
        configs = ["baseline"] + configs
    import numpy
    import torch

    from speechbrain_imlkd.data.synthetic import generate_corpus

    start = time.time()
    info = {"argv": sys.argv[1:] if argv is None else argv, "load": [os.getloadavg()[0], None],
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"ATen capability {torch.backends.cpu.get_cpu_capability()}",
            "torch": torch.__version__, "numpy": numpy.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "tiny_corpus"
        generate_corpus(corpus, **TINY_CORPUS)
        results = {c: [] for c in configs}
        for r in range(args.rounds):
            for c in configs:
                work = tmp / f"{c}_round{r}"
                tasks = "info,steps,corpus,tiny=" + str(corpus) if r == 0 else "steps"
                res = run_config(c, CONFIGS[c], work, tasks, args.steps)
                res["work"] = str(work)
                results[c].append(res)
                print(f"round {r} {c}: " + ", ".join(
                    f"{m} {res['steps'][m]['median_s']:.3f} s" for m in MODELS), flush=True)
        repeat = run_config("baseline", {}, tmp / "baseline_repeat",
                            "steps,corpus,tiny=" + str(corpus), args.steps)
        b0 = results["baseline"][0]
        info["repeat_identical"] = (
            all(repeat["steps"][m]["digest"] == b0["steps"][m]["digest"] for m in MODELS)
            and repeat["corpus"]["digest"] == b0["corpus"]["digest"]
            and repeat["tiny"]["digest"] == b0["tiny"]["digest"]
        )
        info["load"][1] = os.getloadavg()[0]
        info["seconds"] = time.time() - start
        text = report(results, configs, args, info)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
