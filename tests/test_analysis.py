"""Saliency maps, deletion/insertion faithfulness and the analysis entry point."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_imlkd.analysis import (
    CURVE_NAMES,
    combine_curves,
    deletion_insertion_curves,
    faithfulness_table,
    model_saliency,
    plot_deletion_insertion,
    plot_saliency_maps,
    run_analyses,
    saliency_rank_correlation,
)
from speechbrain_imlkd.data.synthetic import generate_corpus
from speechbrain_imlkd.data.trials import read_trials
from speechbrain_imlkd.export import export_model
from speechbrain_imlkd.models import build_ecapa, features_pipeline
from speechbrain_imlkd.teacher import Teacher

N_MELS = 24


def _tiny_teacher(seed, n_mels=N_MELS):
    torch.manual_seed(seed)
    return Teacher(*features_pipeline(n_mels), build_ecapa(16, 16, n_mels, attention_channels=8))


def _score(model, feats, reference):
    with torch.no_grad():
        return torch.nn.functional.cosine_similarity(model.embed(feats), reference, dim=-1).numpy()


class FewFramesModel:
    """Toy model whose embedding depends only on the frames in ``frames``."""

    def __init__(self, frames, n_freq, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.frames = list(frames)
        self.offset = torch.randn(n_freq, generator=gen)

    def embed(self, feats, lengths=None):
        return feats[:, self.frames, :].mean(dim=1) + self.offset


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared machine: thread synchronisation costs far more
    # than the work itself (100x slower with two threads under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    model = _tiny_teacher(0)
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 40, N_MELS, generator=gen)
    reference = model.embed(torch.randn(3, 60, N_MELS, generator=gen)).detach()
    return model, feats, reference


# ---------------------------------------------------------------------- #
# Saliency
# ---------------------------------------------------------------------- #
def test_model_saliency_of_a_tiny_ecapa(tiny):
    model, feats, reference = tiny
    sal = model_saliency(model, feats, reference=reference, steps=3)
    assert sal.shape == feats.shape and not sal.requires_grad
    assert sal.min() >= 0 and torch.allclose(sal.amax(dim=(1, 2)), torch.ones(3))
    # Without a reference the segment's own embedding is used: another target.
    own = model_saliency(model, feats, steps=3)
    assert own.shape == feats.shape and not torch.allclose(own, sal)
    # Weights stay frozen: IG only differentiates w.r.t. the features.
    assert all(p.grad is None for p in model.parameters())


def test_model_saliency_finds_the_frames_a_toy_model_uses():
    frames = [3, 17, 30]
    model = FewFramesModel(frames, n_freq=8)
    feats = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(0))
    sal = model_saliency(model, feats, reference=model.embed(feats), steps=8)
    frame_sal = sal.sum(dim=-1)
    assert torch.all(frame_sal[:, [t for t in range(40) if t not in frames]] == 0)
    assert set(frame_sal[0].topk(3).indices.tolist()) == set(frames)


def test_model_saliency_bad_inputs(tiny):
    model, feats, reference = tiny
    with pytest.raises(ValueError, match="reference of shape \\(2, 16\\)"):
        model_saliency(model, feats, reference=reference[:2], steps=2)
    with pytest.raises(ValueError, match="7 dimensions.*16"):
        model_saliency(model, feats, reference=torch.ones(3, 7), steps=2)
    with pytest.raises(ValueError, match="target='speaker'"):
        model_saliency(model, feats, target="speaker", steps=2)
    with pytest.raises(ValueError, match="shape \\(40, 24\\)"):
        model_saliency(model, feats[0], steps=2)
    with pytest.raises(TypeError, match="int"):
        model_saliency(3, feats, steps=2)
    with pytest.raises(ValueError, match="steps=1"):
        model_saliency(model, feats, reference=reference, steps=1)


def test_rank_correlation():
    a = torch.rand(2, 10, 4, generator=torch.Generator().manual_seed(0))
    assert saliency_rank_correlation(a, a.sqrt()) == pytest.approx([1.0, 1.0])
    assert saliency_rank_correlation(a, 1 - a) == pytest.approx([-1.0, -1.0])
    # Frames: a map equal to a function of the frame sums agrees perfectly.
    frames = a.sum(-1, keepdim=True).expand_as(a) ** 3
    assert saliency_rank_correlation(a, frames, level="frames") == pytest.approx([1.0, 1.0])
    assert saliency_rank_correlation(a, frames, level="bins")[0] < 1.0
    assert math.isnan(saliency_rank_correlation(a[:1], torch.zeros(1, 10, 4))[0])
    with pytest.raises(ValueError, match="\\(2, 10, 4\\).*\\(2, 10, 3\\)"):
        saliency_rank_correlation(a, a[..., :3])
    with pytest.raises(ValueError, match="level='time'"):
        saliency_rank_correlation(a, a, level="time")


# ---------------------------------------------------------------------- #
# Deletion / insertion
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("unit", ["frame", "bin"])
def test_curves_shapes_and_end_points(tiny, unit):
    model, feats, reference = tiny
    sal = torch.rand(feats.shape, generator=torch.Generator().manual_seed(2))
    curves = deletion_insertion_curves(model, feats, sal, reference, n_steps=5, unit=unit)
    full = _score(model, feats, reference)
    empty = _score(model, torch.zeros_like(feats), reference)
    assert curves["fractions"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert curves["n_segments"] == 3 and curves["unit"] == unit
    assert curves["n_units"] == (40 if unit == "frame" else 40 * N_MELS)
    for name in CURVE_NAMES:
        assert curves[name].shape == (6,)
        assert curves["per_segment"][name].shape == (3, 6)
        assert -1 <= curves[f"{name}_area"] <= 1
    per = curves["per_segment"]
    for prefix in ("", "random_"):
        np.testing.assert_allclose(per[prefix + "deletion"][:, 0], full, atol=1e-5)
        np.testing.assert_allclose(per[prefix + "insertion"][:, -1], full, atol=1e-5)
        np.testing.assert_allclose(per[prefix + "deletion"][:, -1], empty, atol=1e-5)
        np.testing.assert_allclose(per[prefix + "insertion"][:, 0], empty, atol=1e-5)
    # The random control differs from the saliency order in between.
    assert not np.allclose(per["deletion"][:, 1:-1], per["random_deletion"][:, 1:-1])
    area = np.trapezoid(curves["deletion"], curves["fractions"])
    assert curves["deletion_area"] == pytest.approx(area)


def test_curves_remove_exactly_the_fraction_of_frames():
    # embedding (mean of bin 0, 1): each deleted frame lowers the mean by 1 / T.
    embed = lambda f: torch.stack([f[:, :, 0].mean(dim=1), torch.ones(len(f))], dim=1)
    feats = torch.ones(1, 10, 2)
    curves = deletion_insertion_curves(
        embed, feats, torch.rand(1, 10), torch.tensor([1.0, 0.0]), n_steps=5
    )
    kept = 1 - curves["fractions"]
    assert curves["deletion"] == pytest.approx(kept / np.sqrt(kept**2 + 1))
    # A non-zero baseline: deleted frames become 0.5 instead of 0.
    curves = deletion_insertion_curves(
        embed, feats, torch.rand(1, 10), torch.tensor([1.0, 0.0]), n_steps=5, baseline_value=0.5
    )
    mean = 1 - 0.5 * curves["fractions"]
    assert curves["deletion"] == pytest.approx(mean / np.sqrt(mean**2 + 1))


def test_saliency_order_beats_random_on_a_model_with_known_saliency():
    frames = [2, 11, 25, 38]
    model = FewFramesModel(frames, n_freq=8)
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(4, 50, 8, generator=gen)
    feats[:, frames] *= 4  # the frames the model uses carry strong evidence
    reference = model.embed(feats)
    sal = model_saliency(model, feats, reference=reference, steps=8)
    curves = deletion_insertion_curves(model, feats, sal, reference, n_steps=25, seed=1)
    # All used frames are gone after 4 / 50 of the frames: the score is then
    # the all-baseline one, while random deletion only gets there at the end.
    empty = _score(model, torch.zeros_like(feats), reference).mean()
    assert curves["deletion"][2] == pytest.approx(empty, abs=1e-5)
    assert curves["deletion_area"] < curves["random_deletion_area"] - 0.1
    # Random insertion recovers much of the score with the first used frame
    # it meets, so the insertion margin is smaller.
    assert curves["insertion_area"] > curves["random_insertion_area"] + 0.05
    row = faithfulness_table({"toy": curves})["toy"]
    assert row["deletion_gain"] > 0.1 and row["insertion_gain"] > 0.05
    # A deliberately wrong (reversed) saliency is worse than random.
    wrong = deletion_insertion_curves(model, feats, 1 - sal, reference, n_steps=25, seed=1)
    assert wrong["deletion_area"] > wrong["random_deletion_area"]


def test_random_control_is_seeded(tiny):
    model, feats, reference = tiny
    sal = torch.rand(feats.shape)
    a = deletion_insertion_curves(model, feats, sal, reference, n_steps=3, seed=5)
    b = deletion_insertion_curves(model, feats, sal, reference, n_steps=3, seed=5)
    c = deletion_insertion_curves(model, feats, sal, reference, n_steps=3, seed=6)
    np.testing.assert_array_equal(a["random_deletion"], b["random_deletion"])
    assert not np.array_equal(a["random_deletion"], c["random_deletion"])


def test_curves_bad_inputs(tiny):
    model, feats, reference = tiny
    sal = torch.rand(feats.shape)
    with pytest.raises(ValueError, match="n_steps=0"):
        deletion_insertion_curves(model, feats, sal, reference, n_steps=0)
    with pytest.raises(ValueError, match="unit='pixel'"):
        deletion_insertion_curves(model, feats, sal, reference, unit="pixel")
    with pytest.raises(ValueError, match="saliency of shape \\(3, 39, 24\\)"):
        deletion_insertion_curves(model, feats, sal[:, 1:], reference)
    with pytest.raises(ValueError, match="unit='bin' needs B x T x F"):
        deletion_insertion_curves(model, feats, sal.sum(-1), reference, unit="bin")
    with pytest.raises(ValueError, match="reference_embeddings of shape \\(1, 16\\)"):
        deletion_insertion_curves(model, feats, sal, reference[:1])
    with pytest.raises(ValueError, match="baseline_value of shape \\(5,\\)"):
        deletion_insertion_curves(model, feats, sal, reference, baseline_value=torch.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        deletion_insertion_curves(model, feats, sal * float("nan"), reference)


def test_combine_curves_and_table(tiny):
    model, feats, reference = tiny
    sal = torch.rand(feats.shape)
    a = deletion_insertion_curves(model, feats, sal, reference, n_steps=4)
    b = deletion_insertion_curves(model, feats[:, :20], sal[:, :20], reference, n_steps=4)
    both = combine_curves([a, b])
    assert both["n_segments"] == 6
    np.testing.assert_allclose(both["deletion"], (a["deletion"] + b["deletion"]) / 2)
    table = faithfulness_table({"m": {"1s": a, "all": both}})
    assert table["m"]["1s"]["deletion_area"] == pytest.approx(a["deletion_area"])
    assert table["m"]["all"]["n_segments"] == 6
    c = deletion_insertion_curves(model, feats, sal, reference, n_steps=3)
    with pytest.raises(ValueError, match="same n_steps"):
        combine_curves([a, c])
    with pytest.raises(ValueError, match="empty"):
        combine_curves([])
    with pytest.raises(ValueError, match="'m'"):
        faithfulness_table({"m": 3})


# ---------------------------------------------------------------------- #
# Figures
# ---------------------------------------------------------------------- #
def test_saliency_figure(tmp_path):
    gen = torch.Generator().manual_seed(0)
    durations = (1.0, 2.0, 3.0)
    feats = {d: torch.randn(2, int(100 * d), N_MELS, generator=gen) for d in durations}
    teacher = {d: torch.rand(2, int(100 * d), N_MELS, generator=gen) for d in durations}
    maps = {
        "teacher": teacher,
        "imlkd": {d: m**2 for d, m in teacher.items()},
        "kd": {d: 1 - m for d, m in teacher.items()},
    }
    out = tmp_path / "sub" / "maps.png"
    rho = plot_saliency_maps(feats, maps, out, titles={"imlkd": "IML-KD student"})
    assert out.stat().st_size > 1000
    assert rho == {
        "imlkd": {"1s": pytest.approx(1.0), "2s": pytest.approx(1.0), "3s": pytest.approx(1.0)},
        "kd": {"1s": pytest.approx(-1.0), "2s": pytest.approx(-1.0), "3s": pytest.approx(-1.0)},
    }
    with pytest.raises(ValueError, match="'kd' has no saliency maps for duration 3.0"):
        plot_saliency_maps(feats, {**maps, "kd": {1.0: teacher[1.0], 2.0: teacher[2.0]}}, out)
    with pytest.raises(ValueError, match="saliency of 'kd' at duration 1.0 has shape"):
        plot_saliency_maps(feats, {**maps, "kd": {**maps["kd"], 1.0: teacher[2.0]}}, out)
    with pytest.raises(ValueError, match="reference='teacher'"):
        plot_saliency_maps(feats, {"a": teacher, "b": teacher}, out)
    with pytest.raises(ValueError, match="index=5"):
        plot_saliency_maps(feats, maps, out, index=5)


def test_deletion_insertion_figure(tiny, tmp_path):
    model, feats, reference = tiny
    curves = {
        name: deletion_insertion_curves(model, feats, torch.rand(feats.shape), reference, n_steps=3)
        for name in ("teacher", "imlkd", "kd")
    }
    out = plot_deletion_insertion(curves, tmp_path / "curves.png")
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="'kd'.*missing"):
        plot_deletion_insertion({"kd": {"fractions": [0, 1]}}, tmp_path / "x.png")


# ---------------------------------------------------------------------- #
# End to end
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def corpus_and_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    generate_corpus(
        root / "corpus", n_train_speakers=1, n_test_speakers=4, sessions_per_speaker=2,
        utterances_per_session=1, min_duration=1.2, max_duration=2.5, n_trials=8, seed=0,
    )
    folders = {}
    for seed, name in enumerate(("teacher", "imlkd", "kd")):
        torch.manual_seed(seed)
        folders[name] = export_model(
            root / name, build_ecapa(16, lin_neurons=16, attention_channels=8)
        )
    return root, folders


def test_run_analyses_end_to_end(corpus_and_models):
    root, folders = corpus_and_models
    corpus = root / "corpus"
    trials = read_trials(corpus / "veri_test2.txt")
    tests = {t for t, label in zip(trials.test, trials.labels) if label == 1}
    seconds = {t: sf.info(str(corpus / "wav" / t)).duration for t in tests}
    # A duration that some target test utterances are too short for.
    long_d = round((min(seconds.values()) + max(seconds.values())) / 2, 2)
    out = root / "out"
    results = run_analyses(
        folders["teacher"], {"imlkd": folders["imlkd"], "kd": folders["kd"]}, corpus,
        corpus / "veri_test2.txt", out, durations=(0.5, long_d), n_segments=len(tests),
        steps=2, n_steps=4, offset=0.0, seed=0,
    )
    for name in ("saliency_maps.png", "deletion_insertion.png", "faithfulness.json"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "faithfulness.json").read_text()) == results

    picked = [t["test"] for t in results["trials"]]
    assert len(picked) == len(set(picked)) == len(tests)
    n_short = sum(seconds[t] < long_d for t in picked)
    assert n_short > 0
    long_key = f"{long_d:g}s"
    assert results["segments"]["0.5s"] == {"n_segments": len(picked), "skipped": 0, "tests": picked}
    assert results["segments"][long_key]["skipped"] == n_short
    assert set(results["faithfulness"]) == {"teacher", "imlkd", "kd"}
    for name, rows in results["faithfulness"].items():
        assert set(rows) == {"0.5s", long_key, "all"}
        assert rows["all"]["n_segments"] == 2 * len(picked) - n_short
        for row in rows.values():
            for curve in CURVE_NAMES:
                assert -1 <= row[f"{curve}_area"] <= 1
    assert set(results["saliency_agreement"]) == {"imlkd", "kd"}
    agreement = results["saliency_agreement"]["kd"]
    assert len(agreement[long_key]["per_segment"]) == len(picked) - n_short
    assert -1 <= agreement["all"]["mean"] <= 1
    assert set(results["saliency_agreement_shown"]["imlkd"]) == {"0.5s", long_key}

    # Deterministic: the same seed picks the same trials and gives the same areas.
    again = run_analyses(
        folders["teacher"], {"kd": folders["kd"]}, corpus, corpus / "veri_test2.txt",
        root / "out2", durations=(0.5,), n_segments=len(tests), steps=2, n_steps=4,
        offset=0.0, seed=0,
    )
    assert again["trials"] == results["trials"]
    expected = results["faithfulness"]["kd"]["0.5s"]
    assert again["faithfulness"]["kd"]["0.5s"] == pytest.approx(expected)


def test_run_analyses_bad_inputs(corpus_and_models, tmp_path):
    root, folders = corpus_and_models
    corpus, trials = root / "corpus", root / "corpus" / "veri_test2.txt"
    common = dict(steps=2, n_steps=2, offset=0.0)
    with pytest.raises(ValueError, match="long enough for a 30 s segment"):
        run_analyses(folders["teacher"], {}, corpus, trials, tmp_path, durations=(30.0,), **common)
    with pytest.raises(ValueError, match="'teacher' is reserved"):
        run_analyses(
            folders["teacher"], {"teacher": folders["kd"]}, corpus, trials, tmp_path, **common
        )
    with pytest.raises(ValueError, match="n_segments=0"):
        run_analyses(folders["teacher"], {}, corpus, trials, tmp_path, n_segments=0, **common)
    with pytest.raises(ValueError, match="duplicates"):
        run_analyses(folders["teacher"], {}, corpus, trials, tmp_path, durations=(1, 1.0), **common)
    with pytest.raises(FileNotFoundError, match="trials_file not found"):
        run_analyses(folders["teacher"], {}, corpus, tmp_path / "none.txt", tmp_path, **common)
    with pytest.raises(FileNotFoundError, match="data_folder not found"):
        run_analyses(folders["teacher"], {}, tmp_path / "none", trials, tmp_path, **common)
    with pytest.raises(FileNotFoundError, match="missing_student"):
        run_analyses(
            folders["teacher"], {"kd": tmp_path / "missing_student"}, corpus, trials, tmp_path,
            **common,
        )
    no_target = tmp_path / "nontarget.txt"
    no_target.write_text(
        "\n".join(line for line in trials.read_text().splitlines() if line.startswith("0"))
    )
    with pytest.raises(ValueError, match="no target trials"):
        run_analyses(folders["teacher"], {}, corpus, no_target, tmp_path, **common)
