"""Same machine, same command, two processes: the same bits.

A tiny pipeline (synthetic corpus, random teacher, ``train_kd.py`` with
``imlkd_ecapa.yaml``: data preparation, IG cache precomputation, training,
export, scoring) runs twice, in two separate Python processes with their own
output folders. Everything it produces must be identical: the corpus bytes,
the teacher's and the student's exported tensors (``torch.equal``), the IG
cache shards and the trial scores file, byte for byte. This is what the
README promises for one machine; across machines see the README's
reproducibility section.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb1" / "imlkd"
SAMPLES = Path("tests") / "tmp" / "samples"
TINY = [
    "--student_channels=8", "--student_attention_channels=4", "--emb_dim=12",
    "--teacher_emb_dim=16", "--batch_size=4", "--num_workers=0", "--seg_dur=2.0",
    "--durations=[0.5, 1.0]", "--temperatures=[1.0, 2.0]", "--ig_steps=2",
    "--number_of_epochs=2", "--dev_max_pairs=2000", "--noprogressbar", "--device=cpu",
]
TIMEOUT = 600


def pipeline_command(root):
    """Shell command of the whole tiny pipeline, writing under ``root``.

    Arguments
    ---------
    root : Path
        The run's folder.

    Returns
    -------
    str
    """
    py = shlex.quote(sys.executable)
    samples = root / SAMPLES
    train = [
        str(RECIPE / "train_kd.py"), str(RECIPE / "hparams" / "imlkd_ecapa.yaml"),
        f"--data_folder={samples / 'voxceleb1'}", f"--teacher_source={samples / 'teacher'}",
        f"--output_root={root / 'out'}", *TINY,
    ]
    return (f"{py} tests/recipe_samples.py {shlex.quote(str(root))} && "
            f"{py} " + " ".join(shlex.quote(a) for a in train))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The pipeline in two processes at once (one thread each)."""
    roots = [tmp_path_factory.mktemp(f"run{i}") for i in range(2)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    procs = [
        subprocess.Popen(pipeline_command(root), shell=True, cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for root in roots
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, out[-3000:]
    return roots


def load_tensors(path):
    """The tensors of a saved checkpoint, flattened to ``{name: tensor}``.

    Arguments
    ---------
    path : Path
        A ``torch.save`` file.

    Returns
    -------
    dict
    """
    out = {}

    def walk(obj, prefix):
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}[{i}]")

    walk(torch.load(path, map_location="cpu", weights_only=True), "")
    return out


def assert_same_tensors(a, b):
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta, f"{a} holds no tensors"
    assert ta.keys() == tb.keys(), f"{a.name}: different tensors"
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and torch.equal(ta[name], tb[name]), (
            f"{a.name}{name} differs between the two processes")


def files(root, pattern):
    return {p.relative_to(root).as_posix(): p for p in sorted(root.glob(pattern))}


def test_corpus_is_byte_identical(two_runs):
    a, b = (root / SAMPLES / "voxceleb1" for root in two_runs)
    wa, wb = files(a, "wav/*/*/*.wav"), files(b, "wav/*/*/*.wav")
    assert wa and wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].read_bytes() == wb[name].read_bytes(), f"{name} differs"
    assert (a / "veri_test2.txt").read_bytes() == (b / "veri_test2.txt").read_bytes()


@pytest.mark.parametrize("folder", [SAMPLES / "teacher", Path("out/imlkd/seed1986/exported")],
                         ids=["teacher", "student"])
def test_exported_weights_are_equal(two_runs, folder):
    a, b = (root / folder for root in two_runs)
    ca, cb = files(a, "*.ckpt"), files(b, "*.ckpt")
    assert "embedding_model.ckpt" in ca and ca.keys() == cb.keys()
    for name in ca:
        if name.startswith("label_encoder"):
            assert ca[name].read_bytes() == cb[name].read_bytes()
        else:
            assert_same_tensors(ca[name], cb[name])


def test_ig_cache_shards_are_equal(two_runs):
    a, b = (root / "out" / "ig_cache" for root in two_runs)
    sa, sb = files(a, "shard_*.pt"), files(b, "shard_*.pt")
    assert sa and sa.keys() == sb.keys()
    for name in sa:
        assert_same_tensors(sa[name], sb[name])


def test_scores_are_byte_identical(two_runs):
    a, b = (root / "out" / "imlkd" / "seed1986" / "eval" / "scores_veri_test2.txt"
            for root in two_runs)
    text = a.read_text()
    assert len(text.splitlines()) == 12
    assert a.read_bytes() == b.read_bytes()
