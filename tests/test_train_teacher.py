"""Tests of the teacher recipe (recipes/VoxCeleb1/imlkd/train_teacher.py).

The recipe runs as a subprocess, as a user would run it: two tiny epochs on
a tiny synthetic corpus, then again with a higher epoch limit to check that
it resumes from its checkpoint instead of starting over. The recipe's data
pipelines (:mod:`speechbrain_imlkd.data.dataset`) are tested at the end.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_imlkd.data.audio import AudioError
from speechbrain_imlkd.data.dataset import (
    train_dev_datasets,
    utterance_dataset,
    write_toy_csvs,
)
from speechbrain_imlkd.data.synthetic import generate_corpus
from speechbrain_imlkd.teacher import load_teacher

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb1" / "imlkd"
HPARAMS = RECIPE_DIR / "hparams" / "train_teacher_ecapa.yaml"
TINY = [
    "--channels=16",
    "--lin_neurons=16",
    "--attention_channels=8",
    "--batch_size=4",
    "--seg_dur=0.5",
    "--split_ratio=[75,25]",
    "--device=cpu",
    "--eval_batch_size=4",
]
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe_corpus") / "data"
    generate_corpus(
        root,
        n_train_speakers=4,
        n_test_speakers=2,
        sessions_per_speaker=2,
        utterances_per_session=2,
        min_duration=1.0,
        max_duration=1.5,
        n_trials=8,
        seed=7,
    )
    return root


def _run_recipe(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(RECIPE_DIR / "train_teacher.py"), str(HPARAMS)] + args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _epochs_logged(out):
    text = (out / "train_log.txt").read_text()
    return [int(e) for e in re.findall(r"^epoch: (\d+)", text, re.MULTILINE)]


def test_train_resume_export(corpus, tmp_path):
    out = tmp_path / "out"
    common = [f"--data_folder={corpus}", f"--output_folder={out}"] + TINY
    _run_recipe(common + ["--number_of_epochs=2"], cwd=tmp_path)

    assert _epochs_logged(out) == [1, 2]
    ckpts = sorted((out / "save").glob("CKPT+*"))
    assert ckpts, "no checkpoint saved"
    for name in ("embedding_model.ckpt", "classifier.ckpt", "optimizer.ckpt", "counter.ckpt"):
        assert (ckpts[-1] / name).is_file(), name
    assert (out / "save" / "label_encoder.txt").is_file()

    exported = out / "exported"
    teacher = load_teacher(exported, tmp_path / "teacher")
    assert teacher.embedding_dim == 16 and len(teacher.label_encoder) == 4
    results = json.loads((out / "eval" / "results.json").read_text())
    eer = results["trials"]["veri_test2"]["eer"]
    assert 0.0 <= eer <= 1.0
    assert f"EER: {100 * eer:.2f}% on veri_test2" in (exported / "README.md").read_text()

    # Same command with a higher limit: resumes after epoch 2, runs epoch 3.
    proc = _run_recipe(common + ["--number_of_epochs=3"], cwd=tmp_path)
    assert "Loading a checkpoint from" in proc.stdout + proc.stderr
    # A restart from scratch would have logged epochs 1 and 2 again.
    assert _epochs_logged(out) == [1, 2, 3]


def test_bad_data_folder_is_named(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "imlkd_train_teacher_err", RECIPE_DIR / "train_teacher.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    missing = tmp_path / "no_corpus"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        recipe.main(
            [str(HPARAMS), f"--data_folder={missing}", f"--output_folder={tmp_path / 'o'}"]
            + TINY
        )


# ---------------------------------------------------------------------- #
# The recipe's data pipelines (speechbrain_imlkd.data.dataset)
# ---------------------------------------------------------------------- #
def _toy(tmp_path):
    train_csv, dev_csv = write_toy_csvs(tmp_path / "toy", n_speakers=3, seconds=0.5)
    return train_csv, dev_csv, tmp_path / "toy" / "label_encoder.txt"


def test_datasets_provide_segments_and_labels(tmp_path):
    train_csv, dev_csv, enc_file = _toy(tmp_path)
    rows = train_csv.read_text().splitlines()
    # Second row: only samples 1000:3000 of its file.
    cells = rows[2].split(",")
    cells[3], cells[4] = "1000", "3000"
    rows[2] = ",".join(cells)
    train_csv.write_text("\n".join(rows) + "\n")
    train, dev, enc = train_dev_datasets(train_csv, dev_csv, enc_file)
    item = train[1]
    full, _ = sf.read(cells[2], dtype="float32")
    assert torch.equal(item["sig"], torch.from_numpy(full[1000:3000]))
    assert enc.decode_ndim(int(item["spk_id_encoded"])) == item["spk_id"]
    assert enc_file.is_file()
    # A second call reuses the saved encoder (same indices on resume).
    _, _, again = train_dev_datasets(train_csv, dev_csv, enc_file)
    assert again.lab2ind == enc.lab2ind
    test = utterance_dataset(dev_csv)
    assert sorted(test[0]) == ["id", "sig"] and test[0]["sig"].shape == (8000,)


def test_random_chunks_stay_inside_segment(tmp_path):
    train_csv, dev_csv, enc_file = _toy(tmp_path)
    train, dev, _ = train_dev_datasets(
        train_csv, dev_csv, enc_file, random_chunk=True, chunk_seconds=0.1
    )
    full = train[0]["sig"]
    assert full.shape == (1600,)
    path = train_csv.read_text().splitlines()[1].split(",")[2]
    wav = torch.from_numpy(sf.read(path, dtype="float32")[0])
    starts = set()
    for _ in range(5):
        chunk = train[0]["sig"]
        start = next(i for i in range(8000 - 1600 + 1) if torch.equal(wav[i : i + 1600], chunk))
        starts.add(start)
    assert len(starts) > 1, "chunks are not redrawn"
    assert dev[0]["sig"].shape == (8000,)
    with pytest.raises(ValueError, match="chunk_seconds"):
        train_dev_datasets(train_csv, dev_csv, enc_file, random_chunk=True, chunk_seconds=0)


def test_csv_errors_name_the_file(tmp_path):
    train_csv, dev_csv, enc_file = _toy(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        train_dev_datasets(tmp_path / "missing.csv", dev_csv, enc_file)
    bad = tmp_path / "nocol.csv"
    bad.write_text("ID,duration,wav,start,stop\nx,1,a.wav,0,10\n")
    with pytest.raises(ValueError, match=r"nocol.csv: missing column\(s\) \['spk_id'\]"):
        train_dev_datasets(bad, dev_csv, enc_file)
    empty = tmp_path / "empty.csv"
    empty.write_text("ID,duration,wav,start,stop,spk_id\n")
    with pytest.raises(ValueError, match="empty.csv: no data rows"):
        train_dev_datasets(train_csv, empty, enc_file)
    stranger = tmp_path / "dev_other.csv"
    stranger.write_text(
        dev_csv.read_text().replace("id00003", "id09999")
    )
    with pytest.raises(ValueError, match="dev_other.csv: 1 dev speaker"):
        train_dev_datasets(train_csv, stranger, tmp_path / "enc2.txt")
    # A saved encoder from another training set is refused, not silently used.
    small_train = tmp_path / "small_train.csv"
    lines = train_csv.read_text().splitlines()
    small_train.write_text("\n".join(l for l in lines if "id00003" not in l) + "\n")
    train_dev_datasets(small_train, small_train, tmp_path / "enc3.txt")
    with pytest.raises(ValueError, match="enc3.txt: saved label encoder lacks 1"):
        train_dev_datasets(train_csv, dev_csv, tmp_path / "enc3.txt")


def test_bad_rows_and_audio_name_the_culprit(tmp_path):
    train_csv, dev_csv, enc_file = _toy(tmp_path)
    lines = train_csv.read_text().splitlines()
    cells = lines[1].split(",")
    cells[3] = "zero"
    lines[1] = ",".join(cells)
    train_csv.write_text("\n".join(lines) + "\n")
    train, _, _ = train_dev_datasets(train_csv, dev_csv, enc_file)
    with pytest.raises(ValueError, match=r"train.csv: row 'id00001--0' has non-integer"):
        train[0]
    # Audio at the wrong sample rate: the file is named.
    wav_8k = tmp_path / "toy" / "id00002.wav"
    sf.write(wav_8k, np.zeros(4000, dtype="float32"), 8000)
    with pytest.raises(AudioError, match=r"id00002.wav: sample rate 8000 Hz"):
        train[1]
    # A segment beyond the end of its file.
    lines = dev_csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[4] = "99999"
    lines[3] = ",".join(cells)
    dev_csv.write_text("\n".join(lines) + "\n")
    _, dev, _ = train_dev_datasets(train_csv, dev_csv, tmp_path / "e.txt")
    with pytest.raises(AudioError, match="id00003.wav: segment"):
        dev[2]
