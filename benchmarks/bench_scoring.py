"""Benchmark: EER / minDCF at VoxCeleb scale, ours vs SpeechBrain's.

Scores are random with a realistic separation (cosine-like, EER of a few
percent); labels are the real ones of VoxCeleb1-O (``veri_test2.txt``, 37,611
trials) and VoxCeleb1-H (``list_test_hard_uncleaned.txt.gz``, 552,536 trials)
from ``../shared/data/voxceleb1``.

Every measurement runs in a fresh subprocess (glibc told to serve large
blocks from mmap, so that they show in RSS), so that peak memory is clean:
the extra peak RSS of a call is the peak RSS during its first call (reset
just before it through ``/proc/self/clear_refs``) minus the RSS before it;
tracemalloc gives the peak of numpy/Python allocations of a second call
(torch's allocations are invisible to it, so it is reported for ours only);
times are the median of further calls.

SpeechBrain's ``minDCF`` materialises thresholds x N matrices (about 18 GB on
the full O list), more than this shared machine can spare: it is run on
random subsets of O (sizes in ``--sb-mindcf-sizes``), side by side with ours
on the same subsets. SpeechBrain's ``EER`` loops over thresholds in O(N) memory
and runs on the full O list.

Usage (from the repository root; about 5 minutes and 3.5 GB at the default
sizes on 2 CPUs):

    python benchmarks/bench_scoring.py [--repeats 5] [--sb-repeats 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VOX = REPO.parent / "shared" / "data" / "voxceleb1"
LISTS = {
    "VoxCeleb1-O": VOX / "veri_test2.txt",
    "VoxCeleb1-H": VOX / "list_test_hard_uncleaned.txt.gz",
}
# Cosine-like score distributions giving an EER of about 2-3 %.
TARGET_MEAN, TARGET_STD = 0.55, 0.13
NONTARGET_MEAN, NONTARGET_STD = 0.08, 0.10
SEED = 0


def _rss_kb(field):
    """A field of /proc/self/status, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_scores(list_name, n_sub=None):
    """Real labels of a trial list, random float32 scores, optional subset."""
    from speechbrain_imlkd.data.trials import read_trials

    labels = read_trials(LISTS[list_name]).labels.astype(bool)
    rng = np.random.default_rng(SEED)
    if n_sub is not None and n_sub < labels.size:
        labels = labels[np.sort(rng.choice(labels.size, n_sub, replace=False))]
    scores = np.where(
        labels,
        rng.normal(TARGET_MEAN, TARGET_STD, labels.size),
        rng.normal(NONTARGET_MEAN, NONTARGET_STD, labels.size),
    ).astype(np.float32)
    return scores[labels], scores[~labels]


def worker(method, list_name, n_sub, repeats):
    """Runs one method ``repeats`` times in this process; prints JSON."""
    import torch
    from speechbrain.utils.metric_stats import EER, minDCF

    from speechbrain_imlkd.scoring import compute_eer, compute_min_dcf, verification_metrics

    tgt, non = make_scores(list_name, n_sub)
    tt, tn = torch.from_numpy(tgt), torch.from_numpy(non)
    scores = np.concatenate([tgt, non])
    labels = np.r_[np.ones(tgt.size, np.int8), np.zeros(non.size, np.int8)]
    calls = {
        "ours_all": lambda: verification_metrics(scores, labels),
        "ours_eer": lambda: compute_eer(tgt, non),
        "ours_mindcf": lambda: compute_min_dcf(tgt, non, p_target=0.01),
        "sb_eer": lambda: EER(tt, tn),
        "sb_mindcf": lambda: minDCF(tt, tn, p_target=0.01),
    }
    fn = calls[method]
    # Memory on the first call, before any warm-up could leave freed pages
    # for the allocator to reuse unseen.
    rss_before = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
    fn()
    extra_rss = (_rss_kb("VmHWM") - rss_before) * 1024
    traced = 0
    if not method.startswith("sb_"):  # tracemalloc cannot see torch memory
        tracemalloc.start()
        fn()
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    if method == "ours_all":
        value = {k: result[k] for k in ("eer", "min_dcf_0.01", "min_dcf_0.05")}
    else:
        value = float(result[0])
    print(json.dumps(dict(
        method=method, list=list_name, n_trials=int(tgt.size + non.size),
        time_s=statistics.median(times), extra_rss=extra_rss,
        tracemalloc=traced, value=value,
        note="tracemalloc misses torch allocations" if method.startswith("sb") else "",
    )))


def run(method, list_name, n_sub, repeats):
    """Runs :func:`worker` in a fresh interpreter and returns its JSON."""
    cmd = [sys.executable, __file__, "--worker", method, list_name, str(n_sub or 0), str(repeats)]
    # Large blocks always from (and back to) the OS, so that RSS shows them.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mb(n_bytes):
    return f"{n_bytes / 2**20:,.1f} MB"


def _row(r, ref=None):
    ratio_t = f"{r['time_s'] / ref['time_s']:,.0f}x" if ref else "1x"
    ratio_m = f"{max(r['extra_rss'], 1) / max(ref['extra_rss'], 1):,.0f}x" if ref else "1x"
    traced = _mb(r["tracemalloc"]) if not r["note"] else "n/a (torch)"
    return (
        f"| {r['list']} | {r['n_trials']:,} | {r['method']} | {1000 * r['time_s']:,.1f} ms "
        f"| {_mb(r['extra_rss'])} | {traced} | {ratio_t} | {ratio_m} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of our calls")
    parser.add_argument("--sb-repeats", type=int, default=3, help="repeats of SpeechBrain's calls")
    parser.add_argument("--sb-mindcf-sizes", type=int, nargs="+", default=[4000, 8000, 16000],
                        help="subset sizes of VoxCeleb1-O for SpeechBrain's minDCF")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, list_name, n_sub, repeats = args.worker
        return worker(method, list_name, int(n_sub) or None, int(repeats))
    missing = [str(p) for p in LISTS.values() if not p.is_file()]
    if missing:
        sys.exit(f"Real trial lists not found: {missing}")

    header = (
        "| list | trials | method | median time | extra peak RSS | tracemalloc peak "
        "| time / ours | RSS / ours |\n|---|---|---|---|---|---|---|---|"
    )
    rows, checks, sb_dcf_runs = [], [], []

    h_all = run("ours_all", "VoxCeleb1-H", None, args.repeats)
    rows.append(_row(h_all))
    for m in ("ours_eer", "ours_mindcf"):
        rows.append(_row(run(m, "VoxCeleb1-H", None, args.repeats)))

    o_eer = run("ours_eer", "VoxCeleb1-O", None, args.repeats)
    sb_eer = run("sb_eer", "VoxCeleb1-O", None, args.sb_repeats)
    rows += [_row(o_eer), _row(sb_eer, o_eer)]
    checks.append(f"| EER, O full | {o_eer['value']:.6f} | {sb_eer['value']:.6f} | "
                  f"{abs(o_eer['value'] - sb_eer['value']):.2e} |")
    for n in args.sb_mindcf_sizes:
        ours = run("ours_mindcf", "VoxCeleb1-O", n, args.repeats)
        sb = run("sb_mindcf", "VoxCeleb1-O", n, args.sb_repeats)
        rows += [_row(ours), _row(sb, ours)]
        sb_dcf_runs.append(sb)
        # Ours is the normalised DCF; SpeechBrain's is it times min(p, 1 - p).
        sb_norm = sb["value"] / 0.01
        checks.append(f"| minDCF(0.01), O subset {n:,} | {ours['value']:.6f} | {sb_norm:.6f} | "
                      f"{abs(ours['value'] - sb_norm):.2e} |")

    print(f"### Scoring benchmark (`{Path(__file__).name}`)\n")
    print(f"Machine: {os.cpu_count()} CPUs (shared), numpy {np.__version__}. Random float32 scores, "
          f"target N({TARGET_MEAN}, {TARGET_STD}), non-target N({NONTARGET_MEAN}, {NONTARGET_STD}), "
          f"real labels. Medians of {args.repeats} (ours) / {args.sb_repeats} (SpeechBrain) runs, "
          "each method in a fresh process.\n")
    print(header)
    print("\n".join(rows))
    print(f"\nVoxCeleb1-H, all metrics from one sort: EER {100 * h_all['value']['eer']:.3f}%, "
          f"minDCF(0.01) {h_all['value']['min_dcf_0.01']:.4f}, minDCF(0.05) "
          f"{h_all['value']['min_dcf_0.05']:.4f}.\n")
    print("| agreement | ours | SpeechBrain (normalised) | abs diff |\n|---|---|---|---|")
    print("\n".join(checks))
    n_o, n_big = o_eer["n_trials"], max(args.sb_mindcf_sizes)
    big = [r for r in sb_dcf_runs if r["n_trials"] == n_big][0]
    print(f"\nSpeechBrain's minDCF was NOT run on the full O list ({n_o:,} trials): its "
          "thresholds x N matrices grow with the square of the list, so the largest "
          f"measured subset ({n_big:,} trials: {_mb(big['extra_rss'])}) extrapolates to "
          f"about {big['extra_rss'] * (n_o / n_big) ** 2 / 2**30:,.0f} GB on the full "
          "list (an extrapolation, not a measurement). Ours: "
          f"{1000 * o_eer['time_s']:.1f} ms for the EER of the full O list and "
          f"{1000 * h_all['time_s']:.0f} ms / {_mb(h_all['extra_rss'])} extra for EER + "
          "two minDCFs on H.")


if __name__ == "__main__":
    main()
