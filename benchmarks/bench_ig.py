"""Completeness gap and speed of Integrated Gradients per quadrature rule.

Trains a small ECAPA-TDNN teacher with an AAM classifier on real filterbank
features of a small synthetic corpus (``speechbrain_imlkd.data.synthetic``),
then, on 2 s segments (200 frames) of utterances held out from training,
measures for each quadrature rule and step count:

* the completeness gap ``|sum IG - (F(x) - F(x'))| / |F(x) - F(x')|``
  (median and 90th percentile over segments) for the two targets of
  :mod:`speechbrain_imlkd.attribution` (true-speaker logit, cosine to the
  embedding of the whole utterance);
* IG segments per second on CPU.

It also times :func:`speechbrain_imlkd.attribution.integrated_gradients`
against ``captum.attr.IntegratedGradients`` on the same batch and checks
they agree.

Prints a markdown snippet; ``--output`` also writes it with the command.

Example
-------
``python benchmarks/bench_ig.py --output benchmarks/results_ig.md``
"""

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from captum.attr import IntegratedGradients
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.processing.features import InputNormalization

from speechbrain_imlkd.attribution import (
    METHODS,
    completeness_gap,
    embedding_cosine_target,
    integrated_gradients,
    speaker_logit_target,
)
from speechbrain_imlkd.data.synthetic import generate_corpus

AAM_SCALE = 30.0


def parse_args(argv=None):
    """Command line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=None, help="corpus folder (default: a temp dir)")
    p.add_argument("--speakers", type=int, default=16)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--lin-neurons", type=int, default=96)
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--segments", type=int, default=24, help="segments per gap measurement")
    p.add_argument("--segment-frames", type=int, default=200)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    p.add_argument("--internal-batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per row (best kept)")
    p.add_argument("--output", default=None, help="markdown file to write")
    p.add_argument("--append", action="store_true", help="append to --output")
    return p.parse_args(argv)


def load_features(root, n_speakers, seed):
    """Generates the corpus and returns ``{speaker: [B x T x F utterances]}``."""
    meta = generate_corpus(
        root,
        n_train_speakers=n_speakers,
        n_test_speakers=2,
        sessions_per_speaker=2,
        utterances_per_session=4,
        min_duration=2.5,
        max_duration=4.0,
        n_trials=2,
        seed=seed,
    )
    fbank = Fbank(n_mels=80)
    norm = InputNormalization(norm_type="sentence", std_norm=False)
    feats = {}
    for utt in meta["utterances"]:
        if utt["split"] != "train":
            continue
        wav, _ = sf.read(Path(root) / "wav" / utt["path"], dtype="float32")
        with torch.no_grad():
            x = norm(fbank(torch.from_numpy(wav)[None]), torch.ones(1))
        feats.setdefault(utt["speaker"], []).append(x[0])
    return feats


def split_utterances(feats):
    """Last utterance of each speaker is held out for the IG measurements."""
    speakers = sorted(feats)
    train = [(i, u) for i, s in enumerate(speakers) for u in feats[s][:-1]]
    held = [(i, feats[s][-1]) for i, s in enumerate(speakers)]
    return train, held


def random_crops(pool, n, frames, rng):
    """``n`` random ``frames``-long crops from ``(label, utterance)`` pairs."""
    labels, crops = [], []
    for k in rng.integers(0, len(pool), size=n):
        label, utt = pool[k]
        start = rng.integers(0, utt.shape[0] - frames + 1)
        labels.append(label)
        crops.append(utt[start : start + frames])
    return torch.stack(crops), torch.tensor(labels)


def build_teacher(n_speakers, channels, lin_neurons):
    """Small ECAPA-TDNN and AAM classifier."""
    emb = ECAPA_TDNN(
        80,
        channels=[channels] * 4 + [3 * channels],
        lin_neurons=lin_neurons,
        attention_channels=max(16, channels // 2),
    )
    return emb, Classifier(lin_neurons, out_neurons=n_speakers)


def train_teacher(emb, clf, train, args, rng):
    """A few hundred Adam steps of AAM-softmax on random crops."""
    loss_fn = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=AAM_SCALE))
    params = list(emb.parameters()) + list(clf.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    emb.train(), clf.train()
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    for _ in range(args.train_steps):
        x, y = random_crops(train, args.batch_size, args.segment_frames, rng)
        loss = loss_fn(clf(emb(x)), y[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    emb.eval(), clf.eval()
    for p in params:
        p.requires_grad_(False)
    return loss.item(), time.perf_counter() - start


def accuracy(emb, clf, held, args, rng):
    """Top-1 speaker accuracy on crops of the held-out utterances."""
    x, y = random_crops(held, 4 * args.segments, args.segment_frames, rng)
    with torch.no_grad():
        return float((clf(emb(x)).squeeze(1).argmax(-1) == y).float().mean())


def make_targets(emb, clf, held, x, y):
    """The two IG targets for segments ``x`` of speakers ``y``."""
    embed = lambda f: emb(f).squeeze(1)  # noqa: E731
    logits = lambda e: AAM_SCALE * clf(e[:, None]).squeeze(1)  # noqa: E731
    with torch.no_grad():
        ref = torch.cat([embed(held[int(label)][1][None]) for label in y])
    return {
        "speaker_logit": speaker_logit_target(embed, logits, y),
        "embedding_cosine": embedding_cosine_target(embed, ref),
    }


def measure(targets, x, args):
    """Gap quantiles and segments/s (best of ``--repeats`` runs) per (method, steps)."""
    # One untimed call so that allocator and kernel warm-up are not billed to the first row.
    integrated_gradients(targets["speaker_logit"], x, steps=2)
    rows = []
    for method in METHODS:
        for steps in args.steps:
            row = {"method": method, "steps": steps}
            run = lambda target: integrated_gradients(  # noqa: E731
                target, x, steps=steps, method=method,
                internal_batch_size=args.internal_batch_size,
            )
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                ig = run(targets["speaker_logit"])
                times.append(time.perf_counter() - start)
            row["seg_per_s"] = x.shape[0] / min(times)
            for name, target in targets.items():
                ig = ig if name == "speaker_logit" else run(target)
                gap = completeness_gap(ig, target, x).numpy()
                row[name] = (float(np.median(gap)), float(np.quantile(gap, 0.9)))
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    return rows


def compare_with_captum(target, x, args, repeats=3):
    """Median wall time of ours and of captum's IG (same batch), and max difference."""
    captum_ig = IntegratedGradients(target)
    runs = {
        "own (speechbrain_imlkd.attribution)": lambda: integrated_gradients(
            target, x, steps=16, method="gauss_legendre",
            internal_batch_size=args.internal_batch_size,
        ),
        "captum IntegratedGradients": lambda: captum_ig.attribute(
            x, n_steps=16, method="gausslegendre", internal_batch_size=args.internal_batch_size
        ),
    }
    times, out = {name: [] for name in runs}, {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            out[name] = run().detach()
            times[name].append(time.perf_counter() - start)
    a, b = out.values()
    medians = {k: float(np.median(v)) for k, v in times.items()}
    return medians, float((a - b).abs().max()), float(a.abs().max())


def cheapest_ok(rows, target="speaker_logit", bound=0.02):
    """Fewest steps with median gap under ``bound``; among those, the smallest gap.

    Every rule costs one forward/backward per step, so the step count is the
    cost (the measured speeds only differ by noise on a shared machine).
    """
    ok = [r for r in rows if r[target][0] < bound]
    return min(ok, key=lambda r: (r["steps"], r[target][0])) if ok else None


def markdown(args, info, rows, timing):
    """The results as a markdown snippet."""
    pct = lambda q: f"{100 * q[0]:.2f}% / {100 * q[1]:.2f}%"  # noqa: E731
    lines = [
        "## IG completeness gap and speed",
        "",
        f"Teacher: ECAPA-TDNN C={args.channels} ({info['params']:,} parameters), "
        f"AAM classifier (s={AAM_SCALE:g}, m=0.2) trained {args.train_steps} steps "
        f"(batch {args.batch_size}, {info['train_s']:.0f} s) on 80-mel fbank of a "
        f"synthetic corpus ({args.speakers} speakers); held-out crop accuracy "
        f"{100 * info['acc']:.1f}% (chance {100 / args.speakers:.1f}%).",
        f"Segments: {args.segments} x {args.segment_frames} frames (2 s) of held-out "
        f"utterances; baseline zeros (sentence mean). CPU, torch threads "
        f"{torch.get_num_threads()}, internal_batch_size {args.internal_batch_size}; "
        f"load average {info['load'][0]:.1f} at start, {info['load'][1]:.1f} at end on "
        f"{os.cpu_count()} cores (shared machine: speeds are indicative).",
        "",
        "Gap = |sum IG - (F(x)-F(x'))| / |F(x)-F(x')|, median / 90th percentile. "
        f"Speed: best of {args.repeats} runs (speaker-logit target).",
        "",
        "| method | steps | gap, speaker logit | gap, embedding cosine | IG segments/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['steps']} | {pct(r['speaker_logit'])} | "
            f"{pct(r['embedding_cosine'])} | {r['seg_per_s']:.1f} |"
        )
    best = cheapest_ok(rows)
    lines += ["", "Cheapest setting with median gap < 2% (speaker logit): "
              + (f"`{best['method']}`, {best['steps']} steps." if best else "none.")]
    times, diff, scale = timing
    lines += ["", "### own vs captum", "",
              f"Same {args.segments} segments, gauss_legendre, 16 steps, median of 3 runs; "
              f"max |difference| {diff:.1e} (max |IG| {scale:.1e}).", "",
              "| implementation | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in times.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Runs the benchmark and prints / writes the markdown snippet."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    load_start = os.getloadavg()[0]
    root = args.corpus or tempfile.mkdtemp(prefix="bench_ig_")
    train, held = split_utterances(load_features(root, args.speakers, args.seed))
    emb, clf = build_teacher(args.speakers, args.channels, args.lin_neurons)
    info = {"params": sum(p.numel() for p in emb.parameters())}
    info["final_loss"], info["train_s"] = train_teacher(emb, clf, train, args, rng)
    info["acc"] = accuracy(emb, clf, held, args, rng)
    print(info, file=sys.stderr, flush=True)
    x, y = random_crops(held, args.segments, args.segment_frames, rng)
    targets = make_targets(emb, clf, held, x, y)
    rows = measure(targets, x, args)
    timing = compare_with_captum(targets["speaker_logit"], x, args)
    info["load"] = (load_start, os.getloadavg()[0])
    text = markdown(args, info, rows, timing)
    print(text)
    if args.output:
        given = argv if argv is not None else sys.argv[1:]
        command = "python benchmarks/bench_ig.py " + shlex.join(given)
        with open(args.output, "a" if args.append else "w") as f:
            f.write(f"Command: `{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
