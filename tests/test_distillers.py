"""Each distiller runs one step on tiny ECAPA models; gradients reach the
student (and its projection) and never the teacher."""

import pytest
import torch

from speechbrain_imlkd.distillers import (
    DISTILLERS,
    IMLKD,
    DistillationBatch,
    EmbeddingKD,
    MultiLevelKD,
    OnlineSaliency,
    Scratch,
    SegmentTargets,
    VanillaKD,
)
from speechbrain_imlkd.losses import EmbeddingProjection
from speechbrain_imlkd.models import build_classifier, build_ecapa, features_pipeline
from speechbrain_imlkd.teacher import Teacher

N_MELS = 24
N_SPK = 3
SCALE = 30.0


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    fbank, norm = features_pipeline(n_mels=N_MELS)
    t_emb = build_ecapa(16, lin_neurons=12, n_mels=N_MELS, attention_channels=8)
    teacher = Teacher(fbank, norm, t_emb)
    centroids = {f"s{i}": torch.randn(12) for i in range(N_SPK)}
    teacher.set_training_speakers(list(centroids), mode="centroid", centroid_data=centroids)
    student = build_ecapa(8, lin_neurons=10, n_mels=N_MELS, attention_channels=4)
    classifier = build_classifier(N_SPK, lin_neurons=10)
    projection = EmbeddingProjection(10, 12)
    return teacher, student, classifier, projection


def make_batch(models, n_frames=160, seed=0):
    teacher, student, classifier, projection = models
    student.zero_grad()
    projection.zero_grad()
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(4, n_frames, N_MELS, generator=g)

    def run_student(x, lengths=None):
        emb = student(x, lengths)
        return emb.squeeze(1), SCALE * classifier(emb).squeeze(1)

    emb, logits = run_student(feats)
    return DistillationBatch(
        feats=feats,
        lengths=torch.ones(4),
        labels=torch.tensor([0, 1, 2, 0]),
        student_emb=emb,
        student_logits=logits,
        student=run_student,
        teacher_embed=teacher.embed,
        teacher_logits=teacher.logits,
        projection=projection,
        generator=g,
    )


ALL = [
    ("kd", lambda: VanillaKD(temperature=2.0)),
    ("emb_kd", lambda: EmbeddingKD()),
    ("mlkd", lambda: MultiLevelKD(durations=[0.5, 1.0], temperatures=[1.0, 2.0])),
    (
        "imlkd",
        lambda: IMLKD(
            saliency_source=OnlineSaliency(steps=4),
            durations=[0.5, 1.0],
            temperatures=[1.0, 2.0],
        ),
    ),
]


@pytest.mark.parametrize("name,make", ALL, ids=[a for a, _ in ALL])
def test_each_distiller_one_step_gradients(models, name, make):
    teacher, student, _, projection = models
    before = [p.detach().clone() for p in teacher.parameters()]
    batch = make_batch(models)
    loss, terms = make()(batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert terms and all(torch.isfinite(torch.as_tensor(v)) for v in terms.values())
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in teacher.parameters())
    for p, b in zip(teacher.parameters(), before):
        assert torch.equal(p, b)
    if name in ("emb_kd", "mlkd", "imlkd"):
        assert projection.parameters() and any(
            p.grad is not None and p.grad.abs().sum() > 0 for p in projection.parameters()
        )


def test_scratch_is_zero_and_teacherless(models):
    loss, terms = Scratch()(make_batch(models))
    assert float(loss) == 0.0 and terms == {}
    assert not Scratch.uses_teacher and VanillaKD.uses_teacher


def test_registry_names_every_method():
    assert set(DISTILLERS) == {"scratch", "kd", "emb_kd", "mlkd", "imlkd", "attr_kd"}


def test_mlkd_logs_each_level_and_duration(models):
    _, terms = MultiLevelKD(durations=[0.5, 1.0], temperatures=[1.0])(make_batch(models))
    for key in ("instance", "class", "batch", "dur0.5", "dur1"):
        assert key in terms, key


def test_imlkd_differs_from_mlkd_only_through_saliency(models):
    """With alpha=0 the integrated input is the plain segment: IML-KD equals ML-KD."""
    kwargs = dict(durations=[0.5], temperatures=[1.0, 2.0])
    ml, _ = MultiLevelKD(**kwargs)(make_batch(models, seed=3))
    iml0, _ = IMLKD(OnlineSaliency(steps=2), alpha=0.0, **kwargs)(make_batch(models, seed=3))
    iml1, _ = IMLKD(OnlineSaliency(steps=2), alpha=2.0, **kwargs)(make_batch(models, seed=3))
    # The saliency source draws the same segments from the same generator.
    assert torch.allclose(ml, iml0, rtol=1e-4)
    assert not torch.allclose(ml, iml1, rtol=1e-4)


def test_cached_segment_targets_skip_the_teacher(models):
    """A source returning SegmentTargets with teacher outputs is used as is."""
    batch = make_batch(models)
    calls = []
    batch.teacher_embed = lambda *a: calls.append(1)
    x = batch.feats[:, :50]
    with torch.no_grad():
        t_emb = models[0].embed(x)
        t_logits = models[0].logits(t_emb)
    source = lambda b, durations: [SegmentTargets(x, t_emb, t_logits)]  # noqa: E731
    loss, _ = IMLKD(source, durations=[0.5], temperatures=[1.0])(batch)
    assert torch.isfinite(loss) and calls == []


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: MultiLevelKD(eta=-1.0), "eta"),
        (lambda: MultiLevelKD(temperatures=[]), "temperatures"),
        (lambda: MultiLevelKD(durations=[]), "durations"),
        (lambda: VanillaKD(weight=-0.5), "weight"),
        (lambda: IMLKD(OnlineSaliency(), alpha=-1.0), "alpha"),
        (lambda: OnlineSaliency(target="nope"), "target"),
    ],
)
def test_impossible_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_duration_longer_than_chunk_is_an_error(models):
    with pytest.raises(ValueError, match="2"):
        MultiLevelKD(durations=[2.0], temperatures=[1.0])(make_batch(models, n_frames=100))
