"""Benchmark: size and precompute speed of the IG cache.

Three measures, printed as one markdown snippet (``--output`` also writes it
with the command):

1. Bytes per 3 s chunk of each storage (``full`` T x F, ``bands`` 8 bands,
   ``time``), with and without stored teacher logits, for the default
   segment plan (3 s + 2 x 2 s + 3 x 1 s = 1000 frames of 80 bins), a
   192-dim teacher embedding and 1,211 training speakers: the float16
   payload counted from the shapes, and the measured shard file size per
   chunk (a real cache of a few chunks; the teacher's width does not change
   sizes, so a narrow one is used for this part).
2. What the VoxCeleb1 dev set would need: chunks counted from the real
   duration list (``vox1_dev_duration.txt.gz``, 148,642 files) with the
   preparation's chunking (``floor(samples / (3 s * 16 kHz))`` per file),
   times the measured bytes per chunk, plus ``index.json``.
3. Precompute speed on this machine's CPU (``--threads`` intra-op threads):
   planned segments per second for each quadrature setting, for an
   ECAPA-TDNN teacher of width ``--channels`` (random weights: speed does
   not depend on them) on ``--chunks`` synthetic 3 s chunks. Everything the
   precomputation does is timed: reading audio, features, IG, the teacher
   pass on the integrated inputs, writing the shard.

Example
-------
``python benchmarks/bench_ig_cache.py --output benchmarks/results_ig_cache.md``
"""

import argparse
import gzip
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import speechbrain
import torch

from speechbrain_imlkd.ig_cache import IGSettings, SegmentPlan, precompute_ig_cache
from speechbrain_imlkd.models import build_ecapa, features_pipeline
from speechbrain_imlkd.teacher import Teacher

SR = 16000
CHUNK_SECONDS = 3.0
N_SPEAKERS = 1211  # VoxCeleb1 dev speakers (training speakers of the recipe)
EMB_DIM = 192
N_MELS = 80
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voxceleb1"
SETTINGS = [("gauss_legendre", 8), ("gauss_legendre", 16), ("trapezoid", 16), ("riemann_right", 32)]


def parse_args(argv=None):
    """Command line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, nargs="+", default=[512], help="teacher widths to time")
    p.add_argument("--chunks", type=int, default=2, help="3 s chunks per speed measure")
    p.add_argument("--size-chunks", type=int, default=16, help="chunks of the size measure")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    default = " ".join(f"{m}:{s}" for m, s in SETTINGS)
    p.add_argument("--settings", nargs="*", default=None,
                   help=f"method:steps pairs (default: {default})")
    p.add_argument("--durations-file", default=str(DATA / "vox1_dev_duration.txt.gz"))
    p.add_argument("--output", default=None, help="also write the snippet here")
    return p.parse_args(argv)


def make_teacher(channels, seed=0):
    """A random ECAPA teacher with centroid logits over N_SPEAKERS speakers."""
    torch.manual_seed(seed)
    attention = min(128, channels // 2)
    teacher = Teacher(*features_pipeline(N_MELS), build_ecapa(channels, EMB_DIM, N_MELS, attention))
    speakers = [f"id{k:05d}" for k in range(N_SPEAKERS)]
    cents = dict(zip(speakers, torch.randn(N_SPEAKERS, EMB_DIM)))
    teacher.set_training_speakers(speakers, mode="centroid", centroid_data=cents)
    return teacher, speakers


def write_chunks(folder, n, speakers):
    """``n`` synthetic 3 s chunks (noise plus a tone) and their train.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    samples = int(CHUNK_SECONDS * SR)
    rows = ["ID,duration,wav,start,stop,spk_id"]
    for k in range(n):
        t = np.arange(samples) / SR
        sig = 0.1 * np.sin(2 * np.pi * (120 + 40 * k) * t) + 0.03 * rng.standard_normal(samples)
        wav = folder / f"utt{k}.wav"
        sf.write(wav, sig.astype(np.float32), SR)
        spk = speakers[k % len(speakers)]
        rows.append(f"utt{k}_0_{samples},{CHUNK_SECONDS},{wav},0,{samples},{spk}")
    csv_path = folder / "train.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


def payload_bytes(plan, storage, store_logits, n_bands=8):
    """Float16 bytes per chunk counted from the stored shapes."""
    frames = sum(c * n for c, n in zip(plan.counts, plan.segment_frames))
    segments = sum(plan.counts)
    per_frame = {"full": N_MELS, "bands": n_bands, "time": 1}[storage]
    values = frames * per_frame + segments * EMB_DIM
    if store_logits:
        values += segments * N_SPEAKERS
    return 2 * values


def measure_sizes(work, n_chunks):
    """Measured shard bytes per chunk for every storage, with/without logits."""
    teacher, speakers = make_teacher(16)
    csv_path = write_chunks(work / "size_data", n_chunks, speakers)
    plan = SegmentPlan()
    rows = []
    for storage in ("full", "bands", "time"):
        for store_logits in (True, False):
            cache = work / f"size_{storage}_{store_logits}"
            precompute_ig_cache(
                teacher, csv_path, cache, plan, IGSettings(steps=2), storage=storage,
                n_bands=8, shard_size=n_chunks, batch_size=n_chunks, store_logits=store_logits,
            )
            shard = sum(p.stat().st_size for p in cache.glob("shard_*.pt"))
            rows.append({
                "storage": storage if storage != "bands" else "bands (8)",
                "logits": store_logits,
                "payload": payload_bytes(plan, storage, store_logits),
                "measured": shard / n_chunks,
            })
    return rows


def voxceleb_chunks(path):
    """Files, hours and 3 s chunks (and their IDs) of the VoxCeleb1 dev list."""
    seg = int(CHUNK_SECONDS * SR)
    n_files, seconds, ids = 0, 0.0, []
    with gzip.open(path, "rt") as f:
        for line in f:
            utt, dur = line.split()
            n = int(round(float(dur) * SR))
            n_files += 1
            seconds += float(dur)
            ids.extend(f"{utt}_{s}_{s + seg}" for s in range(0, n - seg + 1, seg))
    return n_files, seconds / 3600, ids


def index_bytes(ids, shard_size=256):
    """Size of the ``chunks`` map of index.json for these IDs."""
    return len(json.dumps({i: [k // shard_size, k % shard_size] for k, i in enumerate(ids)}))


def measure_speed(work, channels, n_chunks, settings):
    """Segments per second of precompute_ig_cache for each quadrature setting."""
    teacher, speakers = make_teacher(channels)
    csv_path = write_chunks(work / f"speed_data_{channels}", n_chunks, speakers)
    plan = SegmentPlan()
    out = []
    # Warm-up: first-call allocations and kernel selection are not timed.
    precompute_ig_cache(teacher, csv_path, work / f"warm_{channels}", SegmentPlan(durations=[1.0]),
                        IGSettings(steps=2), storage="time", batch_size=n_chunks)
    for method, steps in settings:
        cache = work / f"speed_{channels}_{method}_{steps}"
        t0 = time.perf_counter()
        report = precompute_ig_cache(
            teacher, csv_path, cache, plan, IGSettings(steps=steps, method=method),
            storage="bands", shard_size=n_chunks, batch_size=n_chunks,
        )
        seconds = time.perf_counter() - t0
        out.append({
            "channels": channels, "method": method, "steps": steps,
            "segments": report.segments, "seconds": seconds,
            "seg_per_s": report.segments / seconds,
            "chunk_per_s": n_chunks / seconds,
        })
        rate = report.segments / seconds
        print(f"C={channels} {method}:{steps}: {rate:.3f} segments/s", file=sys.stderr)
    return out


def human(n_bytes):
    """Bytes in GB (10^9) / MB / kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{n_bytes:.0f} B"


def main(argv=None):
    """Runs the benchmark and prints the snippet.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments.
    """
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = SETTINGS
    if args.settings:
        settings = [(s.split(":")[0], int(s.split(":")[1])) for s in args.settings]
    work = Path(tempfile.mkdtemp(prefix="bench_ig_cache_"))
    sizes = measure_sizes(work, args.size_chunks)
    n_files, hours, ids = voxceleb_chunks(args.durations_file)
    n_chunks = len(ids)
    idx = index_bytes(ids)
    speed = []
    for channels in args.channels:
        speed.extend(measure_speed(work, channels, args.chunks, settings))
    load = os.getloadavg()
    command = ["benchmarks/bench_ig_cache.py", *(argv if argv is not None else sys.argv[1:])]

    lines = [
        "# IG cache: size and precompute speed",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in command)}`",
        "",
        f"Environment: Python {platform.python_version()}, torch {torch.__version__}, "
        f"speechbrain {speechbrain.__version__}, {os.cpu_count()} CPU cores (shared; load "
        f"average {load[0]:.1f} at the end), {args.threads} torch thread(s), no GPU.",
        "",
        "## Bytes per 3 s chunk (default plan: 3 s + 2 x 2 s + 3 x 1 s = 6 segments, 1000 frames)",
        "",
        f"float16 throughout; embedding {EMB_DIM}-dim, logits over {N_SPEAKERS} training "
        "speakers. *Payload*: counted from the shapes; *measured*: shard file bytes per "
        f"chunk of a real cache of {args.size_chunks} chunks (torch.save overhead included).",
        "",
        "| storage | teacher logits stored | payload B/chunk | measured B/chunk |",
        "|---|---|---|---|",
    ]
    for r in sizes:
        logits = "yes" if r["logits"] else "no"
        lines.append(f"| {r['storage']} | {logits} | {r['payload']:,} | {r['measured']:,.0f} |")
    lines += [
        "",
        "## VoxCeleb1 dev set",
        "",
        f"`vox1_dev_duration.txt.gz`: {n_files:,} files, {hours:.1f} h, "
        f"**{n_chunks:,} chunks** of 3 s (`floor(samples / 48000)` per file, as "
        "`prepare_voxceleb1` cuts them; its 90/10 train/dev split by file keeps about "
        f"90% of them for training, ~{int(0.9 * n_chunks):,}). `index.json` for all of "
        f"them: {human(idx)}.",
        "",
        "| storage | teacher logits stored | whole dev set | 90% train split |",
        "|---|---|---|---|",
    ]
    for r in sizes:
        total = r["measured"] * n_chunks + idx
        logits = "yes" if r["logits"] else "no"
        lines.append(f"| {r['storage']} | {logits} | {human(total)} | {human(0.9 * total)} |")
    lines += [
        "",
        "## Precompute speed (CPU)",
        "",
        f"{args.chunks} chunks of 3 s per measure, default plan (6 segments per chunk), "
        "`bands` storage, random-weight ECAPA-TDNN teacher (lin_neurons 192, 1,211 "
        "centroid logits); wall-clock time of the whole `precompute_ig_cache` call "
        "(audio, features, IG, teacher pass on the integrated inputs, shard write). "
        "The last column extrapolates linearly to the dev set's chunks on this CPU. "
        "Every rule costs `steps` teacher forward+backward passes per segment, so "
        "rows with equal steps differ only by the noise of the shared CPU.",
        "",
        "| teacher C | method | steps | segments/s | chunks/s "
        "| dev set, hours on this CPU (extrapolated) |",
        "|---|---|---|---|---|---|",
    ]
    for r in speed:
        lines.append(
            f"| {r['channels']} | {r['method']} | {r['steps']} | {r['seg_per_s']:.3f} | "
            f"{r['chunk_per_s']:.3f} | {n_chunks / r['chunk_per_s'] / 3600:,.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
