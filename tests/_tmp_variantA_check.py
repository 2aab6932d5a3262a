"""End to end: train_kd.py trains every method for a few steps on a tiny
synthetic corpus with a tiny teacher, resumes from its checkpoint, exports
and scores the student, and runs under torchrun with two gloo processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from speechbrain.dataio.encoder import CategoricalEncoder

from speechbrain_imlkd.data.synthetic import generate_corpus
from recipe_samples import VOXCELEB1_CORPUS
from speechbrain_imlkd.export import export_model
from speechbrain_imlkd.models import build_classifier, build_ecapa

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb1" / "imlkd"
sys.path.insert(0, str(RECIPE))

import train_kd  # noqa: E402

# Tiny student and teacher: the student has another embedding size, so the
# learned projection is exercised.
TINY = [
    "--student_channels=8",
    "--student_attention_channels=4",
    "--emb_dim=12",
    "--teacher_emb_dim=16",
    "--batch_size=4",
    "--num_workers=0",
    "--seg_dur=2.0",
    "--durations=[0.5, 1.0]",
    "--temperatures=[1.0, 2.0]",
    "--dev_max_pairs=2000",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_corpus")
    meta = generate_corpus(root, **VOXCELEB1_CORPUS)
    return root, meta


@pytest.fixture(scope="module")
def teacher_dir(corpus, tmp_path_factory):
    """A random tiny teacher whose label encoder knows the training speakers."""
    _, meta = corpus
    torch.manual_seed(0)
    train_speakers = meta["speakers"]["train"]
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(train_speakers)
    folder = tmp_path_factory.mktemp("teacher")
    export_model(
        folder,
        build_ecapa(16, lin_neurons=16, attention_channels=8),
        classifier=build_classifier(len(train_speakers), lin_neurons=16),
        label_encoder=encoder,
    )
    return folder


def run(method, corpus, teacher_dir, out, *extra):
    root, _ = corpus
    argv = [
        str(RECIPE / "hparams" / f"{method}_ecapa.yaml"),
        f"--data_folder={root}",
        f"--teacher_source={teacher_dir}",
        f"--output_root={out}",
        "--number_of_epochs=1",
        *TINY,
        *extra,
    ]
    return train_kd.main(argv)


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    return tmp_path_factory.mktemp("kd_runs")


@pytest.mark.parametrize(
    "method,extra",
    [
        ("scratch", []),
        ("kd", []),
        ("emb_kd", []),
        ("mlkd", []),
        ("imlkd", ["--ig_steps=2", "--ig_mode=cached"]),
        ("imlkd", ["--ig_steps=2", "--ig_mode=online", "--seed=7"]),
    ],
    ids=["scratch", "kd", "emb_kd", "mlkd", "imlkd-cached", "imlkd-online"],
)
def test_every_method_trains_exports_and_scores(method, extra, corpus, teacher_dir, shared_out):
    results = run(method, corpus, teacher_dir, shared_out, *extra)
    seed = extra[-1].split("=")[1] if extra and extra[-1].startswith("--seed") else "1986"
    folder = shared_out / method / f"seed{seed}"
    log = (folder / "train_log.txt").read_text()
    assert "epoch: 1" in log and "valid EER" in log
    # The method's own loss terms are logged separately.
    expected = {"scratch": "train cls", "kd": "train kd", "emb_kd": "train emb",
                "mlkd": "train batch", "imlkd": "train class"}[method]
    assert expected in log
    assert (folder / "exported" / "hyperparams.yaml").is_file()
    trial = results["trials"]["veri_test2"]
    assert trial["n_trials"] == 12 and 0.0 <= trial["eer"] <= 1.0
    saved = json.loads((folder / "eval" / "results.json").read_text())
    assert saved["parameters"] == results["parameters"] > 0
    if "--ig_mode=cached" in extra:
        assert (shared_out / "ig_cache" / "index.json").is_file()


def test_resume_continues_from_checkpoint(corpus, teacher_dir, tmp_path):
    run("kd", corpus, teacher_dir, tmp_path, "--evaluate_after_training=False")
    folder = tmp_path / "kd" / "seed1986"
    ckpts = sorted((folder / "save").glob("CKPT+*"))
    assert len(ckpts) == 1
    # A second run with a larger budget picks up after epoch 1 instead of
    # starting again.
    run("kd", corpus, teacher_dir, tmp_path, "--evaluate_after_training=False",
        "--number_of_epochs=2")
    log = (folder / "train_log.txt").read_text()
    assert log.count("epoch: 1,") == 1 and log.count("epoch: 2,") == 1


def test_missing_teacher_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(Exception, match="nowhere"):
        run("kd", corpus, tmp_path / "nowhere", tmp_path)


def test_distributed_two_gloo_processes(corpus, teacher_dir, tmp_path):
    root, _ = corpus
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node=2", str(RECIPE / "train_kd.py"),
        str(RECIPE / "hparams" / "imlkd_ecapa.yaml"),
        f"--data_folder={root}", f"--teacher_source={teacher_dir}",
        f"--output_root={tmp_path}", "--number_of_epochs=1",
        "--distributed_backend=gloo", "--ig_steps=2", *TINY,
    ]
    proc = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "imlkd" / "seed1986"
    assert len(list((folder / "save").glob("CKPT+*"))) == 1
    assert (folder / "exported" / "embedding_model.ckpt").is_file()


def test_debug_flag_runs_a_short_pass(corpus, teacher_dir, tmp_path):
    results = run("imlkd", corpus, teacher_dir, tmp_path, "--debug", "--ig_mode=online", "--ig_steps=2")
    assert results["trials"]["veri_test2"]["n_trials"] == 12
    # SpeechBrain's debug mode cuts each epoch to a couple of batches.
    folder = tmp_path / "imlkd" / "seed1986"
    assert "epoch: 1," in (folder / "train_log.txt").read_text()
    assert (folder / "exported" / "embedding_model.ckpt").is_file()
