"""Benchmark: seconds per training step of every KD method on the same batch.

Builds a small set of real-format files in a temporary folder (``B``
sine-mixture 16 kHz wavs of ``seg_dur`` seconds written with soundfile, a
``train.csv`` / ``dev.csv`` in the recipe's ``ID,duration,wav,start,stop,
spk_id`` layout, and a random-weight ECAPA-TDNN teacher exported in the hub
layout with :func:`speechbrain_imlkd.export.export_model`), then for every
method (``scratch``, ``kd``, ``emb_kd``, ``mlkd``, ``imlkd`` with
``ig_mode: online`` and with ``ig_mode: cached``, ``attr_kd``) does what
``recipes/VoxCeleb1/imlkd/train_kd.py`` does up to ``fit``:

* loads ``recipes/VoxCeleb1/imlkd/hparams/<method>_ecapa.yaml`` with
  :func:`speechbrain_imlkd.hparams_utils.load_recipe_hparams` and overrides
  pointing at the temporary folder,
* builds the datasets (:func:`speechbrain_imlkd.data.dataset.train_dev_datasets`)
  and the teacher (:func:`speechbrain_imlkd.recipe_utils.prepare_teacher`),
* for the cached mode, runs :func:`speechbrain_imlkd.ig_cache.prepare_ig_cache`
  (the one-off precomputation, timed separately),
* constructs :class:`speechbrain_imlkd.brain.KDBrain`, calls
  ``on_fit_start`` (optimizer), ``on_stage_start(TRAIN)`` and
  ``modules.train()`` as ``Brain.fit`` does, and takes ONE batch of ``B``
  chunks from ``brain.make_dataloader(..., shuffle=False)`` (checked to be
  identical across methods).

``brain.fit_batch(batch)`` (SpeechBrain's: forward, loss, backward,
optimizer step) is then timed round-robin over the methods (warm-up rounds
first), so that load drift on a shared machine hits every method alike. The
report gives the median seconds per step, its ratio to ``kd``'s median of
the same run, and a breakdown of the median step from light timers
(``time.perf_counter`` around the student's clean forward, the teacher's
embedding calls, the IMLKD saliency source, the student's segment passes
and the optimizer step; backward is the rest of the step).

It also reports IG segments per second of the benchmark's teacher on 2 s
segments (``speaker_logit`` target) for each quadrature rule and step count,
and the one-off precomputation's segments per second.

Prints a markdown snippet; ``--output`` also writes it with the command.

Example
-------
``python benchmarks/bench_kd_step.py --output benchmarks/results_kd_step.md``

``python benchmarks/bench_kd_step.py --quick`` (a smaller run, under a minute)
"""

import argparse
import csv
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from speechbrain_imlkd.attribution import integrated_gradients, speaker_logit_target
from speechbrain_imlkd.brain import KDBrain
from speechbrain_imlkd.data.dataset import TRAIN_OUTPUT_KEYS, train_dev_datasets
from speechbrain_imlkd.export import export_model
from speechbrain_imlkd.hparams_utils import load_recipe_hparams
from speechbrain_imlkd.ig_cache import prepare_ig_cache
from speechbrain_imlkd.models import build_classifier, build_ecapa, count_parameters
from speechbrain_imlkd.recipe_utils import prepare_teacher

SR = 16000
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb1" / "imlkd"
#: (label, YAML stem, ig_mode) of every timed configuration.
CONFIGS = [
    ("scratch", "scratch", None),
    ("kd", "kd", None),
    ("emb_kd", "emb_kd", None),
    ("mlkd", "mlkd", None),
    ("imlkd (online IG)", "imlkd", "online"),
    ("imlkd (cached IG)", "imlkd", "cached"),
    ("attr_kd (online IG)", "attr_kd", "online"),
]
ONLINE = "imlkd (online IG)"
ATTR = "attr_kd (online IG)"
#: Configurations that run IG at every step: timed in the last rounds only.
PER_STEP_IG = (ONLINE, ATTR)
CACHED = "imlkd (cached IG)"
TARGET_RATIO = 1.3
TITLE = "Seconds per KD training step (benchmarks/bench_kd_step.py)"
IG_METHODS = ("riemann_right", "trapezoid", "gauss_legendre")
IG_SEGMENT_FRAMES = 200  # 2 s at 100 frames/s
#: Sizes of a full run and of ``--quick`` (explicit options win).
FULL = dict(batch_size=16, teacher_channels=512, student_channels=128, repeats=5,
            ig_segments=4, ig_steps=[8, 16, 32])
QUICK = dict(batch_size=4, teacher_channels=128, student_channels=64, repeats=3,
             ig_segments=2, ig_steps=[8, 16])
TIMER_NAMES = ("clean_fwd", "teacher", "saliency", "student_seg", "opt_step")


def parse_args(argv=None):
    """Parses the command line.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
        The options; ``--quick`` replaces the sizes by a small run's.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=None, help="chunks per batch (B); 16")
    p.add_argument("--seg-dur", type=float, default=3.0, help="seconds per chunk")
    p.add_argument("--speakers", type=int, default=4)
    p.add_argument("--teacher-channels", type=int, default=None, help="teacher C; 512")
    p.add_argument("--student-channels", type=int, default=None, help="student C; 128")
    p.add_argument("--emb-dim", type=int, default=192, help="teacher and student embedding size")
    p.add_argument("--attention-channels", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds; 5")
    p.add_argument("--online-repeats", type=int, default=1,
                   help="timed steps of imlkd with online IG (the last rounds; no warm-up)")
    p.add_argument("--no-online", action="store_true", help="skip imlkd with online IG")
    p.add_argument("--ig-segments", type=int, default=None,
                   help="2 s segments per IG speed row; 4")
    p.add_argument("--ig-steps", type=int, nargs="*", default=None,
                   help="IG step counts of the speed table (none: skip the table)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="parent of the temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--quick", action="store_true",
                   help="small run: B=4, teacher C=128, student C=64, 3 rounds, IG 2 segments "
                   "at 8/16 steps (options given explicitly win)")
    p.add_argument("--output", default=None, help="markdown file to write")
    p.add_argument("--append", action="store_true", help="append to --output")
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--batch-size and --repeats must be >= 1, --warmup >= 0")
    args.speakers = min(args.speakers, args.batch_size)  # every speaker has a chunk
    if args.online_repeats > args.repeats:
        p.error("--online-repeats must not exceed --repeats")
    return args


# ---------------------------------------------------------------------- #
# Set-up
# ---------------------------------------------------------------------- #
def write_corpus(root, n_chunks, n_speakers, seconds, seed):
    """Writes sine-mixture wavs and the recipe's train/dev CSVs.

    Every speaker has its own fundamental frequency; each file is a mixture
    of its first harmonics with random amplitudes plus a little noise.

    Arguments
    ---------
    root : pathlib.Path
        Output folder (``wav/``, ``train.csv``, ``dev.csv``).
    n_chunks : int
        Training rows (one file each), speakers assigned round-robin.
    n_speakers : int
        Number of speakers.
    seconds : float
        Duration of every file (one whole training chunk).
    seed : int
        Random seed.

    Returns
    -------
    train_csv : pathlib.Path
    dev_csv : pathlib.Path
        One row per speaker (its first file).
    speakers : list of str
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    speakers = [f"id{k + 10001:05d}" for k in range(n_speakers)]
    rows = []
    for i in range(n_chunks):
        spk = speakers[i % n_speakers]
        f0 = 110.0 + 35.0 * (i % n_speakers)
        amps = rng.uniform(0.2, 1.0, size=6)
        wav = sum(a * np.sin(2 * np.pi * f0 * (h + 1) * t + rng.uniform(0, 6.3))
                  for h, a in enumerate(amps))
        wav = 0.05 * wav + 0.01 * rng.standard_normal(n)
        path = root / "wav" / spk / "bench" / f"{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wav.astype(np.float32), SR)
        rows.append([f"{spk}--bench--{i:05d}", seconds, str(path), 0, n, spk])
    header = ["ID", "duration", "wav", "start", "stop", "spk_id"]
    paths = []
    for name, body in (("train.csv", rows), ("dev.csv", rows[:n_speakers])):
        with open(root / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(body)
        paths.append(root / name)
    return paths[0], paths[1], speakers


def export_teacher(folder, speakers, args):
    """Exports a random-weight ECAPA-TDNN teacher with a speaker classifier.

    Arguments
    ---------
    folder : pathlib.Path
        The hub-layout folder to write.
    speakers : list of str
        The training speakers (the teacher's label encoder).
    args : argparse.Namespace
        Sizes.

    Returns
    -------
    int
        Parameters of the teacher's embedding model.
    """
    torch.manual_seed(args.seed)
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(speakers)
    model = build_ecapa(args.teacher_channels, lin_neurons=args.emb_dim,
                        attention_channels=args.attention_channels)
    export_model(folder, model, classifier=build_classifier(len(speakers), args.emb_dim),
                 label_encoder=encoder)
    return count_parameters(model)


def overrides_for(root, yaml_stem, ig_mode, args, n_speakers):
    """Recipe overrides pointing a method's YAML at the benchmark's folder.

    Arguments
    ---------
    root : pathlib.Path
        The benchmark's folder.
    yaml_stem : str
        The method (``kd`` for ``hparams/kd_ecapa.yaml``).
    ig_mode : str or None
        ``online`` / ``cached`` for ``imlkd``.
    args : argparse.Namespace
        Sizes.
    n_speakers : int
        Training speakers.

    Returns
    -------
    dict
    """
    over = {
        "data_folder": str(root),
        "output_root": str(root / "out" / f"{yaml_stem}_{ig_mode or 'plain'}"),
        "skip_prep": True,
        "train_csv": str(root / "train.csv"),
        "dev_csv": str(root / "dev.csv"),
        "label_encoder_file": str(root / "label_encoder.txt"),
        "n_train_speakers": n_speakers,
        "teacher_source": str(root / "teacher"),
        "teacher_savedir": str(root / "out" / f"teacher_{yaml_stem}_{ig_mode or 'plain'}"),
        "seg_dur": args.seg_dur,
        "student_channels": args.student_channels,
        "student_attention_channels": args.attention_channels,
        "emb_dim": args.emb_dim,
        "teacher_emb_dim": args.emb_dim,
        "durations": [1.0, 2.0, 3.0],
        "temperatures": [1.0, 2.0, 3.0, 4.0],
        "batch_size": args.batch_size,
        "num_workers": 0,
        "evaluate_after_training": False,
    }
    if ig_mode is not None:
        over["ig_mode"] = ig_mode
    return over


class Timers:
    """Accumulates wall time of wrapped callables, per name, for one step.

    Example
    -------
    >>> t = Timers()
    >>> f = t.wrap(lambda x: x + 1, "inc")
    >>> f(1), sorted(t.take())
    (2, ['inc'])
    """

    def __init__(self):
        self.acc = {}

    def wrap(self, fn, name):
        """Returns ``fn`` timed under ``name``.

        Arguments
        ---------
        fn : callable
            The callable.
        name : str
            Its timer.

        Returns
        -------
        callable
        """

        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.acc[name] = self.acc.get(name, 0.0) + time.perf_counter() - start

        return timed

    def take(self):
        """Returns and resets the accumulated times.

        Returns
        -------
        dict
        """
        out, self.acc = self.acc, {}
        return out


def setup_method(label, yaml_stem, ig_mode, root, args, n_speakers, log):
    """Loads a method's recipe, teacher, (cache) and Brain; returns its batch.

    Arguments
    ---------
    label : str
        The configuration's name.
    yaml_stem : str
        The method's YAML stem.
    ig_mode : str or None
        ``imlkd``'s IG mode.
    root : pathlib.Path
        The benchmark's folder.
    args : argparse.Namespace
        Options.
    n_speakers : int
        Training speakers.
    log : callable
        Progress printer.

    Returns
    -------
    dict
        ``brain``, ``batch``, ``timers``, ``teacher`` and, for the cached
        mode, ``precompute_s`` and ``precompute_segments``.
    """
    hp_file = RECIPE / "hparams" / f"{yaml_stem}_ecapa.yaml"
    overrides = overrides_for(root, yaml_stem, ig_mode, args, n_speakers)
    hparams = load_recipe_hparams(hp_file, overrides)
    train_ds, dev_ds, label_encoder = train_dev_datasets(
        hparams["train_csv"], hparams["dev_csv"], hparams["label_encoder_file"],
        sample_rate=hparams["sample_rate"],
    )
    sb.dataio.dataset.set_output_keys([train_ds, dev_ds], TRAIN_OUTPUT_KEYS + ["wav"])
    run_opts = {"device": "cpu"}
    out = {}
    teacher = None
    if hparams["distiller"].uses_teacher:
        teacher = prepare_teacher(hparams, run_opts, label_encoder, train_ds)
    if teacher is not None and ig_mode == "cached":
        start = time.perf_counter()
        prepare_ig_cache(hparams, teacher)
        out["precompute_s"] = time.perf_counter() - start
        out["precompute_segments"] = len(train_ds) * sum(hparams["ig_plan"].counts)
        log(f"  IG cache precomputed: {out['precompute_segments']} segments in "
            f"{out['precompute_s']:.1f} s")
    brain = KDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=None,
        teacher=teacher,
    )
    # What Brain.fit does before its first fit_batch.
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.modules.train()
    brain.zero_grad()
    loader = brain.make_dataloader(train_ds, stage=sb.Stage.TRAIN,
                                   batch_size=args.batch_size, shuffle=False)
    batch = next(iter(loader))
    # Light instrumentation: instance attributes shadow the methods.
    timers = Timers()
    brain.compute_forward = timers.wrap(brain.compute_forward, "clean_fwd")
    brain.student = timers.wrap(brain.student, "student_seg")
    brain.optimizers_step = timers.wrap(brain.optimizers_step, "opt_step")
    if teacher is not None:
        teacher.embed = timers.wrap(teacher.embed, "teacher")
    distiller = hparams["distiller"]
    if hasattr(distiller, "saliency_source"):
        distiller.saliency_source = timers.wrap(distiller.saliency_source, "saliency")
    if "ig_settings" in hparams:
        ig = hparams["ig_settings"]
        out["ig_desc"] = (
            f"IG {ig.method}, {ig.steps} steps, internal batch {ig.internal_batch_size}, "
            f"target {ig.target}; cache storage `{hparams['ig_cache_storage']}`, "
            f"teacher logits stored: {hparams['ig_cache_store_logits']}"
        )
    out.update(brain=brain, batch=batch, timers=timers, teacher=teacher,
               params=count_parameters(hparams["embedding_model"]))
    return out


def median_step(steps):
    """The timed step closest to the median, with its timers.

    Arguments
    ---------
    steps : list of tuple
        ``(seconds, timers)`` of the timed steps of one method.

    Returns
    -------
    seconds : float
        The median step time (of all steps).
    parts : dict
        The timers of the step closest to it.

    Example
    -------
    >>> median_step([(1.0, {"a": 1}), (3.0, {"a": 3}), (2.0, {"a": 2})])
    (2.0, {'a': 2})
    """
    m = statistics.median(s for s, _ in steps)
    return m, min(steps, key=lambda sp: abs(sp[0] - m))[1]


def same_batch(a, b):
    """Whether two PaddedBatches hold the same IDs, audio and labels.

    Arguments
    ---------
    a, b : speechbrain.dataio.batch.PaddedBatch
        Batches.

    Returns
    -------
    bool
    """
    return (a.id == b.id and torch.equal(a.sig.data, b.sig.data)
            and torch.equal(a.spk_id_encoded.data, b.spk_id_encoded.data))


# ---------------------------------------------------------------------- #
# Measures
# ---------------------------------------------------------------------- #
def time_steps(runs, args, log):
    """Times ``fit_batch`` round-robin over the configurations.

    Arguments
    ---------
    runs : dict
        Label -> :func:`setup_method` output.
    args : argparse.Namespace
        ``warmup``, ``repeats``, ``online_repeats``.
    log : callable
        Progress printer.

    Returns
    -------
    dict
        Label -> list of ``(seconds, timers)`` of the timed steps.
    """
    times = {label: [] for label in runs}
    n_rounds = args.warmup + args.repeats
    for r in range(n_rounds):
        timed = r >= args.warmup
        for label, run in runs.items():
            if label in PER_STEP_IG and r < n_rounds - args.online_repeats:
                continue  # the online step costs ~100 kd steps: last rounds only
            brain = run["brain"]
            brain.step += 1
            run["timers"].take()
            start = time.perf_counter()
            loss = brain.fit_batch(run["batch"])
            seconds = time.perf_counter() - start
            parts = run["timers"].take()
            parts["total"] = seconds
            if not torch.isfinite(loss):
                raise RuntimeError(f"{label}: non-finite loss {float(loss)}")
            if timed or label in PER_STEP_IG:
                times[label].append((seconds, parts))
            log(f"  round {r} {'timed' if timed else 'warm-up'}: {label} "
                f"{seconds:.3f} s (loss {float(loss):.3f})")
    return times


def ig_speed(teacher, batch, args, log):
    """IG segments per second of the teacher on 2 s segments, per rule and steps.

    Arguments
    ---------
    teacher : speechbrain_imlkd.teacher.Teacher
        The benchmark's teacher (training speakers set).
    batch : PaddedBatch
        The benchmark's batch (its first ``--ig-segments`` chunks, repeated
        when fewer, cropped to 2 s of features).
    args : argparse.Namespace
        ``ig_segments``, ``ig_steps``.
    log : callable
        Progress printer.

    Returns
    -------
    list of dict
        ``method``, ``steps``, ``seconds``, ``seg_per_s``.
    """
    wavs, lens = batch.sig
    labels = batch.spk_id_encoded.data.squeeze(-1)
    idx = torch.arange(args.ig_segments) % wavs.shape[0]
    with torch.no_grad():
        feats = teacher.features(wavs[idx], lens[idx])[:, :IG_SEGMENT_FRAMES]
    target = speaker_logit_target(lambda x: teacher.embed(x, None), teacher.logits, labels[idx])
    integrated_gradients(target, feats, steps=2)  # warm-up
    rows = []
    for method in IG_METHODS:
        for steps in args.ig_steps:
            start = time.perf_counter()
            integrated_gradients(target, feats, steps=steps, method=method)
            seconds = time.perf_counter() - start
            rows.append({"method": method, "steps": steps, "seconds": seconds,
                         "seg_per_s": feats.shape[0] / seconds})
            log(f"  IG {method} {steps}: {rows[-1]['seg_per_s']:.2f} segments/s")
    return rows


def cpu_name():
    """The CPU model from ``/proc/cpuinfo`` (or ``platform.processor()``).

    Returns
    -------
    str
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def markdown(args, info, times, ig_rows, command):
    """The results as a markdown snippet.

    Arguments
    ---------
    args : argparse.Namespace
        Options.
    info : dict
        Sizes, load averages, precompute time.
    times : dict
        From :func:`time_steps`.
    ig_rows : list of dict
        From :func:`ig_speed`.
    command : str
        The command line.

    Returns
    -------
    str
    """
    med = {k: statistics.median(s for s, _ in v) for k, v in times.items() if v}
    kd = med["kd"]
    lines = [
        f"## Seconds per training step, teacher C={args.teacher_channels} / "
        f"student C={args.student_channels}, B={args.batch_size}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores (shared with other jobs), no GPU; "
        f"Python {platform.python_version()}, torch {torch.__version__}, speechbrain "
        f"{sb.__version__}; torch threads {torch.get_num_threads()}. Load average "
        f"(1 min) {info['load'][0]:.2f} before, {info['load'][1]:.2f} after.",
        "",
        f"Sizes: teacher ECAPA-TDNN C={args.teacher_channels} ({info['teacher_params']:,} "
        f"parameters, random weights, label-mode logits over {args.speakers} speakers), "
        f"student C={args.student_channels} ({info['student_params']:,} parameters), "
        f"embeddings {args.emb_dim}; batch of B={args.batch_size} chunks of "
        f"{args.seg_dur:g} s (sine mixtures, 16 kHz), durations 1/2/3 s, temperatures "
        f"1-4; imlkd with the YAML's IG defaults ({info.get('ig_desc', 'not run')}).",
        "",
        f"`brain.fit_batch(batch)` on the same batch; {args.warmup} warm-up round(s) then "
        f"{args.repeats} timed rounds, methods interleaved round-robin; online IG only in "
        f"the last {args.online_repeats} round(s) (no warm-up). Breakdown of the median "
        "step (seconds): clean fwd = features + student on the chunk; teacher = all "
        "teacher embedding calls (inside the saliency source for online IG); saliency = "
        "IMLKD saliency source (online: IG; cached: cache read + integrated inputs); "
        "student seg = student forward on segments / integrated inputs; backward + rest = "
        "the step minus the timed parts (backward, losses, batch transfer).",
        "",
        "| method | median s/step | min | max | n | ratio to kd | clean fwd | teacher | "
        "saliency | student seg | backward + rest | opt step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, steps in times.items():
        if not steps:
            continue
        secs = [s for s, _ in steps]
        m, parts = median_step(steps)  # breakdown: the step closest to the median
        cols = [parts.get(n) for n in TIMER_NAMES]
        backward = info["backward"][label]
        fmt = lambda v: "-" if not v else f"{v:.3f}"  # noqa: E731
        lines.append(
            f"| {label} | {m:.3f} | {min(secs):.3f} | {max(secs):.3f} | {len(secs)} | "
            f"{m / kd:.2f}x | {fmt(cols[0])} | {fmt(cols[1])} | {fmt(cols[2])} | "
            f"{fmt(cols[3])} | {fmt(backward)} | {fmt(cols[4])} |"
        )
    if CACHED in med:
        ratio = med[CACHED] / kd
        verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
        lines += ["", f"**Target** (cached imlkd <= {TARGET_RATIO}x kd, same batch, one run): "
                  f"{ratio:.2f}x, **{verdict}**."]
        if ratio > TARGET_RATIO:
            lines += ["", info["profile_note"]]
    if ONLINE in med:
        lines += ["", f"Online IG imlkd: {med[ONLINE] / kd:.1f}x kd"
                  + (f", {med[ONLINE] / med[CACHED]:.1f}x cached imlkd." if CACHED in med else ".")]
    if ATTR in med:
        lines += ["", f"Attribution alignment (attr_kd, online IG + double backward): "
                  f"{med[ATTR] / kd:.1f}x kd"
                  + (f", {med[ATTR] / med[ONLINE]:.2f}x online imlkd." if ONLINE in med else ".")]
    if "precompute_s" in info:
        seg = info["precompute_segments"]
        lines += [
            "",
            f"One-off precomputation (`prepare_ig_cache`, {args.batch_size} chunks x "
            f"{seg // args.batch_size} planned segments = {seg} segments, IG + teacher "
            f"pass on the integrated inputs + shard write): {info['precompute_s']:.1f} s, "
            f"**{seg / info['precompute_s']:.2f} segments/s**.",
        ]
    if ig_rows:
        lines += [
            "",
            f"IG speed of this teacher (C={args.teacher_channels}), {args.ig_segments} x 2 s "
            "segments (200 frames) of the batch, speaker-logit target, internal batch 64, "
            "one timed run each:",
            "",
            "| method | steps | seconds | IG segments/s |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {r['method']} | {r['steps']} | {r['seconds']:.2f} | {r['seg_per_s']:.2f} |"
                  for r in ig_rows]
    return "\n".join(lines) + "\n"


def profile_note(times):
    """Where the cached imlkd step spends its time relative to kd's.

    Arguments
    ---------
    times : dict
        From :func:`time_steps`.

    Returns
    -------
    str
    """
    kd_s, kd_p = median_step(times["kd"])
    c_s, c_p = median_step(times[CACHED])
    kd_fwd, kd_teacher = kd_p.get("clean_fwd", 0.0), kd_p.get("teacher", 0.0)
    c_fwd, c_read, c_seg = (c_p.get(n, 0.0) for n in ("clean_fwd", "saliency", "student_seg"))
    return (
        f"Profile (median steps): kd {kd_s:.3f} s = clean fwd {kd_fwd:.3f} + teacher "
        f"{kd_teacher:.3f} + rest {kd_s - kd_fwd - kd_teacher:.3f}; cached imlkd {c_s:.3f} s "
        f"= clean fwd {c_fwd:.3f} + cache read {c_read:.3f} + student segment passes "
        f"{c_seg:.3f} + rest (losses, backward of 4 student passes, optimizer) "
        f"{c_s - c_fwd - c_read - c_seg:.3f}."
    )


def main(argv=None):
    """Runs the benchmark and prints / writes the markdown snippet.

    Arguments
    ---------
    argv : list of str, optional
        Command line (default: ``sys.argv[1:]``).

    Returns
    -------
    str
        The markdown snippet.
    """
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/bench_kd_step.py " + shlex.join(given)
    info = {"load": [os.getloadavg()[0], None]}
    root = Path(tempfile.mkdtemp(prefix="bench_kd_step_", dir=args.workdir))
    try:
        _, _, speakers = write_corpus(root, args.batch_size, args.speakers, args.seg_dur, args.seed)
        info["teacher_params"] = export_teacher(root / "teacher", speakers, args)
        runs = {}
        for label, stem, ig_mode in CONFIGS:
            if label in PER_STEP_IG and args.no_online:
                continue
            log(f"set-up: {label}")
            runs[label] = setup_method(label, stem, ig_mode, root, args, len(speakers), log)
            if "ig_desc" in runs[label]:
                info["ig_desc"] = runs[label]["ig_desc"]
            if "precompute_s" in runs[label]:
                info["precompute_s"] = runs[label]["precompute_s"]
                info["precompute_segments"] = runs[label]["precompute_segments"]
        info["student_params"] = runs["kd"]["params"]
        first = next(iter(runs.values()))["batch"]
        for label, run in runs.items():
            if not same_batch(first, run["batch"]):
                raise RuntimeError(f"{label}: its dataloader gave another batch")
        times = time_steps(runs, args, log)
        info["backward"] = {}
        for label, steps in times.items():
            _, parts = median_step(steps)
            # fit_batch = forward + objectives + backward + optimizer step. The
            # objectives (teacher, saliency, student segments, losses) are timed
            # by their parts; the loss arithmetic itself is tiny.
            nested = parts.get("teacher", 0.0) if label in PER_STEP_IG else 0.0
            known = sum(parts.get(n, 0.0) for n in TIMER_NAMES) - nested
            info["backward"][label] = parts["total"] - known
        if CACHED in times:
            info["profile_note"] = profile_note(times)
        ig_rows = []
        if args.ig_steps:
            teacher = runs.get(CACHED, runs["kd"])["teacher"]
            ig_rows = ig_speed(teacher, first, args, log)
        info["load"][1] = os.getloadavg()[0]
        text = markdown(args, info, times, ig_rows, command)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"kept {root}")
    print(text)
    if args.output:
        with open(args.output, "a" if args.append else "w", encoding="utf-8") as f:
            if not args.append:
                f.write(f"# {TITLE}\n\n")
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
