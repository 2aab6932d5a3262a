"""SpeechBrain-style recipe tests: every row of every ``tests/recipes/*.csv``.

SpeechBrain lists its recipes as CSV rows (``tests/recipes/<Dataset>.csv``)
and tests them with ``tests/utils/recipe_tests.py`` (in its repository, not
in the pip package): for each row with debug flags it runs, from the
repository root,

    PYTHONPATH=<cwd>/<script folder> python <Script_file> <Hparam_file> <test_debug_flags> --device=cpu

(adding ``--output_folder=tests/tmp/<row id>`` unless the flags set one),
stores stdout / stderr in the output folder, fails on a non-zero exit code,
then checks ``test_debug_checks``: ``file_exists=[a,b,...]`` (paths in the
output folder) and ``performance_check=[file, variable, threshold, epoch:
N]`` (the variable on the first line of the file that contains ``epoch:
N``, or on the last line for ``epoch: -1``). This module does the same, with
the same command and the same check semantics, from a scratch folder holding
a ``recipes`` link to the repository's and the generated sample data of
``tests/recipe_samples.py``, so that nothing is written into the repository.

Adding a recipe means adding its rows; this test picks them up. It also
checks that every recipe script and every runnable YAML has a row.
"""

import csv
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipe_samples import SAMPLES_DIR, make_samples  # noqa: E402

ROWS_DIR = REPO / "tests" / "recipes"
COLUMNS = ["Task", "Dataset", "Script_file", "Hparam_file", "Data_prep_file", "Readme_file",
           "Result_url", "HF_repo", "test_debug_flags", "test_debug_checks"]
#: Appended to every command, as SpeechBrain's runner does.
RUN_OPTS = "--device=cpu"
#: Default output folder of a row, relative to the run folder.
TMP = "tests/tmp"
#: Seconds one row may take before the test fails.
ROW_TIMEOUT = 600
# SpeechBrain's patterns (tests/utils/recipe_tests.py).
OUTPUT_FOLDER = re.compile(r"--output_folder\s*=?\s*([^\s']+|'[^']*')")
FILE_EXISTS = re.compile(r"file_exists=\[(.*?)\]")
PERFORMANCE = re.compile(r"performance_check=\[(.*?)\]")
SAMPLE_REF = re.compile(re.escape(SAMPLES_DIR.as_posix()) + r"/([\w.-]+)")


def load_rows(folder=ROWS_DIR):
    """Every row with debug flags, keyed ``<csv stem>_row_<line number>``.

    Arguments
    ---------
    folder : Path
        The folder of row files (every ``*.csv`` in it).

    Returns
    -------
    list of (str, dict)
    """
    rows = []
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=",", skipinitialspace=True)
            if reader.fieldnames != COLUMNS:
                raise ValueError(f"{path}: columns {reader.fieldnames}, expected {COLUMNS}")
            for i, row in enumerate(reader):
                if None in row or any(v is None for v in row.values()):
                    raise ValueError(f"{path} line {i + 2}: wrong number of fields")
                if row["test_debug_flags"].strip():
                    rows.append((f"{path.stem}_row_{i + 2:02d}", row))
    return rows


ROWS = load_rows()


def output_folder(recipe_id, flags):
    """The output folder of a row: ``--output_folder`` of its flags, or ``tests/tmp/<id>``.

    Arguments
    ---------
    recipe_id : str
        The row id.
    flags : str
        Its debug flags.

    Returns
    -------
    (str, bool)
        The folder and whether the flags set it.
    """
    match = OUTPUT_FOLDER.search(flags)
    if match:
        return match.group(1).strip("'"), True
    return os.path.join(TMP, recipe_id), False


def row_command(row, recipe_id, cwd):
    """The shell command SpeechBrain's runner builds for a row.

    Arguments
    ---------
    row : dict
        The CSV row.
    recipe_id : str
        Its id.
    cwd : str or Path
        The folder it runs from.

    Returns
    -------
    (str, str)
        The command and the output folder.
    """
    script = row["Script_file"].strip()
    flags = row["test_debug_flags"].strip()
    out, given = output_folder(recipe_id, flags)
    cmd = (f"PYTHONPATH={shlex.quote(os.path.join(str(cwd), os.path.dirname(script)))} "
           f"{shlex.quote(sys.executable)} {script} {row['Hparam_file'].strip()} {flags} {RUN_OPTS}")
    if not given:
        cmd += f" --output_folder={out}"
    return cmd, out


def missing_files(check, folder):
    """Files of ``file_exists=[...]`` that are not in ``folder``.

    Arguments
    ---------
    check : str
        The row's checks.
    folder : Path
        Its output folder.

    Returns
    -------
    list of str
    """
    match = FILE_EXISTS.search(check)
    if match is None:
        return []
    return [name for name in match.group(1).split(",") if not (folder / name).exists()]


def extract_value(line, key):
    """The number after ``<key>:`` in a log line (SpeechBrain's rule), or None.

    Arguments
    ---------
    line : str
        A line such as ``epoch: 1 - train loss: 4.71e-01``.
    key : str
        The variable.

    Returns
    -------
    str or None
    """
    pattern = r"(?P<key>{})\s*:\s*(?P<value>[-+]?\d*\.\d+([eE][-+]?\d+)?)".format(re.escape(key))
    match = re.search(pattern, line)
    return match.group("value") if match else None


def check_threshold(threshold, value):
    """``value`` against ``==x``, ``>=x``, ``>x``, ``<=x`` or ``<x``.

    Arguments
    ---------
    threshold : str
        The condition.
    value : float
        The value.

    Returns
    -------
    bool
    """
    limit = float(threshold.strip().replace("=", "").replace(">", "").replace("<", ""))
    for op, ok in (("==", value == limit), (">=", value >= limit), (">", value > limit),
                   ("<=", value <= limit), ("<", value < limit)):
        if op in threshold:
            return ok
    raise ValueError(f"threshold {threshold!r} has no comparison")


def performance_problem(check, folder):
    """What is wrong with ``performance_check=[...]``, or None when it holds.

    Arguments
    ---------
    check : str
        The row's checks.
    folder : Path
        Its output folder.

    Returns
    -------
    str or None
    """
    match = PERFORMANCE.search(check)
    if match is None:
        return None
    filename, variable, threshold, epoch = (p.strip() for p in match.group(1).split(","))
    path = folder / filename
    if not path.is_file():
        return f"{path} does not exist"
    lines = path.read_text().splitlines()
    selected = [line for line in lines if epoch in line]
    if int(epoch.split(":")[-1]) == -1:
        selected.append([line for line in lines if line.strip()][-1])
    if not selected:
        return f"no line of {path} contains {epoch!r}"
    value = extract_value(selected[0], variable)
    if value is None:
        return f"{path} has no numeric {variable!r} on {selected[0]!r}"
    if not check_threshold(threshold, float(value)):
        return f"{variable} = {value} in {path} violates {threshold}"
    return None


def test_row_helpers_detect_failures(tmp_path):
    (tmp_path / "train_log.txt").write_text(
        "epoch: 1, lr: 1.00e-03 - train loss: 4.71e-01, valid EER: 2.50e-01\n"
        "epoch: 2, lr: 1.00e-03 - train loss: nan, valid EER: 2.50e-01\n")
    ok = "file_exists=[train_log.txt] performance_check=[train_log.txt, train loss, <1, epoch: 1]"
    assert missing_files(ok, tmp_path) == [] and performance_problem(ok, tmp_path) is None
    assert missing_files("file_exists=[train_log.txt,a/b.ckpt]", tmp_path) == ["a/b.ckpt"]
    assert "violates" in performance_problem(
        "performance_check=[train_log.txt, train loss, >1, epoch: 1]", tmp_path)
    # A NaN loss is not a number: the check fails.
    assert "no numeric" in performance_problem(
        "performance_check=[train_log.txt, train loss, <1, epoch: 2]", tmp_path)
    assert performance_problem(
        "performance_check=[train_log.txt, valid EER, <=0.25, epoch: -1]", tmp_path) is None
    assert "does not exist" in performance_problem(
        "performance_check=[log.txt, loss, <1, epoch: 1]", tmp_path)
    cmd, out = row_command({"Script_file": "recipes/X/s.py", "Hparam_file": "recipes/X/h.yaml",
                            "test_debug_flags": "--a=1"}, "X_row_02", "/w")
    assert cmd.endswith("recipes/X/s.py recipes/X/h.yaml --a=1 --device=cpu "
                        "--output_folder=tests/tmp/X_row_02")
    assert cmd.startswith("PYTHONPATH=/w/recipes/X ") and out == "tests/tmp/X_row_02"


def extends_targets(path):
    """The YAMLs that ``path`` extends (``extends: a.yaml`` or ``[a.yaml, b.yaml]``).

    Arguments
    ---------
    path : Path
        A recipe YAML.

    Returns
    -------
    list of Path
    """
    for line in path.read_text().splitlines():
        m = re.match(r"extends:\s*(.+)$", line)
        if m:
            names = [n.strip() for n in m.group(1).strip().strip("[]").split(",") if n.strip()]
            return [(path.parent / n).resolve() for n in names]
    return []


def runnable_yaml(path, all_yamls):
    """Whether a recipe YAML is meant to be run (not only a shared base).

    A base is extended by other YAMLs and extends none itself (e.g.
    ``kd_common.yaml``); a method file that another extends is still
    runnable.

    Arguments
    ---------
    path : Path
        A recipe YAML.
    all_yamls : list of Path
        Every recipe YAML (bases may be shared across recipe folders).

    Returns
    -------
    bool
    """
    extended = {t for other in all_yamls for t in extends_targets(other)}
    return path.resolve() not in extended or bool(extends_targets(path))


def test_every_recipe_has_a_row():
    scripts = {r["Script_file"].strip() for _, r in ROWS}
    hparams = {r["Hparam_file"].strip() for _, r in ROWS}
    for _, row in ROWS:
        for column in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
            value = row[column].strip()
            assert value and (REPO / value).is_file(), f"{column} {value!r} does not exist"
    for script in sorted(REPO.glob("recipes/*/*/*.py")):
        assert script.relative_to(REPO).as_posix() in scripts, f"no row runs {script}"
    yamls = sorted(REPO.glob("recipes/*/*/hparams/*.yaml"))
    for yaml_file in yamls:
        if runnable_yaml(yaml_file, yamls):
            assert yaml_file.relative_to(REPO).as_posix() in hparams, f"no row uses {yaml_file}"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A scratch folder that looks like the repository root to the rows."""
    root = tmp_path_factory.mktemp("recipe_rows")
    (root / "recipes").symlink_to(REPO / "recipes", target_is_directory=True)
    needed = {m.group(1) for _, row in ROWS for m in SAMPLE_REF.finditer(row["test_debug_flags"])}
    make_samples(root, sorted(needed))
    return root


@pytest.mark.parametrize("recipe_id,row", ROWS, ids=[recipe_id for recipe_id, _ in ROWS])
def test_recipe_row(recipe_id, row, run_folder):
    cmd, out = row_command(row, recipe_id, run_folder)
    folder = run_folder / out
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    start = time.time()
    with open(folder / "stdout.txt", "w") as fout, open(folder / "stderr.txt", "w") as ferr:
        proc = subprocess.run(cmd, shell=True, cwd=run_folder, env=env, stdout=fout, stderr=ferr,
                              timeout=ROW_TIMEOUT)
    seconds = time.time() - start
    assert proc.returncode == 0, (
        f"{recipe_id} failed ({seconds:.0f} s): {cmd}\n"
        + (folder / "stderr.txt").read_text()[-3000:])
    check = row["test_debug_checks"].strip()
    assert missing_files(check, folder) == [], f"{recipe_id}: missing outputs in {folder}"
    problem = performance_problem(check, folder)
    assert problem is None, f"{recipe_id}: {problem}"
