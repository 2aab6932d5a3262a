"""Tests of speechbrain_imlkd.scoring: metrics, normalisation, score files, DET."""

import json
import tracemalloc

import numpy as np
import pytest
import torch
from speechbrain.utils.metric_stats import EER, minDCF

from speechbrain_imlkd import scoring
from speechbrain_imlkd.scoring import (
    asnorm,
    cohort_statistics,
    compute_eer,
    compute_min_dcf,
    cosine_scores,
    det_curve,
    operating_points,
    plot_det,
    read_cohort_csv,
    read_scores,
    score_trials,
    snorm,
    verification_metrics,
    write_scores,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sb_normaliser(p_target, c_miss=1.0, c_fa=1.0):
    """SpeechBrain's minDCF is ours times this."""
    return min(c_miss * p_target, c_fa * (1 - p_target))


def _random_case(rng, n_t, n_n, kind):
    """Target / non-target scores of one flavour."""
    if kind == "continuous":
        return rng.normal(1.5, 1, n_t), rng.normal(0, 1, n_n)
    if kind == "rounded":  # many ties, across classes too
        return np.round(rng.normal(1, 1, n_t), 1), np.round(rng.normal(0, 1, n_n), 1)
    if kind == "few_values":  # extreme ties: a handful of distinct scores
        return rng.integers(0, 4, n_t) / 2, rng.integers(-1, 3, n_n) / 2
    raise AssertionError(kind)


SIZES = [(1, 1), (3, 7), (10, 10), (9, 9), (37, 150), (400, 1600)]
CASES = [
    (n_t, n_n, kind, dtype, seed)
    for seed, (n_t, n_n) in enumerate(SIZES)
    for kind in ("continuous", "rounded", "few_values")
    for dtype in (torch.float32, torch.float64)
] + [  # SpeechBrain's EER loop is slow: the largest size in float32 only
    (1500, 2500, kind, torch.float32, 9) for kind in ("continuous", "rounded")
]


@pytest.mark.parametrize("n_t,n_n,kind,dtype,seed", CASES)
def test_agrees_with_speechbrain(n_t, n_n, kind, dtype, seed):
    rng = np.random.default_rng(seed)
    tgt, non = _random_case(rng, n_t, n_n, kind)
    tgt, non = torch.tensor(tgt, dtype=dtype), torch.tensor(non, dtype=dtype)

    eer_sb, thr_sb = EER(tgt, non)
    eer, thr = compute_eer(tgt, non)
    assert abs(eer - eer_sb) < 1e-4
    assert thr == pytest.approx(thr_sb, abs=1e-6)

    for p in (0.01, 0.05, 0.3):
        dcf_sb, dthr_sb = minDCF(tgt, non, p_target=p)
        dcf, dthr = compute_min_dcf(tgt, non, p_target=p)
        # Ours is normalised: compare on SpeechBrain's scale and on ours.
        assert abs(dcf * _sb_normaliser(p) - dcf_sb) < 1e-4
        assert abs(dcf - dcf_sb / _sb_normaliser(p)) < 1e-4
        assert dthr == pytest.approx(dthr_sb, abs=1e-6)


def test_float32_tie_break_matches_speechbrain():
    # |FAR - FRR| ties exactly (2/9) at two operating points; SpeechBrain's
    # float32 rates make it keep the second one, whose EER is 0.389, not the
    # first one's 0.278. Exact-arithmetic tie-breaking would disagree by 0.11.
    tgt = torch.tensor([0.0] * 2 + [0.5] * 2 + [1.0, 1.5, 2.0] + [2.5] * 2)
    non = torch.tensor([-0.5] * 2 + [0.0] * 4 + [1.0] + [1.5] * 2)
    op = operating_points(tgt, non)
    gaps = np.abs(op.n_fa - op.n_miss)  # 9 trials per class: exact |FAR-FRR|*9
    assert np.count_nonzero(gaps == gaps.min()) == 2
    eer_sb, thr_sb = EER(tgt, non)
    assert eer_sb == pytest.approx(3.5 / 9)
    assert compute_eer(tgt, non) == (pytest.approx(eer_sb, abs=1e-7), thr_sb)


def test_agrees_with_speechbrain_unequal_costs():
    rng = np.random.default_rng(5)
    tgt, non = (torch.tensor(a) for a in _random_case(rng, 300, 900, "rounded"))
    dcf_sb, thr_sb = minDCF(tgt, non, c_miss=10.0, c_fa=1.0, p_target=0.01)
    dcf, thr = compute_min_dcf(tgt, non, p_target=0.01, c_miss=10.0, c_fa=1.0)
    assert abs(dcf * _sb_normaliser(0.01, 10.0, 1.0) - dcf_sb) < 1e-4
    assert thr == pytest.approx(thr_sb)


@pytest.mark.parametrize(
    "tgt,non,eer,dcf",
    [
        ([0.6, 0.7, 0.8, 0.5], [0.4, 0.3, 0.2, 0.1], 0.0, 0.0),  # perfect separation
        ([0.2, 0.2, 0.2], [0.2, 0.2], 0.5, 1.0),  # all scores equal
        ([0.1, 0.2], [0.8, 0.9], 1.0, 1.0),  # perfectly wrong
        ([3.0], [-3.0], 0.0, 0.0),  # one trial of each
    ],
)
def test_edge_cases_match_speechbrain(tgt, non, eer, dcf):
    t, n = torch.tensor(tgt), torch.tensor(non)
    assert compute_eer(t, n)[0] == pytest.approx(eer)
    assert compute_eer(t, n)[0] == pytest.approx(EER(t, n)[0], abs=1e-4)
    for p in (0.01, 0.05):
        ours = compute_min_dcf(t, n, p_target=p)[0]
        assert ours == pytest.approx(dcf)
        assert ours * _sb_normaliser(p) == pytest.approx(minDCF(t, n, p_target=p)[0], abs=1e-6)


def test_accepts_numpy_lists_and_tensors_alike():
    rng = np.random.default_rng(1)
    tgt, non = rng.normal(1, 1, 50), rng.normal(0, 1, 70)
    ref = compute_eer(tgt, non)
    assert compute_eer(list(tgt), list(non)) == ref
    assert compute_eer(torch.tensor(tgt), torch.tensor(non)) == ref
    assert compute_eer(torch.tensor(tgt, dtype=torch.float16), torch.tensor(non))[0] == pytest.approx(ref[0], abs=0.05)


def test_ties_are_never_split():
    # A target and a non-target share the score 0.5: no threshold separates
    # them, so every operating point counts both on the same side.
    op = operating_points([0.5, 0.9], [0.5, 0.1])
    assert op.thresholds.tolist() == [0.1, 0.5, 0.9]
    assert op.n_miss.tolist() == [0, 1, 2]
    assert op.n_fa.tolist() == [1, 0, 0]


def test_one_sort(monkeypatch):
    calls = []
    real_argsort = np.argsort

    def counting_argsort(*args, **kwargs):
        calls.append(1)
        return real_argsort(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("a second sort (np.sort / np.unique) was used")

    monkeypatch.setattr(np, "argsort", counting_argsort)
    monkeypatch.setattr(np, "sort", forbidden)
    monkeypatch.setattr(np, "unique", forbidden)
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=5000), 2)
    labels = (rng.random(5000) < 0.3).astype(int)
    verification_metrics(scores, labels)
    assert len(calls) == 1  # EER and both minDCFs from the same sort


def test_voxceleb1_h_scale_memory():
    # 552,536 trials (VoxCeleb1-H size): peak Python-side memory of all
    # metrics stays far below SpeechBrain's thresholds x N matrices.
    rng = np.random.default_rng(0)
    n = 552_536
    labels = (rng.random(n) < 0.5).astype(np.int8)
    scores = np.where(labels == 1, rng.normal(0.6, 0.15, n), rng.normal(0.1, 0.15, n))
    tracemalloc.start()
    metrics = verification_metrics(scores, labels)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 200 * 2**20
    assert metrics["n_trials"] == n
    assert 0.0 < metrics["eer"] < 0.1


def test_det_curve_is_consistent():
    rng = np.random.default_rng(2)
    tgt, non = np.round(rng.normal(1, 1, 300), 1), np.round(rng.normal(0, 1, 500), 1)
    p_miss, p_fa, thr = det_curve(tgt, non)
    assert p_miss[0] == 0 and p_fa[0] == 1 and thr[0] == -np.inf
    assert p_miss[-1] == 1 and p_fa[-1] == 0
    assert np.all(np.diff(p_miss) >= 0) and np.all(np.diff(p_fa) <= 0)
    assert np.all(np.diff(thr) > 0)
    # Each point matches a direct count at its threshold.
    for k in (1, 10, len(thr) // 2, len(thr) - 1):
        assert p_miss[k] == np.mean(tgt <= thr[k])
        assert p_fa[k] == np.mean(non > thr[k])
    eer, eer_thr = compute_eer(tgt, non)
    k = int(np.flatnonzero(thr == eer_thr)[0])
    assert eer == pytest.approx((p_miss[k] + p_fa[k]) / 2)


def test_min_dcf_is_a_true_minimum():
    rng = np.random.default_rng(3)
    tgt, non = rng.normal(2, 1, 200), rng.normal(0, 1, 2000)
    p_miss, p_fa, _ = det_curve(tgt, non)
    for p in (0.01, 0.05):
        brute = np.min(p * p_miss + (1 - p) * p_fa) / min(p, 1 - p)
        assert compute_min_dcf(tgt, non, p_target=p)[0] == pytest.approx(brute)


def test_accept_all_point_is_a_candidate():
    # With p_target=0.9 accepting everything costs 0.1 (normalised 1.0);
    # SpeechBrain's candidate set lacks that point and reports more.
    tgt, non = [0.0, 0.1, 0.2], [0.5, 0.6]
    dcf, thr = compute_min_dcf(tgt, non, p_target=0.9)
    assert dcf == pytest.approx(1.0) and thr == -np.inf
    sb = minDCF(torch.tensor(tgt), torch.tensor(non), p_target=0.9)[0]
    assert sb / _sb_normaliser(0.9) > 1.0


@pytest.mark.parametrize(
    "tgt,non,match",
    [
        ([], [0.1], "target_scores is empty"),
        ([0.1], [], "nontarget_scores is empty"),
        ([0.1, float("nan")], [0.0], "target_scores contains 1 non-finite.*index 1"),
        ([0.1], [0.0, float("inf")], "nontarget_scores contains 1 non-finite"),
        ([[0.1, 0.2]], [0.0], "1-D"),
        (["a"], [0.0], "numeric"),
    ],
)
def test_bad_scores_raise(tgt, non, match):
    for fn in (compute_eer, compute_min_dcf, det_curve):
        with pytest.raises(ValueError, match=match):
            fn(tgt, non)


def test_bad_costs_raise():
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([1.0], [0.0], p_target=1.0)
    with pytest.raises(ValueError, match="c_miss and c_fa"):
        compute_min_dcf([1.0], [0.0], c_fa=0.0)


def test_verification_metrics():
    rng = np.random.default_rng(4)
    labels = np.r_[np.ones(100), np.zeros(400)].astype(int)
    scores = np.r_[rng.normal(1, 1, 100), rng.normal(0, 1, 400)]
    m = verification_metrics(scores, labels)
    assert m["eer"] == compute_eer(scores[:100], scores[100:])[0]
    assert m["min_dcf_0.01"] == compute_min_dcf(scores[:100], scores[100:], 0.01)[0]
    assert m["min_dcf_0.05"] == compute_min_dcf(scores[:100], scores[100:], 0.05)[0]
    assert (m["n_trials"], m["n_target"], m["n_nontarget"]) == (500, 100, 400)


@pytest.mark.parametrize(
    "scores,labels,match",
    [
        ([0.1, 0.2], [1, 1], "nontarget_scores is empty"),
        ([0.1, 0.2], [0, 0], "target_scores is empty"),
        ([0.1, np.nan], [1, 0], "non-finite"),
        ([0.1, 0.2], [1, 2], "labels must be 0 or 1.*index 1"),
        ([0.1, 0.2, 0.3], [1, 0], "equal length"),
    ],
)
def test_verification_metrics_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        verification_metrics(scores, labels)


# --------------------------------------------------------------------------
# Cosine scoring and normalisation against direct per-trial loops
# --------------------------------------------------------------------------
def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _loop_norm(emb, enrol, test, cohort, top_k=None, mean=None):
    """Reference s-norm / AS-norm, one trial at a time, no vectorisation."""
    emb = {u: (v - mean if mean is not None else v) for u, v in emb.items()}
    cohort = [c - mean if mean is not None else c for c in cohort]
    out = []
    for e, t in zip(enrol, test):
        s = _cos(emb[e], emb[t])
        normed = []
        for side in (e, t):
            c = sorted((_cos(emb[side], x) for x in cohort), reverse=True)
            if top_k is not None:
                c = c[:top_k]
            normed.append((s - np.mean(c)) / np.std(c, ddof=1))
        out.append(0.5 * sum(normed))
    return np.array(out)


@pytest.fixture
def small_system():
    rng = np.random.default_rng(7)
    utts = [f"u{i}" for i in range(12)]
    emb = {u: rng.normal(size=8).astype(np.float32) for u in utts}
    enrol = [utts[i] for i in rng.integers(0, 12, 40)]
    test = [utts[i] for i in rng.integers(0, 12, 40)]
    cohort = rng.normal(size=(25, 8)).astype(np.float32)
    return emb, enrol, test, cohort


def test_cosine_matches_loop(small_system):
    emb, enrol, test, _ = small_system
    ref = [_cos(emb[e], emb[t]) for e, t in zip(enrol, test)]
    np.testing.assert_allclose(score_trials(emb, enrol, test), ref, atol=1e-6)
    e = np.stack([emb[u] for u in enrol])
    t = np.stack([emb[u] for u in test])
    np.testing.assert_allclose(cosine_scores(e, t, chunk_size=7), ref, atol=1e-6)


@pytest.mark.parametrize("norm,top_k", [("snorm", None), ("asnorm", 5), ("asnorm", 25)])
@pytest.mark.parametrize("mean_subtraction", [False, True])
def test_norm_matches_loop(small_system, norm, top_k, mean_subtraction):
    emb, enrol, test, cohort = small_system
    mean = cohort.mean(0) if mean_subtraction else None
    ref = _loop_norm(emb, enrol, test, list(cohort), top_k, mean)
    got = score_trials(emb, enrol, test, norm, cohort, top_k, mean_subtraction)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_snorm_asnorm_functions_match_loop(small_system):
    emb, enrol, test, cohort = small_system
    raw = score_trials(emb, enrol, test)
    e = np.stack([emb[u] for u in enrol])
    t = np.stack([emb[u] for u in test])
    np.testing.assert_allclose(
        snorm(raw, e, t, cohort), _loop_norm(emb, enrol, test, list(cohort)), atol=1e-5
    )
    ref = _loop_norm(emb, enrol, test, list(cohort), top_k=6)
    np.testing.assert_allclose(asnorm(raw, e, t, cohort, top_k=6), ref, atol=1e-5)
    # Same through unique rows + indices.
    utts = sorted(emb)
    u = np.stack([emb[x] for x in utts])
    ei = [utts.index(x) for x in enrol]
    ti = [utts.index(x) for x in test]
    np.testing.assert_allclose(asnorm(raw, u, u, cohort, 6, ei, ti), ref, atol=1e-5)


def test_cohort_statistics_chunking(small_system):
    emb, _, _, cohort = small_system
    x = np.stack(list(emb.values()))
    full = cohort_statistics(x, cohort, top_k=4)
    tiny = cohort_statistics(x, cohort, top_k=4, chunk_size=1)
    by_bytes = cohort_statistics(x, cohort, top_k=4, max_chunk_bytes=1)
    # Equal up to BLAS summation order, which depends on the block shape.
    for a, b, c in zip(full, tiny, by_bytes):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=1e-6)


def test_norm_bad_settings(small_system):
    emb, enrol, test, cohort = small_system
    with pytest.raises(ValueError, match="fewer than top_k=30"):
        score_trials(emb, enrol, test, "asnorm", cohort, top_k=30)
    with pytest.raises(ValueError, match="needs top_k"):
        score_trials(emb, enrol, test, "asnorm", cohort)
    with pytest.raises(ValueError, match="needs cohort"):
        score_trials(emb, enrol, test, "snorm")
    with pytest.raises(ValueError, match="needs cohort"):
        score_trials(emb, enrol, test, mean_subtraction=True)
    with pytest.raises(ValueError, match="norm must be one of"):
        score_trials(emb, enrol, test, "tnorm", cohort)
    with pytest.raises(ValueError, match="top_k must be at least 2"):
        cohort_statistics(cohort, cohort, top_k=1)
    with pytest.raises(KeyError, match="No embedding for 1 utterance"):
        score_trials(emb, enrol, ["missing"] + test[1:])
    with pytest.raises(ValueError, match="NaN or inf"):
        score_trials({**emb, enrol[0]: np.full(8, np.nan)}, enrol, test)


# --------------------------------------------------------------------------
# Score files, cohort CSV, DET plot
# --------------------------------------------------------------------------
def test_scores_file_round_trip(tmp_path):
    f = tmp_path / "scores.txt"
    write_scores(f, [1, 0, 1], ["a.wav"] * 3, ["b.wav", "c.wav", "d.wav"], [0.1234567, -2.0, 3.5])
    lines = f.read_text().splitlines()
    assert lines == ["1 a.wav b.wav 0.123457", "0 a.wav c.wav -2.000000", "1 a.wav d.wav 3.500000"]
    labels, scores = read_scores(f)
    assert labels.tolist() == [1, 0, 1]
    np.testing.assert_allclose(scores, [0.123457, -2.0, 3.5])
    with pytest.raises(ValueError, match="lengths differ"):
        write_scores(f, [1], ["a"], ["b", "c"], [0.0])
    (tmp_path / "bad.txt").write_text("1 a b 0.5\n1 a b\n")
    with pytest.raises(ValueError, match="bad.txt, line 2"):
        read_scores(tmp_path / "bad.txt")


def _write_csv(path, rows):
    path.write_text("ID,duration,wav,start,stop,spk_id\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_read_cohort_csv(tmp_path):
    rows = [(f"s{i}", 1.0, f"$data_root/w{i}.wav", 0, 16000, f"id{i % 3}") for i in range(20)]
    f = _write_csv(tmp_path / "train.csv", rows)
    ids, wavs, segs = read_cohort_csv(f, data_folder="/data")
    assert len(ids) == 20 and wavs["s3"] == "/data/w3.wav" and segs["s3"] == (0, 16000)
    sub = read_cohort_csv(f, cohort_size=5, seed=1)[0]
    assert len(sub) == 5 and sub == read_cohort_csv(f, cohort_size=5, seed=1)[0]
    assert sub != read_cohort_csv(f, cohort_size=5, seed=2)[0]
    with pytest.raises(ValueError, match="only 20 rows"):
        read_cohort_csv(f, cohort_size=21)


@pytest.mark.parametrize(
    "content,match",
    [
        ("ID,wav,start\na,x.wav,0\n", r"lacks column\(s\) \['stop'\]"),
        ("ID,wav,start,stop\na,x.wav,0,10\nb,x.wav,5,5\n", "line 3: start/stop"),
        ("ID,wav,start,stop\na,x.wav,0,10\na,y.wav,0,10\n", "line 3: duplicate ID 'a'"),
        ("ID,wav,start,stop\n", "has no rows"),
    ],
)
def test_read_cohort_csv_bad(tmp_path, content, match):
    f = tmp_path / "c.csv"
    f.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_cohort_csv(f)


def test_plot_det_several_systems(tmp_path):
    rng = np.random.default_rng(0)
    systems = {
        "teacher": (rng.normal(3, 1, 500), rng.normal(0, 1, 5000)),
        "student": (rng.normal(2, 1, 500), rng.normal(0, 1, 5000)),
    }
    out = plot_det(systems, tmp_path / "det.png", title="toy", max_points=50)
    assert out.read_bytes()[:8] == PNG_MAGIC

    # Result folders as written by evaluate_model.
    folders = []
    for name, (tgt, non) in systems.items():
        d = tmp_path / name
        d.mkdir()
        labels = np.r_[np.ones(tgt.size), np.zeros(non.size)].astype(int)
        n = labels.size
        write_scores(d / "scores_O.txt", labels, ["e"] * n, ["t"] * n, np.r_[tgt, non])
        (d / scoring.RESULTS_FILE).write_text(json.dumps({"trials": {"O": {"scores_file": "scores_O.txt"}}}))
        folders.append(d)
    assert plot_det(folders, tmp_path / "det2.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(KeyError, match="no trial list 'H'"):
        plot_det(folders, tmp_path / "det3.png", trial_list="H")
