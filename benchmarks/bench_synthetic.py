"""Speed and difficulty of the synthetic speaker corpus.

Speed: x-real-time of ``synthesize_utterance``, ``apply_channel`` and of
both plus writing a PCM16 wav, on one core (BLAS/FFT threads pinned to 1),
measured side by side on the same utterances; then ``generate_corpus`` end
to end with ``num_workers=1``.

Difficulty: EER on the corpus trials of the untrained mean log-Mel cosine
baseline (raw, and level-normalised + centred) versus an LDA projection
learnt on the training speakers only, for a small corpus (the one the
tests use) and the demo-sized corpus, for each requested seed.

Usage::

    python benchmarks/bench_synthetic.py [--seeds 0 1] [--n_utts 40] [--workdir DIR]

Prints a markdown snippet.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from speechbrain_imlkd.data import synthetic  # noqa: E402

SMALL = dict(n_train_speakers=16, n_test_speakers=6, sessions_per_speaker=3, utterances_per_session=2,
             min_duration=1.5, max_duration=2.5, n_trials=120)
DEMO = dict(n_train_speakers=40, n_test_speakers=10, sessions_per_speaker=4, utterances_per_session=4,
            min_duration=2.0, max_duration=5.0, n_trials=600)


def speed(n_utts, workdir, sample_rate=16000):
    """Per-utterance x-real-time of the stages, median over utterances."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # torch is not needed for synthesis
        pass
    rng = np.random.default_rng(0)
    synth, chan, total = [], [], []
    for k in range(n_utts):
        voice = synthetic.SpeakerVoice.sample(rng, "id00001").session_variant(rng)
        channel = synthetic.Channel.sample(rng, sample_rate, reverb_prob=0.25)
        duration = rng.uniform(2.0, 5.0)
        t0 = time.perf_counter()
        wave = synthetic.synthesize_utterance(voice, duration, rng, sample_rate)
        t1 = time.perf_counter()
        wave = synthetic.apply_channel(wave, channel, rng)
        t2 = time.perf_counter()
        sf.write(Path(workdir) / "speed.wav", wave, sample_rate, subtype="PCM_16")
        t3 = time.perf_counter()
        synth.append(duration / (t1 - t0))
        chan.append(duration / (t2 - t1))
        total.append(duration / (t3 - t0))
    return statistics.median(synth), statistics.median(chan), statistics.median(total)


def corpus_speed(workdir):
    """End-to-end ``generate_corpus`` x-real-time on the small corpus."""
    root = Path(workdir) / "speed_corpus"
    t0 = time.perf_counter()
    meta = synthetic.generate_corpus(root, seed=123, num_workers=1, **SMALL)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(root)
    return meta["counts"]["total_duration_s"] / elapsed, meta["counts"]["total_duration_s"]


def difficulty(name, sizes, seed, workdir):
    """Baseline and LDA EERs for one corpus."""
    root = Path(workdir) / f"{name}_{seed}"
    meta = synthetic.generate_corpus(root, seed=seed, **sizes)
    row = {
        "corpus": name,
        "seed": seed,
        "speakers": f"{meta['counts']['n_train_speakers']}+{meta['counts']['n_test_speakers']}",
        "hours": meta["counts"]["total_duration_s"] / 3600,
        "trials": f"{meta['trials']['n_trials']} ({meta['trials']['n_target']} tgt)",
        "raw": synthetic.baseline_eer(root, centre=False, level_normalise=False),
        "baseline": synthetic.baseline_eer(root),
        "lda": synthetic.lda_eer(root),
    }
    shutil.rmtree(root)
    return row


def main():
    """Runs the benchmark and prints the markdown snippet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n_utts", type=int, default=40, help="utterances for the speed figures")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_synthetic_"))
    workdir.mkdir(parents=True, exist_ok=True)

    synth_x, chan_x, total_x = speed(args.n_utts, workdir)
    corpus_x, corpus_s = corpus_speed(workdir)
    rows = [difficulty(name, sizes, seed, workdir) for seed in args.seeds
            for name, sizes in (("small", SMALL), ("demo", DEMO))]

    print("### Speed (one core, 16 kHz, median over %d utterances of 2-5 s)\n" % args.n_utts)
    print("| stage | x real time |")
    print("|---|---|")
    print(f"| `synthesize_utterance` | {synth_x:.0f}x |")
    print(f"| `apply_channel` | {chan_x:.0f}x |")
    print(f"| synthesis + channel + PCM16 write | {total_x:.0f}x |")
    print(f"| `generate_corpus(num_workers=1)`, small corpus ({corpus_s:.0f} s of audio) | {corpus_x:.0f}x |")
    print("\n### Difficulty (EER on `veri_test2.txt`, held-out speakers)\n")
    print("| corpus | seed | train+test speakers | hours | trials | raw mean-fbank cosine | "
          "level-norm + centred cosine (baseline) | LDA on train speakers |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['corpus']} | {r['seed']} | {r['speakers']} | {r['hours']:.2f} | {r['trials']} | "
              f"{100 * r['raw']:.1f}% | {100 * r['baseline']:.1f}% | {100 * r['lda']:.1f}% |")
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
