"""Benchmark: VoxCeleb1 preparation at full dev-set scale, without audio.

Reads the real duration lists (``vox1_dev_duration.txt.gz``, 148,642 files,
plus ``vox1_tst_duration.txt.gz`` so that the 40 test speakers are present and
must be excluded) and the real ``veri_test2.txt`` from ``../shared/data``, then
runs :func:`prepare_voxceleb1` with ``durations=...`` (no audio is listed or
read). Reports wall-clock seconds of each stage, peak Python memory
(``tracemalloc``, measured in a second run because tracing slows Python down)
and the process's peak resident memory (``ru_maxrss``), and the rows written.

Run from the repository root::

    .venv/bin/python benchmarks/bench_prepare.py

Prints a markdown snippet.
"""

import argparse
import gc
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from speechbrain_imlkd.data.voxceleb import prepare_voxceleb1, read_durations

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voxceleb1"


def _maxrss_mib():
    """Peak resident memory of this process so far, in MiB (Linux units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(durations, trials, out, seg_dur):
    """Prepares all four splits into ``out``; returns (seconds, report)."""
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    report = prepare_voxceleb1(
        data_folder="/data/voxceleb1",  # never read: durations are given
        save_folder=out,
        verification_pairs_file=trials,
        seg_dur=seg_dur,
        durations=durations,
    )
    return time.perf_counter() - t0, report


def main(argv=None):
    """Runs the benchmark and prints a markdown snippet.

    Arguments
    ---------
    argv : list of str or None
        Command-line arguments (``--seg-dur``, ``--data``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seg-dur", type=float, default=3.0)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    # torch and speechbrain are imported with the package: report their
    # share separately so the preparation's own footprint is visible.
    rss_imports = _maxrss_mib()
    dev_list = args.data / "vox1_dev_duration.txt.gz"
    tst_list = args.data / "vox1_tst_duration.txt.gz"
    trials = args.data / "veri_test2.txt"
    for f in (dev_list, tst_list, trials):
        if not f.is_file():
            sys.exit(f"missing {f}: this benchmark needs ../shared/data")

    t0 = time.perf_counter()
    durations = read_durations(dev_list)
    n_dev = len(durations)
    durations.update(read_durations(tst_list))
    t_read = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        t_prep, report = run_once(durations, trials, tmp / "out", args.seg_dur)
        t1 = time.perf_counter()
        again = prepare_voxceleb1(
            "/data/voxceleb1",
            tmp / "out",
            trials,
            seg_dur=args.seg_dur,
            durations=durations,
        )
        t_reuse = time.perf_counter() - t1
        assert again.reused
        rss_untraced = _maxrss_mib()
        csv_bytes = sum(p.stat().st_size for p in report.csv_files.values())

        gc.collect()
        tracemalloc.start()
        run_once(durations, trials, tmp / "out", args.seg_dur)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    s = report.stats
    print("| stage | value |")
    print("|---|---|")
    print(f"| duration lists read ({n_dev} dev + {len(durations) - n_dev} test files) | {t_read:.2f} s |")
    print(f"| `prepare_voxceleb1` (4 splits, seg_dur={args.seg_dur}) | {t_prep:.2f} s |")
    print(f"| re-run with same options (skipped) | {t_reuse:.2f} s |")
    print(f"| peak Python memory during preparation (tracemalloc) | {peak / 2**20:.0f} MiB |")
    print(f"| peak resident memory (ru_maxrss) after imports, before preparing | {rss_imports:.0f} MiB |")
    print(f"| peak resident memory (ru_maxrss) after preparing, untraced run | {rss_untraced:.0f} MiB |")
    print(f"| train rows / files / speakers | {s['train_rows']} / {s['train_files']} / {s['train_speakers']} |")
    print(f"| dev rows / files / speakers | {s['dev_rows']} / {s['dev_files']} / {s['dev_speakers']} |")
    print(f"| enrol rows / test rows (trials) | {s['enrol_rows']} / {s['test_rows']} ({s['trials']}) |")
    print(f"| files excluded (trial-list speakers) | {s['excluded_trial_speaker_files']} ({s['excluded_trial_speakers']} speakers) |")
    print(f"| files skipped (shorter than seg_dur) | {s['skipped_short']} |")
    print(f"| CSV bytes written | {csv_bytes / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
