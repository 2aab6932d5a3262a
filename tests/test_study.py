"""The ablation driver (benchmarks/study.py) on a toy grid: every cell x seed
run once, resumed without re-running, tables with intervals, the pick made on
dev, the synthetic dev trial list."""

import importlib.util
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study", ROOT / "benchmarks" / "study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_trials(path, n_spk=12, per_spk=4, seed=0):
    """A trial list over `n_spk` speakers; returns labels."""
    rng = np.random.default_rng(seed)
    lines, labels = [], []
    for s in range(n_spk):
        for k in range(per_spk):
            lines.append(f"1 id{s:05d}/v/{k}.wav id{s:05d}/w/{k}.wav")
            labels.append(1)
            other = (s + 1 + rng.integers(n_spk - 1)) % n_spk
            for j in range(3):
                lines.append(f"0 id{s:05d}/v/{k}.wav id{other:05d}/w/{j}.wav")
                labels.append(0)
    path.write_text("\n".join(lines) + "\n")
    return np.array(labels)


class FakeRunner:
    """Stands in for the recipe: writes a run's dev scores, records calls."""

    def __init__(self, labels, trials, quality):
        self.labels, self.trials, self.quality = labels, trials, quality
        self.calls = []
        self.times = {}
        self.locks = {}
        self.guard = threading.Lock()

    def lock(self, key):
        # One lock per cache, as the real runner keeps: a fresh lock per call
        # would let two seeds both build the cache.
        with self.guard:
            return self.locks.setdefault(key, threading.Lock())

    def run(self, name, cmd):
        self.calls.append(name)
        folder = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("--output_folder=")))
        if name.endswith("IG cache"):
            cache = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("--ig_cache_folder=")))
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "index.json").write_text("{}")
            return
        cell, seed = name.rsplit(" seed", 1)
        rng = np.random.default_rng(int(seed))
        scores = self.labels * self.quality[cell] + rng.normal(size=self.labels.size)
        (folder / "eval").mkdir(parents=True, exist_ok=True)
        from speechbrain_imlkd.data.trials import read_trials

        t = read_trials(self.trials)
        (folder / "eval" / "scores_dev.txt").write_text(
            "".join(f"{l} {e} {x} {s}\n" for l, e, x, s in zip(self.labels, t.enrol, t.test, scores)))
        (folder / "eval" / "results.json").write_text("{}")


def test_toy_grid_runs_every_cell_once_resumes_and_picks_on_dev(study, tmp_path):
    trials = tmp_path / "dev.txt"
    labels = write_trials(trials)
    cells = [
        {"name": "kd", "method": "kd"},
        {"name": "imlkd", "method": "imlkd", "candidate": True},
        {"name": "imlkd+kd", "method": "imlkd", "candidate": True, "overrides": {"clean_kd_weight": 1.0}},
    ]
    quality = {"kd": 1.0, "imlkd": 0.8, "imlkd+kd": 2.0}
    setting = {"method_yaml": "hparams/{method}.yaml", "overrides": {}}
    runner = FakeRunner(labels, trials, quality)
    folders = study.train_cells(setting, cells, [1, 2, 3], [], tmp_path, runner, jobs=2)
    assert sorted(runner.calls) == sorted(
        [f"{c['name']} seed{s}" for c in cells for s in (1, 2, 3)] + ["imlkd IG cache", "imlkd+kd IG cache"])
    # Resume: nothing is run again.
    runner.calls.clear()
    again = study.train_cells(setting, cells, [1, 2, 3], [], tmp_path, runner, jobs=2)
    assert runner.calls == [] and again == folders
    dev = study.table({c: study.dev_scores(f) for c, f in folders.items()}, trials, "kd", n_boot=200)
    assert study.choose_pick(dev, cells) == "imlkd+kd"
    best = dev["eer"]["imlkd+kd"]
    assert best["p_better"] > 0.95 and best["low"] <= best["mean"] <= best["high"]
    assert len(best["per_seed"]) == 3
    text = "\n".join(study.markdown_table("dev", dev, "kd"))
    assert "| imlkd+kd |" in text and "P(lower than kd)" in text


def test_overrides_are_yaml_on_the_command_line(study):
    assert study.as_overrides({"ig_mode": "online", "temperatures": [1.0, 2.0], "eta": 0.3}) == [
        "--ig_mode=online", "--temperatures=[1.0, 2.0]", "--eta=0.3"]
    assert study.cell_overrides(
        {"overrides": {"eta": 1.0}, "method_overrides": {"imlkd": {"eta": 0.5, "ig_steps": 8}}},
        {"method": "imlkd", "overrides": {"ig_steps": 4}}) == {"eta": 0.5, "ig_steps": 4}


def test_synthetic_dev_trials(study, tmp_path):
    from speechbrain_imlkd.data.trials import read_trials

    rows = ["ID,duration,wav,start,stop,spk_id"]
    for s in ("id00001", "id00002", "id00003"):
        for v in ("a", "b"):
            for seg in (0, 1):  # two rows of one file: one trial utterance
                rows.append(f"{s}{v}{seg},1,{tmp_path}/wav/{s}/{v}/1.wav,{seg},{seg + 1},{s}")
    (tmp_path / "dev.csv").write_text("\n".join(rows) + "\n")
    counts = study.dev_trials_from_csv(tmp_path / "dev.csv", tmp_path / "wav", tmp_path / "t.txt",
                                       per_target=2)
    trials = read_trials(tmp_path / "t.txt")
    assert counts == {"n_target": 3, "n_nontarget": 6} and len(trials.labels) == 9
    for label, e, t in zip(trials.labels, trials.enrol, trials.test):
        assert (e.split("/")[0] == t.split("/")[0]) == bool(label) and e != t
    with pytest.raises(ValueError, match="cannot build"):
        study.dev_trials_from_csv(tmp_path / "dev.csv", tmp_path / "wav", tmp_path / "u.txt",
                                  per_target=100)


def test_scoring_plan_pairs_the_pick_with_its_twin_and_the_others(study):
    cells = [{"name": "kd"}, {"name": "mlkd"}, {"name": "mlkd+kd"},
             {"name": "imlkd+kd", "twin": "mlkd+kd"}, {"name": "attr_kd+kd"}]
    assert study.scoring_plan("imlkd+kd", cells, ["kd", "mlkd"], ["mlkd"]) == (
        ["imlkd+kd", "kd", "mlkd", "mlkd+kd"], ["mlkd+kd", "mlkd"])
    # No twin: the others only; cells that did not run are never paired.
    assert study.scoring_plan("attr_kd+kd", cells, ["kd"], ["mlkd"]) == (["attr_kd+kd", "kd", "mlkd"], ["mlkd"])
    assert study.scoring_plan("attr_kd+kd", cells[:1] + cells[4:], ["kd"], ["mlkd"]) == (["attr_kd+kd", "kd"], [])
    # The pick is never paired with itself; no pick, no pairs.
    assert study.scoring_plan("mlkd", cells, ["kd"], ["mlkd"]) == (["mlkd", "kd"], [])
    assert study.scoring_plan(None, cells, ["kd"], ["mlkd"]) == (["kd"], [])
