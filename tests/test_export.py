"""Tests for speechbrain_imlkd.export: hub-layout folders and their reloading.

A tiny teacher is trained in-process by the recipe
(``recipes/VoxCeleb1/imlkd/train_teacher.py``, ``--debug``) on a tiny
synthetic corpus; its exported folder must reload, offline and bit-exactly,
through :func:`load_teacher`, ``EncoderClassifier.from_hparams`` and
``SpeakerRecognition``.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.speaker import EncoderClassifier, SpeakerRecognition
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_imlkd.data.synthetic import generate_corpus
from speechbrain_imlkd.export import export_model, main
from speechbrain_imlkd.models import build_classifier, build_ecapa, count_parameters
from speechbrain_imlkd.teacher import load_teacher

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb1" / "imlkd"
TINY = [
    "--channels=16",
    "--lin_neurons=16",
    "--attention_channels=8",
    "--batch_size=4",
    "--seg_dur=0.5",
    "--split_ratio=[75,25]",
    "--device=cpu",
]

# The hub's hyperparams.yaml (speechbrain/spkrec-ecapa-voxceleb), shrunk to a
# tiny width; it names the hub in pretrained_path, as the real one does.
HUB_YAML = """\
# ############################################################################
# Model: ECAPA big for Speaker verification
# ############################################################################

# Feature parameters
n_mels: 80

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-ecapa-voxceleb

# Output parameters
out_n_neurons: {n_out}

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [16, 16, 16, 16, 48]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 8
    lin_neurons: 16

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 16
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder


pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


@pytest.fixture(scope="module", autouse=True)
def offline_single_thread():
    """No test here may reach the network; tiny models run on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
    torch.set_num_threads(threads)


def _load_recipe():
    spec = importlib.util.spec_from_file_location(
        "imlkd_train_teacher", RECIPE_DIR / "train_teacher.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Trains a tiny teacher with the recipe (--debug) and exports it."""
    root = tmp_path_factory.mktemp("export_run")
    generate_corpus(
        root / "data",
        n_train_speakers=4,
        n_test_speakers=2,
        sessions_per_speaker=2,
        utterances_per_session=2,
        min_duration=1.0,
        max_duration=1.5,
        n_trials=8,
        seed=5,
    )
    out = root / "out"
    brain, folder = _load_recipe().main(
        [
            str(RECIPE_DIR / "hparams" / "train_teacher_ecapa.yaml"),
            f"--data_folder={root / 'data'}",
            f"--output_folder={out}",
            "--number_of_epochs=1",
            "--evaluate=False",
            "--debug",
        ]
        + TINY
    )
    wav_paths = sorted((root / "data" / "wav").rglob("*.wav"))[:3]
    wavs = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in wav_paths]
    n = min(len(w) for w in wavs)
    batch = torch.stack([w[:n] for w in wavs])
    lens = torch.ones(len(wavs))
    mods = brain.modules
    mods.eval()
    with torch.no_grad():
        feats = mods.mean_var_norm(mods.compute_features(batch), lens)
        reference = mods.embedding_model(feats, lens).squeeze(1)
    return dict(
        root=root,
        out=out,
        brain=brain,
        folder=folder,
        wav_paths=wav_paths,
        wavs=batch,
        lens=lens,
        reference=reference,
    )


def test_exported_files(run):
    folder = run["folder"]
    assert folder == run["out"] / "exported"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "README.md",
        "classifier.ckpt",
        "embedding_model.ckpt",
        "hyperparams.yaml",
        "label_encoder.ckpt",
        "label_encoder.txt",
    ]
    yaml = (folder / "hyperparams.yaml").read_text()
    # Nothing may point at a hub or at an absolute path.
    assert "pretrained_path" not in yaml and "paths:" not in yaml
    card = (folder / "README.md").read_text()
    n_params = count_parameters(run["brain"].modules.embedding_model)
    assert f"{n_params:,}" in card
    assert "Training data: VoxCeleb1-layout corpus" in card
    assert "EER: not measured" in card


def test_load_teacher_bit_identical(run, tmp_path):
    teacher = load_teacher(run["folder"], tmp_path / "t")
    emb = teacher.embed_wavs(run["wavs"], run["lens"])
    assert torch.equal(emb, run["reference"])
    assert teacher.set_training_speakers(teacher.label_encoder, mode="label") == "label"


def test_encoder_classifier_from_hparams(run, tmp_path):
    # Plain SpeechBrain, no overrides: the folder's own files must be used.
    model = EncoderClassifier.from_hparams(
        source=str(run["folder"]), savedir=str(tmp_path / "ec")
    )
    emb = model.encode_batch(run["wavs"], run["lens"]).squeeze(1)
    assert torch.equal(emb, run["reference"])
    _, _, _, labels = model.classify_batch(run["wavs"], run["lens"])
    assert set(labels) <= set(model.hparams.label_encoder.lab2ind)


def test_verify_files(run, tmp_path):
    model = SpeakerRecognition.from_hparams(
        source=str(run["folder"]), savedir=str(tmp_path / "sr")
    )
    a, b = (str(p) for p in run["wav_paths"][:2])
    score, decision = model.verify_files(a, b)
    assert -1.0 <= float(score) <= 1.0
    assert decision.dtype == torch.bool
    same, same_decision = model.verify_files(a, a)
    assert float(same) == pytest.approx(1.0, abs=1e-5) and bool(same_decision)


def _hub_folder(path, emb_model, clf, encoder, emb_norm):
    path.mkdir(parents=True)
    (path / "hyperparams.yaml").write_text(HUB_YAML.format(n_out=len(encoder)))
    torch.save(emb_model.state_dict(), path / "embedding_model.ckpt")
    torch.save(clf.state_dict(), path / "classifier.ckpt")
    emb_norm._save(path / "mean_var_norm_emb.ckpt")
    encoder.save(path / "label_encoder.txt")
    return path


def test_real_hub_layout_loads_offline(run, tmp_path):
    mods = run["brain"].modules
    emb_norm = InputNormalization(norm_type="global", std_norm=False)
    emb_norm(run["reference"].unsqueeze(1), torch.ones(len(run["lens"])))
    encoder = CategoricalEncoder()
    encoder.load(run["folder"] / "label_encoder.txt")
    folder = _hub_folder(
        tmp_path / "hub", mods.embedding_model, mods.classifier, encoder, emb_norm
    )
    teacher = load_teacher(folder, tmp_path / "save")
    assert torch.equal(teacher.embed_wavs(run["wavs"], run["lens"]), run["reference"])
    assert teacher.label_encoder.lab2ind == encoder.lab2ind
    loaded_norm = teacher.interface.mods.mean_var_norm_emb
    assert torch.equal(loaded_norm.glob_mean, emb_norm.glob_mean)
    # The hub file is untouched: only the load-time override redirects it.
    assert "pretrained_path: speechbrain/spkrec-ecapa-voxceleb" in (
        folder / "hyperparams.yaml"
    ).read_text()
    # Without the optional files the hub layout still loads (centroids then).
    (folder / "classifier.ckpt").unlink()
    (folder / "label_encoder.txt").unlink()
    bare = load_teacher(folder, tmp_path / "save2")
    assert bare.classifier is None and bare.label_encoder is None


def test_mean_var_norm_emb_and_reexport(run, tmp_path):
    mods = run["brain"].modules
    emb_norm = InputNormalization(norm_type="global", std_norm=False)
    emb_norm(run["reference"].unsqueeze(1), torch.ones(len(run["lens"])))
    folder = shutil.copytree(run["folder"], tmp_path / "copy")
    export_model(folder, mods.embedding_model, mean_var_norm_emb=emb_norm)
    # Optional files of the earlier export are gone.
    assert not (folder / "classifier.ckpt").exists()
    assert not (folder / "label_encoder.txt").exists()
    model = SpeakerRecognition.from_hparams(source=str(folder), savedir=str(tmp_path / "s"))
    normed = model.encode_batch(run["wavs"], run["lens"], normalize=True).squeeze(1)
    assert torch.allclose(normed, run["reference"] - emb_norm.glob_mean, atol=1e-6)
    teacher = load_teacher(folder, tmp_path / "t")
    assert teacher.classifier is None


def test_cli_from_checkpoint(run, tmp_path):
    mods = run["brain"].modules
    ckpt_dir = tmp_path / "save"
    Checkpointer(
        ckpt_dir,
        recoverables={"embedding_model": mods.embedding_model, "classifier": mods.classifier},
    ).save_checkpoint()
    hparams = run["out"] / "hyperparams.yaml"
    out = tmp_path / "cli"
    main([str(hparams), "--checkpoint", str(ckpt_dir), "--output", str(out),
          "--eer", "3.25", "--eer-trials", "veri_test2"])
    teacher = load_teacher(out, tmp_path / "t")
    assert torch.equal(teacher.embed_wavs(run["wavs"], run["lens"]), run["reference"])
    assert "EER: 3.25% on veri_test2" in (out / "README.md").read_text()
    assert (out / "label_encoder.txt").read_text() == (
        run["folder"] / "label_encoder.txt"
    ).read_text()
    # A checkpoint that does not fit the hparams names the file (the recipe
    # yaml itself, with overrides: the saved copy has its references resolved).
    overrides = (
        f"{{data_folder: {run['root'] / 'data'}, output_folder: {tmp_path / 'o'}, "
        "channels: 32, lin_neurons: 16, attention_channels: 8}"
    )
    with pytest.raises(ValueError, match="embedding_model.ckpt does not fit"):
        main([str(RECIPE_DIR / "hparams" / "train_teacher_ecapa.yaml"),
              "--checkpoint", str(ckpt_dir), "--output", str(tmp_path / "bad"),
              "--overrides", overrides])
    assert not (tmp_path / "bad").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="CKPT"):
        main([str(hparams), "--checkpoint", str(tmp_path / "empty"), "--output",
              str(tmp_path / "bad")])


def test_export_errors(tmp_path):
    emb = build_ecapa(16, lin_neurons=8, attention_channels=8)
    clf = build_classifier(3, lin_neurons=8)
    enc = CategoricalEncoder()
    enc.update_from_iterable(["a", "b"])
    with pytest.raises(ValueError, match="attention_channels=128"):
        export_model(tmp_path / "a", emb, model_hparams=dict(channels=16, lin_neurons=8))
    with pytest.raises(ValueError, match="unknown key"):
        export_model(tmp_path / "a", emb, model_hparams=dict(width=16))
    with pytest.raises(ValueError, match="n_mels=40"):
        export_model(tmp_path / "a", emb, n_mels=40)
    with pytest.raises(ValueError, match="classifier takes 16-dim"):
        export_model(tmp_path / "a", emb, classifier=build_classifier(3, lin_neurons=16))
    with pytest.raises(ValueError, match="2 labels but the classifier has 3"):
        export_model(tmp_path / "a", emb, classifier=clf, label_encoder=enc)
    with pytest.raises(FileNotFoundError, match="label encoder file"):
        export_model(tmp_path / "a", emb, label_encoder=tmp_path / "missing.txt")
    with pytest.raises(TypeError, match="ECAPA_TDNN"):
        export_model(tmp_path / "a", torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Classifier"):
        export_model(tmp_path / "a", emb, classifier=torch.nn.Linear(8, 3))
    with pytest.raises(ValueError, match="card: unknown key"):
        export_model(tmp_path / "a", emb, card={"accuracy": 1.0})
    # Nothing was written by the failed calls.
    assert not (tmp_path / "a").exists()
