"""Teachers with their own features: saliency carried between feature spaces,
segments cut at the same frames, each model's integrated input in its own
space; and the loss compositions and attribution alignment of the distillers."""

import pytest
import torch

from speechbrain_imlkd.distillers import (
    IMLKD,
    AttributionAlignmentKD,
    DistillationBatch,
    MultiLevelKD,
    OnlineSaliency,
    SalientSegment,
    VanillaKD,
)
from speechbrain_imlkd.integrated_inputs import SaliencyMapping, band_interpolation, match_frames
from speechbrain_imlkd.losses import EmbeddingProjection, attribution_alignment_loss
from speechbrain_imlkd.models import band_centres_hz, build_classifier, build_ecapa, features_pipeline
from speechbrain_imlkd.teacher import Teacher

T_MELS, S_MELS, N_SPK, SCALE = 16, 24, 3, 30.0
PROJECTION = EmbeddingProjection(10, 12)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    t_fbank, t_norm = features_pipeline(n_mels=T_MELS)
    teacher = Teacher(t_fbank, t_norm, build_ecapa(16, lin_neurons=12, n_mels=T_MELS, attention_channels=8))
    centroids = {f"s{i}": torch.randn(12) for i in range(N_SPK)}
    teacher.set_training_speakers(list(centroids), mode="centroid", centroid_data=centroids)
    student = build_ecapa(8, lin_neurons=10, n_mels=S_MELS, attention_channels=4)
    classifier = build_classifier(N_SPK, lin_neurons=10)
    s_fbank, s_norm = features_pipeline(n_mels=S_MELS)
    mapping = SaliencyMapping(band_centres_hz(t_fbank), band_centres_hz(s_fbank), mode="mel")
    # A teacher that shares the student's features, for the same-feature cases.
    same = Teacher(s_fbank, s_norm, build_ecapa(16, lin_neurons=12, n_mels=S_MELS, attention_channels=8))
    same.set_training_speakers(list(centroids), mode="centroid", centroid_data=centroids)
    return teacher, student, classifier, mapping, (s_fbank, s_norm), same


def make_batch(models, seed=0, cross=True, record=None):
    teacher, student, classifier, mapping, (s_fbank, s_norm), same = models
    teacher = teacher if cross else same
    student.zero_grad()
    g = torch.Generator().manual_seed(seed)
    wavs = torch.randn(4, 16000, generator=g)
    lens = torch.ones(4)
    feats = s_norm(s_fbank(wavs), lens)
    t_feats = teacher.features(wavs, lens) if cross else None

    def run_student(x, lengths=None):
        emb = student(x, lengths)
        return emb.squeeze(1), SCALE * classifier(emb).squeeze(1)

    def teacher_embed(x, lengths=None):
        if record is not None:
            record.append(x.detach().clone())
        return teacher.embed(x, lengths)

    emb, logits = run_student(feats)
    return DistillationBatch(
        feats=feats,
        lengths=lens,
        labels=torch.tensor([0, 1, 2, 0]),
        student_emb=emb,
        student_logits=logits,
        student=run_student,
        teacher_embed=teacher_embed,
        teacher_logits=teacher.logits,
        projection=PROJECTION,
        generator=torch.Generator().manual_seed(seed + 100),
        teacher_feats=t_feats,
        saliency_mapping=mapping if cross else None,
    )


# ----------------------------------------------------------------- mapping
def test_mapping_shapes_and_time_alignment(models):
    mapping = models[3]
    s = torch.zeros(2, 30, T_MELS)
    s[0, 7, 5] = 1.0
    s[1, 21, 12] = 1.0
    out = mapping(s, n_frames=30)
    assert out.shape == (2, 30, S_MELS)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    frames = out.amax(dim=2).argmax(dim=1).tolist()
    assert frames == [7, 21]


def test_salient_teacher_band_is_salient_for_the_student(models):
    teacher, mapping = models[0], models[3]
    t_centres = teacher.band_centres_hz() if hasattr(teacher, "band_centres_hz") else None
    if t_centres is None:
        t_centres = band_centres_hz(teacher.compute_features)
    s_centres = mapping.student_centres_hz
    for band in (2, 8, 13):
        s = torch.zeros(1, 4, T_MELS)
        s[0, :, band] = 1.0
        out = mapping(s)[0, 0]
        best = int(out.argmax())
        # The student's most salient band is the one nearest in frequency.
        nearest = int((s_centres - t_centres[band]).abs().argmin())
        assert abs(best - nearest) <= 1, (band, best, nearest)
        # Bands far from it get nothing.
        far = (s_centres - t_centres[band]).abs() > 3 * (t_centres[1] - t_centres[0]) + 1000
        assert far.any() and float(out[far].max()) == 0.0


def test_time_mapping_spreads_over_every_band(models):
    teacher, mapping = models[0], models[3]
    time_map = SaliencyMapping(mapping.teacher_centres_hz, mapping.student_centres_hz, mode="time")
    s = torch.rand(1, 10, T_MELS)
    out = time_map(s)
    assert out.shape == (1, 10, S_MELS)
    assert torch.allclose(out[..., 0], out[..., -1])


def test_band_interpolation_columns_sum_to_one_and_bad_input():
    w = band_interpolation(torch.linspace(100, 7000, 40), torch.linspace(20, 7900, 80))
    assert torch.allclose(w.sum(0), torch.ones(80))
    with pytest.raises(ValueError, match="increasing"):
        band_interpolation(torch.tensor([300.0, 100.0]), torch.tensor([200.0]))
    with pytest.raises(ValueError, match="band mapping"):
        SaliencyMapping(torch.tensor([1.0]), torch.tensor([1.0]), mode="nope")


def test_frame_mismatch_beyond_a_couple_of_frames_is_an_error():
    assert match_frames(torch.zeros(1, 99, 2), 100).shape == (1, 100, 2)
    with pytest.raises(ValueError, match="hop"):
        match_frames(torch.zeros(1, 90, 2), 100)


# ----------------------------------------------------- cross-feature KD
def test_kd_sees_the_teachers_own_features(models):
    record = []
    batch = make_batch(models, record=record)
    VanillaKD()(batch)
    assert record and record[0].shape[-1] == T_MELS


def test_mlkd_cuts_teacher_segments_at_the_student_frames(models):
    record = []
    batch = make_batch(models, record=record)
    targets = MultiLevelKD(durations=[0.3], temperatures=[1.0]).segment_targets(batch)
    seg, t_seg = targets[0].inputs, targets[0].teacher_inputs
    assert seg.shape[:2] == t_seg.shape[:2] and t_seg.shape[-1] == T_MELS
    # The teacher segment is a window of the teacher features at the same start.
    for b in range(4):
        starts = [
            s for s in range(batch.feats.shape[1] - seg.shape[1] + 1)
            if torch.equal(batch.feats[b, s : s + seg.shape[1]], seg[b])
        ]
        assert starts
        assert torch.equal(batch.teacher_feats[b, starts[0] : starts[0] + seg.shape[1]], t_seg[b])


def test_imlkd_integrates_in_each_space(models):
    kwargs = dict(durations=[0.3], temperatures=[1.0, 2.0])
    source = OnlineSaliency(steps=2)
    items = source(make_batch(models, seed=3), [0.3])
    assert isinstance(items[0], SalientSegment)
    assert items[0].saliency.shape[-1] == S_MELS and items[0].teacher_saliency.shape[-1] == T_MELS
    d = IMLKD(source, alpha=1.0, **kwargs)
    target = d.segment_targets(make_batch(models, seed=3))[0]
    assert target.inputs.shape[-1] == S_MELS and target.teacher_inputs.shape[-1] == T_MELS
    # alpha = 0: the integrated inputs are the plain segments, IML-KD = ML-KD.
    ml, _ = MultiLevelKD(**kwargs)(make_batch(models, seed=3))
    iml0, _ = IMLKD(OnlineSaliency(steps=2), alpha=0.0, **kwargs)(make_batch(models, seed=3))
    iml1, _ = IMLKD(OnlineSaliency(steps=2), alpha=2.0, **kwargs)(make_batch(models, seed=3))
    assert torch.allclose(ml, iml0, rtol=1e-4)
    assert not torch.allclose(ml, iml1, rtol=1e-4)


def test_cross_feature_without_a_mapping_is_an_error(models):
    batch = make_batch(models)
    batch.saliency_mapping = None
    with pytest.raises(ValueError, match="saliency_mapping"):
        OnlineSaliency(steps=2)(batch, [0.3])


# ------------------------------------------------------ loss composition
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("cls", ["mlkd", "imlkd"])
def test_clean_kd_term_present_only_when_configured(models, cls, cross):
    kwargs = dict(durations=[0.3], temperatures=[1.0])

    def make(kd_weight):
        if cls == "mlkd":
            return MultiLevelKD(kd_weight=kd_weight, kd_temperature=3.0, **kwargs)
        return IMLKD(OnlineSaliency(steps=2), alpha=1.0, kd_weight=kd_weight,
                     kd_temperature=3.0, **kwargs)

    alone, t_alone = make(0.0)(make_batch(models, seed=5, cross=cross))
    enhanced, t_enh = make(0.5)(make_batch(models, seed=5, cross=cross))
    kd, _ = VanillaKD(temperature=3.0, weight=0.5)(make_batch(models, seed=5, cross=cross))
    assert "kd" not in t_alone and "kd" in t_enh
    assert torch.allclose(enhanced, alone + kd, rtol=1e-5)


def test_mlkd_and_imlkd_share_everything_but_the_inputs(models):
    """With a zero saliency map the integrated input is the plain segment."""
    kwargs = dict(durations=[0.3, 0.5], temperatures=[1.0, 2.0], kd_weight=1.0, eta=0.7)

    class ZeroSaliency(OnlineSaliency):
        def __call__(self, batch, durations):
            return [(seg, torch.zeros_like(sal)) for seg, sal in super().__call__(batch, durations)]

    ml, t_ml = MultiLevelKD(**kwargs)(make_batch(models, seed=7, cross=False))
    iml, t_iml = IMLKD(ZeroSaliency(steps=2), alpha=3.0, **kwargs)(make_batch(models, seed=7, cross=False))
    assert torch.allclose(ml, iml, rtol=1e-5)
    assert set(t_ml) == set(t_iml)


# -------------------------------------------------- attribution alignment
def test_attribution_alignment_zero_when_maps_agree():
    m = torch.rand(3, 10, 4)
    assert float(attribution_alignment_loss(m, m)) == pytest.approx(0.0, abs=1e-6)
    assert float(attribution_alignment_loss(m, torch.rand(3, 10, 4))) > 0
    with pytest.raises(ValueError, match="shape"):
        attribution_alignment_loss(m, torch.rand(3, 10, 5))


@pytest.mark.parametrize("cross", [False, True])
def test_attribution_alignment_trains_the_student_not_the_teacher(models, cross):
    teacher, student = (models[0] if cross else models[5]), models[1]
    d = AttributionAlignmentKD(OnlineSaliency(steps=2), gamma=1.0, eta=0.0, lambda_emb=0.0,
                               durations=[0.3], temperatures=[1.0])
    batch = make_batch(models, seed=2, cross=cross)
    loss, terms = d(batch)
    assert terms["attr"] > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_attribution_alignment_is_zero_when_the_teacher_map_is_the_students(models):
    d = AttributionAlignmentKD(None, gamma=1.0, durations=[0.3], temperatures=[1.0])
    batch = make_batch(models, seed=4, cross=False)
    seg = batch.feats[:, :30]
    _, _, s_map = d.student_saliency(batch, seg)
    d.saliency_source = lambda b, durations: [(seg, s_map.detach())]
    _, terms = d(batch)
    assert float(terms["attr"]) == pytest.approx(0.0, abs=1e-5)


def test_attribution_alignment_refuses_cached_targets(models):
    from speechbrain_imlkd.distillers import SegmentTargets

    batch = make_batch(models, cross=False)
    d = AttributionAlignmentKD(lambda b, durs: [SegmentTargets(b.feats[:, :30])],
                               durations=[0.3], temperatures=[1.0])
    with pytest.raises(ValueError, match="online"):
        d(batch)
    with pytest.raises(ValueError, match="gamma"):
        AttributionAlignmentKD(None, gamma=-1.0)


# ------------------------------------------------- cross-feature IG cache
class OwnFeaturesTeacher(Teacher):
    """A teacher with its own (16-band) front end, like the adapters."""

    own_front_end = True

    @property
    def front_end(self):
        return {"adapter": "test", "n_mels": self.n_mels}

    def band_centres_hz(self):
        return band_centres_hz(self.compute_features)


def test_cached_targets_for_a_teacher_with_its_own_features(tmp_path):
    import numpy as np
    import soundfile as sf

    from speechbrain_imlkd.attribution import integrated_gradients, speaker_logit_target
    from speechbrain_imlkd.ig_cache import CachedSaliency, IGSettings, SegmentPlan, cache_key, precompute_ig_cache
    from speechbrain_imlkd.integrated_inputs import integrated_inputs, normalised_saliency

    torch.manual_seed(0)
    teacher = OwnFeaturesTeacher(*features_pipeline(T_MELS), build_ecapa(16, 8, T_MELS, attention_channels=8))
    spks = ["a", "b"]
    teacher.set_training_speakers(spks, mode="centroid", centroid_data={s: torch.randn(8) for s in spks})
    s_fbank, s_norm = features_pipeline(S_MELS)
    mapping = SaliencyMapping(teacher.band_centres_hz(), band_centres_hz(s_fbank), mode="mel")
    rows = ["ID,duration,wav,start,stop,spk_id"]
    rng = np.random.default_rng(0)
    for k, spk in enumerate(spks):
        wav = tmp_path / f"{spk}.wav"
        sf.write(wav, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
        rows.append(f"{spk}_0_16000,1.0,{wav},0,16000,{spk}")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    plan = SegmentPlan(durations=(0.5,), chunk_seconds=1.0)
    settings = IGSettings(target="speaker_logit", steps=4, method="gauss_legendre")
    common = dict(plan=plan, ig_settings=settings, storage="full", shard_size=4)
    precompute_ig_cache(teacher, csv_path, tmp_path / "c", saliency_mapping=mapping, **common)

    # Stored saliency is in the student's bands; the teacher targets are its
    # outputs on its own integrated input.
    wavs = torch.stack([torch.from_numpy(sf.read(tmp_path / f"{s}.wav", dtype="float32")[0]) for s in spks])
    t_feats = teacher.features(wavs)
    s_feats = s_norm(s_fbank(wavs), torch.ones(2))
    choices = [torch.zeros(2, dtype=torch.long)]
    got = CachedSaliency(tmp_path / "c", plan).segment_targets(s_feats, [f"{s}_0_16000" for s in spks], choices)[0]
    start = plan.offsets(t_feats.shape[1])[0][0]
    n = plan.segment_frames[0]
    t_seg = t_feats[:, start : start + n]
    fn = speaker_logit_target(teacher.embed, teacher.logits, torch.tensor([0, 1]))
    t_sal = normalised_saliency(integrated_gradients(fn, t_seg, steps=4, method="gauss_legendre"))
    with torch.no_grad():
        emb = teacher.embed(integrated_inputs(t_seg, t_sal, "saliency_scale", 1.0))
    torch.testing.assert_close(got.teacher_emb, emb, atol=2e-2, rtol=2e-3)
    s_seg = s_feats[:, start : start + n]
    want_inputs = integrated_inputs(s_seg, mapping(t_sal, n), "saliency_scale", 1.0)
    torch.testing.assert_close(got.inputs, want_inputs, atol=1e-2, rtol=1e-2)
    assert got.inputs.shape[-1] == S_MELS

    # The key names the teacher's front end and the mapping; another mapping
    # is another cache.
    key = cache_key(teacher, csv_path, plan, settings, saliency_mapping=mapping, storage="full", shard_size=4)
    assert key["front_end"] == {"adapter": "test", "n_mels": T_MELS} and key["saliency_mapping"]["mode"] == "mel"
    other = SaliencyMapping(mapping.teacher_centres_hz, mapping.student_centres_hz, mode="time")
    assert cache_key(teacher, csv_path, plan, settings, saliency_mapping=other, storage="full", shard_size=4) != key
    with pytest.raises(ValueError, match="student's 24"):
        precompute_ig_cache(teacher, csv_path, tmp_path / "d", saliency_mapping=mapping,
                            plan=plan, ig_settings=settings, storage="bands", n_bands=5)
