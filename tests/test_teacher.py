"""Tests for speechbrain_imlkd.teacher: loading, freezing, posteriors.

A tiny ECAPA teacher (C=16) is trained for a few dozen full-batch steps on a
tiny synthetic corpus until it classifies its training segments perfectly;
posterior tests rely on that.
"""

import shutil

import pytest
import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

from speechbrain_imlkd.data.dataset import train_dev_datasets
from speechbrain_imlkd.data.synthetic import generate_corpus
from speechbrain_imlkd.data.voxceleb import prepare_voxceleb1
from speechbrain_imlkd.export import export_model
from speechbrain_imlkd.models import build_classifier, build_ecapa, features_pipeline
from speechbrain_imlkd.teacher import compute_centroids, load_teacher

CHANNELS, LIN, ATT = 16, 16, 8
MAX_STEPS, CHECK_EVERY = 100, 5


@pytest.fixture(scope="module", autouse=True)
def offline_single_thread():
    """No test here may reach the network; tiny models run on one thread.

    On a shared, loaded machine torch's multi-threaded kernels can be slower
    by orders of magnitude for these tiny tensors.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training segments (0.5 s) of 4 synthetic speakers, and their encoder."""
    root = tmp_path_factory.mktemp("teacher_corpus")
    generate_corpus(
        root / "data",
        n_train_speakers=4,
        n_test_speakers=2,
        sessions_per_speaker=2,
        utterances_per_session=2,
        min_duration=1.0,
        max_duration=1.5,
        n_trials=8,
        seed=3,
    )
    report = prepare_voxceleb1(
        root / "data",
        root / "prep",
        root / "data" / "veri_test2.txt",
        splits=("train", "dev"),
        split_ratio=(75, 25),
        seg_dur=0.5,
    )
    train, _, encoder = train_dev_datasets(
        report.csv_files["train"],
        report.csv_files["dev"],
        root / "prep" / "label_encoder.txt",
    )
    batch = next(iter(make_dataloader(train, batch_size=len(train))))
    wavs, lens = batch.sig
    return dict(
        root=root,
        train=train,
        encoder=encoder,
        wavs=wavs,
        lens=lens,
        labels=batch.spk_id_encoded.data.squeeze(1),
        spk_ids=list(batch.spk_id),
    )


def _accuracy(emb_model, clf, feats, lens, labels):
    emb_model.eval(), clf.eval()
    with torch.no_grad():
        pred = clf(emb_model(feats, lens)).squeeze(1).argmax(dim=1)
    return (pred == labels).float().mean().item()


@pytest.fixture(scope="module")
def trained(data):
    """A tiny teacher trained (AAM softmax) until it fits its training set."""
    torch.manual_seed(0)
    fbank, norm = features_pipeline(n_mels=80)
    emb_model = build_ecapa(CHANNELS, lin_neurons=LIN, attention_channels=ATT)
    clf = build_classifier(len(data["encoder"]), lin_neurons=LIN)
    feats = norm(fbank(data["wavs"]), data["lens"])
    cost = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
    opt = torch.optim.Adam(
        list(emb_model.parameters()) + list(clf.parameters()), lr=0.01
    )
    acc = 0.0
    for step in range(1, MAX_STEPS + 1):
        emb_model.train(), clf.train()
        out = clf(emb_model(feats, data["lens"]))
        loss = cost(out, data["labels"].unsqueeze(1), data["lens"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % CHECK_EVERY == 0:
            acc = _accuracy(emb_model, clf, feats, data["lens"], data["labels"])
            if acc == 1.0:
                break
    assert acc == 1.0, f"fixture teacher did not fit its data (acc={acc})"
    return dict(emb_model=emb_model, clf=clf, feats=feats)


@pytest.fixture(scope="module")
def folders(data, trained, tmp_path_factory):
    """Exported folders: full (with classifier and labels) and embedding-only."""
    root = tmp_path_factory.mktemp("teacher_folders")
    full = export_model(
        root / "full",
        trained["emb_model"],
        classifier=trained["clf"],
        label_encoder=data["encoder"],
    )
    emb_only = export_model(root / "emb_only", trained["emb_model"])
    torch.manual_seed(1)
    other = export_model(
        root / "other", build_ecapa(CHANNELS, lin_neurons=LIN, attention_channels=ATT)
    )
    return dict(root=root, full=full, emb_only=emb_only, other=other)


@pytest.fixture()
def teacher(folders, tmp_path):
    return load_teacher(folders["full"], tmp_path / "save")


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- #
# Loading
# ---------------------------------------------------------------------- #
def test_load_full_folder(teacher, data, trained):
    assert not isinstance(teacher, torch.nn.Module)
    assert (teacher.sample_rate, teacher.n_mels, teacher.embedding_dim) == (16000, 80, LIN)
    assert teacher.classifier is not None
    assert teacher.label_encoder.lab2ind == data["encoder"].lab2ind
    assert _same_state(teacher.embedding_model.state_dict(), trained["emb_model"].state_dict())
    feats = teacher.features(data["wavs"], data["lens"])
    # Features exactly as the teacher was trained: Fbank + sentence mean norm.
    assert torch.equal(feats, trained["feats"].detach())
    with torch.no_grad():
        expected = trained["emb_model"].eval()(feats, data["lens"]).squeeze(1)
    assert torch.equal(teacher.embed(feats, data["lens"]), expected)


def test_load_without_classifier(folders, data, tmp_path):
    teacher = load_teacher(folders["emb_only"], tmp_path / "s")
    assert teacher.classifier is None and teacher.label_encoder is None
    with pytest.raises(ValueError, match="classifier"):
        teacher.set_training_speakers(["id00001"], mode="label")
    cents = {s: torch.randn(LIN) for s in data["encoder"].lab2ind}
    mode = teacher.set_training_speakers(
        data["encoder"], mode="auto", centroid_data=cents
    )
    assert mode == "centroid"


def test_stale_savedir_is_not_reused(folders, data, tmp_path):
    """A savedir that held another teacher must not serve its checkpoints."""
    first = load_teacher(folders["full"], tmp_path / "shared")
    second = load_teacher(folders["other"], tmp_path / "shared")
    ref = torch.load(folders["other"] / "embedding_model.ckpt")
    assert _same_state(second.embedding_model.state_dict(), ref)
    assert not _same_state(first.embedding_model.state_dict(), ref)


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        load_teacher(tmp_path / "nope", tmp_path / "s")


def test_unreachable_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="nor a reachable hub id"):
        load_teacher("nobody-imlkd-test/no-such-model", tmp_path / "s")


def test_folder_without_yaml(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="hyperparams.yaml"):
        load_teacher(tmp_path / "empty", tmp_path / "s")


def test_folder_missing_checkpoint(folders, tmp_path):
    broken = shutil.copytree(folders["full"], tmp_path / "broken")
    (broken / "embedding_model.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match="embedding_model.ckpt"):
        load_teacher(broken, tmp_path / "s")


def test_checkpoint_shape_mismatch(folders, tmp_path):
    broken = shutil.copytree(folders["full"], tmp_path / "wide")
    yaml = broken / "hyperparams.yaml"
    text = yaml.read_text()
    assert "channels: [16, 16, 16, 16, 48]" in text
    yaml.write_text(text.replace("[16, 16, 16, 16, 48]", "[32, 32, 32, 32, 96]"))
    with pytest.raises(ValueError, match=r"embedding_model.ckpt does not fit.*shape"):
        load_teacher(broken, tmp_path / "s")
    # A corrupt checkpoint is named too.
    corrupt = shutil.copytree(folders["full"], tmp_path / "corrupt")
    (corrupt / "classifier.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"classifier.ckpt: cannot read checkpoint"):
        load_teacher(corrupt, tmp_path / "s2")


def test_recipe_mismatch(folders, tmp_path):
    with pytest.raises(ValueError, match="n_mels=80 but the recipe sets n_mels=40"):
        load_teacher(folders["full"], tmp_path / "a", expected_n_mels=40)
    with pytest.raises(ValueError, match="sample_rate=16000 .* sample_rate=8000"):
        load_teacher(folders["full"], tmp_path / "b", expected_sample_rate=8000)
    teacher = load_teacher(
        folders["full"], tmp_path / "c", expected_n_mels=80, expected_sample_rate=16000
    )
    assert teacher.n_mels == 80


# ---------------------------------------------------------------------- #
# Freezing
# ---------------------------------------------------------------------- #
def test_input_gradients_flow_weights_do_not(teacher, data):
    _ = teacher.set_training_speakers(data["encoder"], mode="label")
    feats = teacher.features(data["wavs"][:4], data["lens"][:4])
    assert not feats.requires_grad
    feats.requires_grad_(True)
    logits = teacher.logits(teacher.embed(feats, data["lens"][:4]))
    logits.max(dim=1).values.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_guard_restores_eval_mode(teacher, data):
    before = _state(teacher.embedding_model)
    teacher.embedding_model.train()
    teacher.classifier.train()
    for p in teacher.embedding_model.parameters():
        p.requires_grad_(True)
    feats = teacher.features(data["wavs"], data["lens"])
    teacher.embed(feats)
    assert not teacher.embedding_model.training and not teacher.classifier.training
    assert not any(p.requires_grad for p in teacher.parameters())
    # BatchNorm running statistics did not move.
    assert _same_state(before, teacher.embedding_model.state_dict())


class _StudentBrain(sb.Brain):
    """A tiny distillation Brain: embedding + posterior + saliency terms."""

    def compute_forward(self, batch, stage):
        """Student embedding of saliency-weighted features, teacher targets."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        teacher = self.hparams.teacher
        feats = teacher.features(wavs, lens)
        # Input gradients of the teacher inside the training step, as IG does.
        probe = feats.clone().requires_grad_(True)
        score = teacher.logits(teacher.embed(probe, lens)).max(dim=1).values.sum()
        (saliency,) = torch.autograd.grad(score, probe)
        t_emb = teacher.embed(feats, lens)
        t_post = teacher.posteriors(t_emb, temperature=2.0)
        weighted = feats * (1 + saliency.abs() / (saliency.abs().max() + 1e-8))
        s_emb = self.modules.student(weighted, lens).squeeze(1)
        return s_emb, t_emb, t_post

    def compute_objectives(self, predictions, batch, stage):
        """Embedding MSE plus KL to the teacher posteriors."""
        s_emb, t_emb, t_post = predictions
        mse = F.mse_loss(self.modules.proj(s_emb), t_emb)
        log_p = F.log_softmax(self.modules.head(s_emb), dim=1)
        return mse + F.kl_div(log_p, t_post, reduction="batchmean")


def test_teacher_unchanged_by_student_fit(teacher, data):
    _ = teacher.set_training_speakers(data["encoder"], mode="label")
    before_emb = _state(teacher.embedding_model)
    before_clf = _state(teacher.classifier)
    # A stray .train() must not survive into the fit.
    teacher.embedding_model.train()
    torch.manual_seed(0)
    student = build_ecapa(16, lin_neurons=8, attention_channels=8)
    modules = {
        "student": student,
        "proj": torch.nn.Linear(8, teacher.embedding_dim),
        "head": torch.nn.Linear(8, len(data["encoder"])),
    }
    student_before = _state(student)
    brain = _StudentBrain(
        modules=modules,
        opt_class=lambda params: torch.optim.Adam(params, lr=0.01),
        hparams={"teacher": teacher},
        run_opts={"device": "cpu"},
    )
    brain.fit(
        sb.utils.epoch_loop.EpochCounter(1),
        data["train"],
        train_loader_kwargs={"batch_size": 8, "shuffle": True},
    )
    assert _same_state(before_emb, teacher.embedding_model.state_dict())
    assert _same_state(before_clf, teacher.classifier.state_dict())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.embedding_model.training
    # The student did learn (so the test exercised real updates).
    assert not _same_state(student_before, student.state_dict())


# ---------------------------------------------------------------------- #
# Posteriors
# ---------------------------------------------------------------------- #
def test_label_posteriors_follow_speaker_order(teacher, data):
    speakers = [data["encoder"].ind2lab[i] for i in range(len(data["encoder"]))]
    order = speakers[::-1]  # any order the student uses must be honoured
    assert teacher.set_training_speakers(order, mode="label") == "label"
    emb = teacher.embed_wavs(data["wavs"], data["lens"])
    post = teacher.posteriors(emb)
    assert post.shape == (len(data["spk_ids"]), len(order))
    assert torch.allclose(post.sum(dim=1), torch.ones(len(post)))
    truth = torch.tensor([order.index(s) for s in data["spk_ids"]])
    assert torch.equal(post.argmax(dim=1), truth)
    # Logits are 30 x the classifier cosines of the chosen columns.
    cos = teacher.classifier(emb.unsqueeze(1)).squeeze(1)
    cols = [data["encoder"].lab2ind[s] for s in order]
    assert torch.allclose(teacher.logits(emb), 30.0 * cos[:, cols])
    # Temperature smooths without changing the ranking.
    soft = teacher.posteriors(emb, temperature=4.0)
    assert torch.equal(soft.argmax(dim=1), truth)
    assert soft.max(dim=1).values.mean() < post.max(dim=1).values.mean()


def test_centroid_posteriors(teacher, data):
    speakers = sorted(data["encoder"].lab2ind)
    mode = teacher.set_training_speakers(
        speakers, mode="centroid", centroid_data=data["train"], centroid_scale=10.0
    )
    assert mode == "centroid"
    emb = teacher.embed_wavs(data["wavs"], data["lens"])
    post = teacher.posteriors(emb)
    assert post.shape == (len(data["spk_ids"]), len(speakers))
    assert torch.allclose(post.sum(dim=1), torch.ones(len(post)))
    truth = torch.tensor([speakers.index(s) for s in data["spk_ids"]])
    acc = (post.argmax(dim=1) == truth).float().mean().item()
    assert acc >= 0.9, acc
    assert teacher.logits(emb).abs().max() <= 10.0 + 1e-5


def test_compute_centroids_are_mean_normalised_embeddings(teacher, data):
    cents = compute_centroids(teacher, data["train"], batch_size=5)
    assert sorted(cents) == sorted(data["encoder"].lab2ind)
    emb = F.normalize(teacher.embed_wavs(data["wavs"], data["lens"]), dim=1)
    spk = data["spk_ids"][0]
    mask = torch.tensor([s == spk for s in data["spk_ids"]])
    expected = F.normalize(emb[mask].mean(dim=0), dim=0)
    assert torch.allclose(cents[spk], expected, atol=1e-5)
    assert all(abs(v.norm().item() - 1.0) < 1e-5 for v in cents.values())


def test_auto_mode_and_unknown_speakers(teacher, data):
    known = sorted(data["encoder"].lab2ind)
    assert teacher.set_training_speakers(known, mode="auto") == "label"
    with pytest.raises(ValueError, match="id99999"):
        teacher.set_training_speakers(known + ["id99999"], mode="label")
    with pytest.raises(ValueError, match="needs centroid_data"):
        teacher.set_training_speakers(known + ["id99999"], mode="auto")
    cents = compute_centroids(teacher, data["train"])
    with pytest.raises(ValueError, match="no centroid"):
        teacher.set_training_speakers(known + ["id99999"], mode="auto", centroid_data=cents)
    cents["id99999"] = torch.randn(LIN)
    assert (
        teacher.set_training_speakers(known + ["id99999"], mode="auto", centroid_data=cents)
        == "centroid"
    )


def test_bad_speaker_settings(folders, data, tmp_path):
    teacher = load_teacher(folders["full"], tmp_path / "s")
    emb = torch.randn(2, LIN)
    with pytest.raises(RuntimeError, match="set_training_speakers"):
        teacher.logits(emb)
    with pytest.raises(ValueError, match="mode="):
        teacher.set_training_speakers(["id00001"], mode="nearest")
    with pytest.raises(ValueError, match="duplicate"):
        teacher.set_training_speakers(["id00001", "id00001"])
    with pytest.raises(ValueError, match="empty"):
        teacher.set_training_speakers([])
    with pytest.raises(ValueError, match="logit_scale"):
        teacher.set_training_speakers(["id00001"], logit_scale=0)
    with pytest.raises(ValueError, match="dimension"):
        teacher.set_training_speakers(
            ["a"], mode="centroid", centroid_data={"a": torch.randn(LIN + 1)}
        )
    teacher.set_training_speakers(["id00001"])
    with pytest.raises(ValueError, match="temperature"):
        teacher.posteriors(emb, temperature=0.0)


def test_yaml_problems(folders, data, tmp_path):
    # A pretrainer that does not load the embedding model: random weights.
    broken = shutil.copytree(folders["full"], tmp_path / "noload")
    yaml = broken / "hyperparams.yaml"
    text = yaml.read_text()
    yaml.write_text(text.replace("        embedding_model: !ref <embedding_model>\n", ""))
    with pytest.raises(ValueError, match="does not load 'embedding_model'"):
        load_teacher(broken, tmp_path / "s1")
    # A yaml without the feature pipeline.
    yaml.write_text(text.replace("compute_features: !new", "other_features: !new").replace(
        "compute_features: !ref <compute_features>", "other: !ref <other_features>"))
    with pytest.raises(ValueError, match="compute_features"):
        load_teacher(broken, tmp_path / "s2")


def test_label_encoder_must_fit_classifier(folders, tmp_path):
    broken = shutil.copytree(folders["full"], tmp_path / "labels")
    enc = CategoricalEncoder()
    enc.update_from_iterable(["id00001", "id00002"])
    enc.save(broken / "label_encoder.ckpt")
    with pytest.raises(ValueError, match="2 labels but the classifier has 4"):
        load_teacher(broken, tmp_path / "s")
