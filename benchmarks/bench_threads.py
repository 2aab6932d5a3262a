"""Seconds per training step of the demo's student with 1 and 2 torch threads.

Why the demo pins torch to one thread: on a 2-core machine where another
process is busy, two threads per step wait on each other. Run after
``make demo`` (it reads the demo's prepared CSVs):

    .venv/bin/python benchmarks/bench_threads.py --work demo_work

Each thread count runs in its own process, one after the other.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(work, threads, steps=4):
    """Median seconds of ``fit_batch`` on one batch with ``threads`` threads.

    Arguments
    ---------
    work : Path
        The demo's work folder.
    threads : int
        torch threads.
    steps : int
        Timed steps.

    Returns
    -------
    float
        Median seconds per step.
    """
    import speechbrain as sb
    import torch

    from speechbrain_imlkd.brain import KDBrain
    from speechbrain_imlkd.data.dataset import train_dev_datasets
    from speechbrain_imlkd.hparams_utils import load_recipe_hparams
    from speechbrain_imlkd.recipe_utils import count_speakers

    torch.set_num_threads(threads)
    prep = work / "students" / "prepared"
    overrides = dict(
        data_folder=str(work / "corpus"), output_root="/tmp/bench_threads", skip_prep=True,
        train_csv=str(prep / "train.csv"), dev_csv=str(prep / "dev.csv"),
        label_encoder_file=str(prep / "label_encoder.txt"),
        n_train_speakers=count_speakers(prep / "train.csv"),
        student_channels=32, student_attention_channels=16, emb_dim=64, batch_size=32, num_workers=0,
    )
    hp = load_recipe_hparams(REPO / "recipes/VoxCeleb1/imlkd/hparams/scratch_ecapa.yaml", overrides)
    train, _, _ = train_dev_datasets(hp["train_csv"], hp["dev_csv"], hp["label_encoder_file"])
    brain = KDBrain(modules=hp["modules"], opt_class=hp["opt_class"], hparams=hp,
                    run_opts={"device": "cpu"}, checkpointer=None)
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN)
    batch = next(iter(brain.make_dataloader(train, stage=sb.Stage.TRAIN, batch_size=32, shuffle=False)))
    brain.fit_batch(batch)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        brain.fit_batch(batch)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv=None):
    """Runs 1 and 2 threads in separate processes and prints the table.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    dict
        Seconds per step by thread count.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(REPO / "demo_work"))
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        print(one_run(Path(args.work).resolve(), args.threads))
        return {}
    out = {}
    for threads in (1, 2):
        proc = subprocess.run([sys.executable, __file__, "--work", args.work, "--threads", str(threads)],
                              capture_output=True, text=True, check=True)
        out[threads] = float(proc.stdout.strip().splitlines()[-1])
    print("| torch threads | s/step (median of 4) |\n|---:|---:|")
    for threads, sec in out.items():
        print(f"| {threads} | {sec:.3f} |")
    return out


if __name__ == "__main__":
    main()
