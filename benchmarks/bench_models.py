#!/usr/bin/env python3
"""Parameters and MACs of the ECAPA-TDNN teacher and the IML-KD students.

Counts the embedding model only (no classifier, no filterbank) for a single
3 s utterance (301 frames of 80 log mel filterbanks). MACs come from forward
hooks on every ``Conv1d``/``Linear`` (see
:func:`speechbrain_imlkd.models.count_macs`).

Usage::

    python benchmarks/bench_models.py [--seconds 3.0] [--output results.md]

Example
-------
>>> rows = measure(channels=(16,), seconds=1.0)
>>> rows[0]["channels"], rows[0]["params"] > 0, rows[0]["macs"] > 0
(16, True, True)
"""

import argparse
import platform
import sys

import speechbrain
import torch
from torch.utils.flop_counter import FlopCounterMode

from speechbrain_imlkd.models import (
    STUDENT_CHANNELS,
    TEACHER_CHANNELS,
    build_ecapa,
    count_macs,
    count_parameters,
)

# Fbank's 10 ms frame shift, as in count_macs.
FRAMES_PER_SECOND = 100


def measure(channels=(TEACHER_CHANNELS,) + STUDENT_CHANNELS, seconds=3.0, n_mels=80):
    """Counts parameters and MACs for each width.

    Arguments
    ---------
    channels : sequence of int
        Widths ``C`` (channels ``[C, C, C, C, 3C]``).
    seconds : float
        Utterance length for the MAC count.
    n_mels : int
        Filterbank channels.

    Returns
    -------
    list of dict
        One row per width: ``channels``, ``params``, ``macs`` (hooks) and
        ``macs_check`` (``torch.utils.flop_counter`` FLOPs / 2, an
        independent count of the same convolutions and matmuls).

    Example
    -------
    >>> measure(channels=(16,), seconds=1.0)[0]["params"]
    67642
    """
    rows = []
    for c in channels:
        model = build_ecapa(channels=c, n_mels=n_mels).eval()
        n_frames = 1 + int(round(seconds * FRAMES_PER_SECOND))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, n_frames, n_mels))
        rows.append(
            dict(
                channels=c,
                params=count_parameters(model),
                macs=count_macs(model, n_mels=n_mels, seconds=seconds),
                macs_check=counter.get_total_flops() // 2,
            )
        )
    return rows


def to_markdown(rows, seconds):
    """Formats the rows as a Markdown table (ratios relative to the first row).

    Arguments
    ---------
    rows : list of dict
        Output of :func:`measure`.
    seconds : float
        Utterance length used for the MACs.

    Returns
    -------
    str
        The table.

    Example
    -------
    >>> row = dict(channels=8, params=2000000, macs=3e9, macs_check=3e9)
    >>> print(to_markdown([row], 3.0))
    | model | channels | params | params vs first | GMACs (3 s) | GMACs, flop_counter / 2 | MACs vs first |
    |---|---|---|---|---|---|---|
    | ECAPA C=8 | [8, 8, 8, 8, 24] | 2.00M | 1.00x | 3.000 | 3.000 | 1.00x |
    """
    ref = rows[0]
    lines = [
        f"| model | channels | params | params vs first | GMACs ({seconds:g} s) "
        "| GMACs, flop_counter / 2 | MACs vs first |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["channels"]
        name = "teacher (hub)" if c == TEACHER_CHANNELS else f"ECAPA C={c}"
        lines.append(
            f"| {name} | {[c] * 4 + [3 * c]} | {r['params'] / 1e6:.2f}M | "
            f"{r['params'] / ref['params']:.2f}x | {r['macs'] / 1e9:.3f} | "
            f"{r['macs_check'] / 1e9:.3f} | {r['macs'] / ref['macs']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Runs the benchmark and prints (and optionally saves) the table.

    Arguments
    ---------
    argv : list of str or None
        Command-line arguments.

    Returns
    -------
    list of dict
        The measured rows.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--output", default=None, help="Markdown file to write")
    args = parser.parse_args(argv)
    rows = measure(seconds=args.seconds)
    table = to_markdown(rows, args.seconds)
    print(table)
    if args.output:
        command = "python benchmarks/bench_models.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        text = "\n".join(
            [
                "# Model size: ECAPA-TDNN teacher and students",
                "",
                f"Command: `{command.strip()}`",
                "",
                f"Environment: Python {platform.python_version()}, torch "
                f"{torch.__version__}, speechbrain {speechbrain.__version__}.",
                "",
                "Embedding model only (no classifier, no filterbank), "
                "lin_neurons=192, attention_channels=128, 80 mels. MACs: one "
                f"{args.seconds:g} s utterance, counted with forward hooks on "
                "every Conv1d/Linear (BatchNorm, activations, softmax and "
                "pooling arithmetic not counted); cross-checked with "
                "torch.utils.flop_counter (FLOPs / 2) on the same input.",
                "",
                table,
                "",
            ]
        )
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return rows


if __name__ == "__main__":
    main()
