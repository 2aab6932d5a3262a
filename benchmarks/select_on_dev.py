"""Choose IML-KD's integration rule (and strength) on the DEV split.

Trains the ``imlkd`` student of the demo with each candidate setting on the
demo corpus and teacher (run ``make demo`` first, or pass ``--work``) and
reports the best dev EER of each run (the dev split holds out files of the
training speakers; the test trials are never looked at). The demo's default
is the setting with the lowest dev EER.

Usage::

    .venv/bin/python benchmarks/select_on_dev.py --work demo_work \\
        --output benchmarks/results_select_on_dev.md
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from speechbrain_imlkd.demo import RECIPE, as_overrides, load_recipe  # noqa: E402

# Ordered so that runs sharing rule and alpha reuse one IG cache (eta is not
# part of the cache key; the rule and alpha are).
CANDIDATES = [
    {"integration_rule": "saliency_scale", "integration_alpha": 1.0, "eta": 1.0},
    {"integration_rule": "saliency_scale", "integration_alpha": 1.0, "eta": 0.3},
    {"integration_rule": "saliency_scale", "integration_alpha": 0.5, "eta": 1.0},
    {"integration_rule": "temporal_weight", "integration_alpha": 1.0, "eta": 1.0},
]


def best_dev_eer(folder):
    """Lowest dev EER among the checkpoints of a run.

    Arguments
    ---------
    folder : Path
        The run's output folder (holds ``save/CKPT+*/CKPT.yaml``).

    Returns
    -------
    float
        The lowest ``EER`` in the checkpoints' metadata.
    """
    import yaml

    eers = [yaml.safe_load(p.read_text())["EER"] for p in folder.glob("save/CKPT+*/CKPT.yaml")]
    if not eers:
        raise FileNotFoundError(f"no checkpoint with dev EER under {folder}")
    return min(eers)


def main(argv=None):
    """Runs every candidate and writes the comparison table.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    list of dict
        One row per candidate.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(REPO / "demo_work"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results_select_on_dev.md"))
    parser.add_argument("--config", default=str(REPO / "hparams" / "demo.yaml"))
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as f:
        cfg = load_hyperpyyaml(f)
    torch.set_num_threads(cfg["threads"])
    work = Path(args.work).resolve()
    teacher = work / "teacher" / "exported"
    train_kd = load_recipe("train_kd")
    rows = []
    for i, cand in enumerate(CANDIDATES):
        out = work / "select_on_dev" / f"cand{i}"
        overrides = {**cfg["students"], **cfg["method_overrides"]["imlkd"], **cand,
                     "evaluate_after_training": False}
        t0 = time.time()
        train_kd.main([str(RECIPE / "hparams" / "imlkd_ecapa.yaml"), f"--data_folder={work / 'corpus'}",
                       f"--teacher_source={teacher}", f"--output_root={out}",
                       f"--prep_folder={work / 'students' / 'prepared'}",
                       f"--ig_cache_folder={work / 'select_on_dev' / 'ig_cache'}",
                       f"--seed={cfg['seeds'][0]}", *as_overrides(overrides)])
        rows.append({**cand, "dev_eer": best_dev_eer(out / "imlkd" / f"seed{cfg['seeds'][0]}"),
                     "seconds": time.time() - t0})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["## Integration rule chosen on the dev split", "",
             f"Command: `.venv/bin/python benchmarks/select_on_dev.py --work {args.work}`", "",
             "imlkd student of the demo (same budget and seed as the demo), best dev EER over epochs "
             "(dev = held-out files of the training speakers; test trials not used).", "",
             "| rule | alpha | eta | dev EER (%) | run time (s) |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['integration_rule']} | {r['integration_alpha']} | {r['eta']} | "
                     f"{100 * r['dev_eer']:.2f} | {r['seconds']:.0f} |")
    best = min(rows, key=lambda r: r["dev_eer"])
    lines += ["", f"Lowest dev EER: `{best['integration_rule']}`, alpha {best['integration_alpha']}, "
              f"eta {best['eta']}."]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
