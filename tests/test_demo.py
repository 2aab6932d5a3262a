"""The demo pipeline at toy size: every file of the results folder is there
and well formed, and the terminal gets one line per stage and the table
while everything else goes to demo.log (the full-size run is `make demo`)."""

import contextlib
import io
import json
import logging

import pytest

from speechbrain_imlkd.demo import main

METHODS = ["scratch", "kd", "emb_kd", "mlkd", "imlkd"]


# One screen of a terminal.
SCREEN_LINES = 50


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    handlers = list(logging.getLogger().handlers)
    terminal = io.StringIO()
    with contextlib.redirect_stdout(terminal):
        result = main(["--toy", "--seeds", "2", "--output", str(root / "out"), "--work", str(root / "work")])
    # The demo gives the root logger back as it found it.
    assert logging.getLogger().handlers == handlers
    return root / "out", result, terminal.getvalue()


def screen(text):
    """What a terminal shows: the last carriage-return state of each line."""
    return [line.split("\r")[-1].rstrip() for line in text.split("\n") if line.split("\r")[-1].strip()]


def test_terminal_shows_stages_and_table_only(demo_run):
    out, _, terminal = demo_run
    lines = screen(terminal)
    assert len(lines) <= SCREEN_LINES, "\n".join(lines)
    stages = ["1/6 corpus", "2/6 teacher", "3/6 IG precompute", "5/6 scoring", "6/6 analyses"]
    for stage in stages:
        assert sum(line.startswith(stage) for line in lines) == 1, stage
    students = [line for line in lines if line.startswith("4/6 student")]
    assert len(students) == 2 * len(METHODS)
    assert all("100%" in line and "EER" in line for line in students)
    assert "## EER over seeds" in terminal
    # SpeechBrain's logging went to the log file, not to the terminal.
    assert "speechbrain.core" not in terminal and "Going into epoch" not in terminal
    log = (out / "demo.log").read_text()
    assert "Going into epoch" in log and "speechbrain.core" in log


def test_results_json_and_md(demo_run):
    out, result, _ = demo_run
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))
    systems = [row["system"] for row in saved["systems"]]
    assert systems == ["teacher"] + METHODS
    for row in saved["systems"]:
        assert row["parameters"] > 0 and 0.0 <= row["eer"] <= 1.0
        assert 0.0 <= row["min_dcf_0.01"] <= 1.0 + 1e-9 and row["train_time_s"] > 0
    kd = next(r for r in saved["systems"] if r["system"] == "kd")
    assert kd["rel_eer_vs_kd"] in (0.0, None)
    # Two seeds per method, mean and std over them.
    assert set(saved["seeds"]) == set(METHODS)
    assert all(s["n_seeds"] == 2 and len(s["eers"]) == 2 for s in saved["seeds"].values())
    assert len(saved["runs"]) == 2 * len(METHODS)
    md = (out / "results.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in md
    assert "EER over seeds" in md


@pytest.mark.parametrize("name", ["det.png", "saliency_maps.png", "deletion_insertion.png"])
def test_figures_are_pngs(demo_run, name):
    data = (demo_run[0] / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_faithfulness_compares_teacher_and_students(demo_run):
    faith = json.loads((demo_run[0] / "faithfulness.json").read_text())
    table = faith["faithfulness"]
    assert {"teacher", "imlkd", "kd"} <= set(table)
    for per_duration in table.values():
        areas = per_duration["all"]
        assert -1.0 <= areas["deletion_area"] <= 1.0 and -1.0 <= areas["insertion_area"] <= 1.0


def test_bad_seed_count(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        main(["--toy", "--seeds", "9", "--output", str(tmp_path / "o"), "--work", str(tmp_path / "w")])
