"""Speed and difficulty of the synthetic speaker corpus.

Speed: x-real-time of ``synthesize_utterance``, ``apply_channel`` and of
both plus writing a PCM16 wav, on one core (BLAS/FFT threads pinned to 1),
measured side by side on the same utterances; then ``generate_corpus`` end
to end with ``num_workers=1``.

Difficulty: EER on the corpus trials of the untrained mean log-Mel cosine
baseline (raw, and level-normalised + centred) versus an LDA projection
learnt on the training speakers only, for a small corpus (the one the
tests use), a demo-sized corpus (40 + 10 speakers, 4 sessions x 4 clips of
2-5 s) and the sizes of ``hparams/demo.yaml``, for each requested seed. With
``--neural_epochs N`` a small ECAPA-TDNN (channels 128, AAM softmax) is also
trained from scratch on the training speakers of the first demo corpus and
scored (cosine) on its held-out trials: the corpus is learnable by the kind
of model the project distils.

Usage::

    python benchmarks/bench_synthetic.py [--seeds 0 1] [--n_utts 40] [--neural_epochs 30]

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
from speechbrain_imlkd.data.trials import read_trials  # noqa: E402

SMALL = dict(n_train_speakers=16, n_test_speakers=6, sessions_per_speaker=3, utterances_per_session=2,
             min_duration=1.5, max_duration=2.5, n_trials=120)
DEMO = dict(n_train_speakers=40, n_test_speakers=10, sessions_per_speaker=4, utterances_per_session=4,
            min_duration=2.0, max_duration=5.0, n_trials=600)
DEMO_YAML = Path(__file__).resolve().parents[1] / "hparams" / "demo.yaml"


def demo_yaml_corpus():
    """The corpus sizes of ``make demo`` (hparams/demo.yaml), without its seed."""
    from hyperpyyaml import load_hyperpyyaml

    with open(DEMO_YAML, encoding="utf-8") as handle:
        sizes = dict(load_hyperpyyaml(handle)["corpus"])
    return {k: v for k, v in sizes.items() if k != "seed"}


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
        channel = synthetic.Channel.sample(rng, sample_rate)  # default priors
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


def neural_eer(root, epochs, seed=0, crop_frames=150, batch_size=32):
    """Held-out EER of a small ECAPA-TDNN trained from scratch on the train split."""
    import json

    import torch
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    root = Path(root)
    meta = json.loads((root / "meta.json").read_text())
    fbank = Fbank(n_mels=80)

    def features(rel):
        wave, _ = sf.read(str(root / "wav" / rel), dtype="float32")
        with torch.no_grad():
            feats = fbank(torch.from_numpy(wave)[None])[0]
        return feats - feats.mean(0)  # sentence mean normalisation, as in the project

    train = [u for u in meta["utterances"] if u["split"] == "train"]
    speakers = sorted({u["speaker"] for u in train})
    feats = [features(u["path"]) for u in train]
    labels = torch.tensor([speakers.index(u["speaker"]) for u in train])
    model = ECAPA_TDNN(80, channels=[128, 128, 128, 128, 384], lin_neurons=128, attention_channels=64)
    weights = torch.nn.Parameter(torch.randn(len(speakers), 128) * 0.01)
    loss_fn = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
    opt = torch.optim.Adam(list(model.parameters()) + [weights], lr=2e-3, weight_decay=2e-6)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(feats))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            crops = []
            for i in idx:
                offset = int(rng.integers(0, max(1, len(feats[i]) - crop_frames)))
                crops.append(feats[i][offset:offset + crop_frames])
            emb = model(torch.stack(crops)).squeeze(1)
            logits = torch.nn.functional.linear(torch.nn.functional.normalize(emb),
                                                torch.nn.functional.normalize(weights))
            loss = loss_fn(logits.unsqueeze(1), labels[idx].unsqueeze(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    trials = read_trials(root / "veri_test2.txt")
    with torch.no_grad():
        emb = {u: torch.nn.functional.normalize(model(features(u)[None]).reshape(-1), dim=0)
               for u in trials.utterances}
    scores = [float(emb[a] @ emb[b]) for a, b in zip(trials.enrol, trials.test)]
    n_params = sum(p.numel() for p in model.parameters())
    return synthetic._eer(scores, trials.labels), n_params


def difficulty(name, sizes, seed, workdir, neural_epochs=0):
    """Baseline and LDA EERs (and optionally the neural EER) for one corpus."""
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
        "neural": neural_eer(root, neural_epochs) if neural_epochs else None,
    }
    shutil.rmtree(root)
    return row


def main():
    """Runs the benchmark and prints the markdown snippet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n_utts", type=int, default=40, help="utterances for the speed figures")
    parser.add_argument("--neural_epochs", type=int, default=0,
                        help="also train a small ECAPA for this many epochs on the first demo corpus")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_synthetic_"))
    workdir.mkdir(parents=True, exist_ok=True)

    synth_x, chan_x, total_x = speed(args.n_utts, workdir)
    corpus_x, corpus_s = corpus_speed(workdir)
    corpora = [("small", SMALL), ("demo", DEMO)]
    if DEMO_YAML.exists():
        corpora.append(("demo.yaml", demo_yaml_corpus()))
    rows = [difficulty(name, sizes, seed, workdir,
                       args.neural_epochs if (name == "demo" and seed == args.seeds[0]) else 0)
            for seed in args.seeds for name, sizes in corpora]

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
    for r in rows:
        if r["neural"] is not None:
            eer, n_params = r["neural"]
            print(f"\nSmall ECAPA-TDNN (channels 128, {n_params / 1e6:.2f} M parameters) trained from "
                  f"scratch for {args.neural_epochs} epochs on the {r['speakers'].split('+')[0]} training "
                  f"speakers of the {r['corpus']} corpus (seed {r['seed']}), 1.5 s crops, AAM softmax: "
                  f"**{100 * eer:.1f}% EER** on its held-out trials (cosine).")
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
