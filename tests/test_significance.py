"""Tests of speechbrain_imlkd.significance: speaker-bootstrap intervals.

Timing of the vectorised resampling (1000 resamples, 40,000 trials, 1,000
speakers; about 1.3 s on one core) was measured with a one-off script that
calls ``bootstrap_ci(scores, labels, spk, n_boot=1000)`` under
``OMP_NUM_THREADS=1``; it is not repeated here to keep the suite fast.
"""

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch

from speechbrain_imlkd.data.trials import read_trials
from speechbrain_imlkd.scoring import compute_eer, compute_min_dcf
from speechbrain_imlkd.significance import (
    BootstrapResult,
    bootstrap_ci,
    format_ci,
    paired_comparison,
    speaker_resamples,
    speakers_of_trials,
)

VOX = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voxceleb1"

# Synthetic score model: score = MU * label + c_spk + d_spk * label + noise,
# with c ~ N(0, SC^2) shared by all trials of a speaker and d ~ N(0, SD^2)
# shared by its target trials: trials of one speaker are correlated.
MU, SC, SD = 2.0, 0.8, 0.8


def _true_eer(mu=MU, sc=SC, sd=SD):
    """Population EER of the model: marginals N(mu, 1+sc²+sd²) vs N(0, 1+sc²).

    Equal miss and false-alarm rates at t with (mu - t)/s_t = t/s_n, i.e.
    EER = Phi(-mu / (s_t + s_n)).
    """
    s_t = np.sqrt(1 + sc**2 + sd**2)
    s_n = np.sqrt(1 + sc**2)
    return NormalDist().cdf(-mu / (s_t + s_n))


def _draw(rng, n_speakers, n_tgt, n_non, mu=MU, sc=SC, sd=SD):
    """Scores, labels and speakers of ``n_speakers`` blocks of trials."""
    spk = np.repeat(np.arange(n_speakers), n_tgt + n_non)
    lab = np.tile(np.r_[np.ones(n_tgt), np.zeros(n_non)], n_speakers).astype(int)
    c = rng.normal(0, sc, n_speakers)
    d = rng.normal(0, sd, n_speakers)
    scores = mu * lab + c[spk] + d[spk] * lab + rng.normal(size=spk.size)
    return scores, lab, spk


def test_true_eer_formula_matches_a_huge_sample():
    """The closed form used as ground truth agrees with a large sample."""
    s, lab, _ = _draw(np.random.default_rng(7), 20000, 5, 15)
    eer = compute_eer(s[lab == 1], s[lab == 0])[0]
    assert abs(eer - _true_eer()) < 0.005


def test_interval_covers_true_eer_at_nominal_rate():
    """95% speaker-bootstrap intervals of small sets cover the population EER."""
    rng = np.random.default_rng(2024)
    true = _true_eer()
    n_rep = 150
    hits = 0
    for rep in range(n_rep):
        s, lab, spk = _draw(rng, 60, 5, 15)
        r = bootstrap_ci(s, lab, spk, n_boot=200, seed=rep)
        assert r.low <= r.estimate <= r.high
        hits += r.low <= true <= r.high
    assert 0.85 <= hits / n_rep <= 0.99, hits / n_rep


@pytest.mark.parametrize("metric", ["eer", "min_dcf"])
def test_replicates_equal_naive_whole_speaker_resamples(metric):
    """Fast path == concatenating each drawn speaker's trial block, per draw."""
    s, lab, spk = _draw(np.random.default_rng(1), 15, 3, 9)
    # Shuffle trials so that speakers' blocks are not contiguous.
    perm = np.random.default_rng(2).permutation(s.size)
    s, lab, spk = s[perm], lab[perm], spk[perm]
    n_boot, seed = 40, 11
    r = bootstrap_ci(s, lab, spk, metric=metric, n_boot=n_boot, seed=seed, p_target=0.05)
    blocks = [np.flatnonzero(spk == k) for k in range(15)]
    expected = []
    for counts in speaker_resamples(15, n_boot, seed):
        idx = np.concatenate([np.repeat(blocks[k], counts[k]) for k in range(15)])
        tgt, non = s[idx][lab[idx] == 1], s[idx][lab[idx] == 0]
        if metric == "eer":
            expected.append(compute_eer(tgt, non)[0])
        else:
            expected.append(compute_min_dcf(tgt, non, p_target=0.05)[0])
    np.testing.assert_array_equal(r.replicates, expected)
    assert r.replicates.std() > 0  # the resamples really differ


def test_resamples_hold_whole_speakers_only():
    """With one distinct score per speaker, a resample is whole blocks.

    Speaker k's target trials all score 10k + 1 and its non-target trials
    10k, so the resampled multiset reveals, per speaker, how many of its
    trials came along: always a multiple of its block size, by the same
    multiplicity for its target and non-target trials.
    """
    n_spk, n_tgt, n_non = 8, 3, 5
    spk = np.repeat(np.arange(n_spk), n_tgt + n_non)
    lab = np.tile(np.r_[np.ones(n_tgt), np.zeros(n_non)], n_spk).astype(int)
    scores = 10.0 * spk + lab
    # Reach the fast path's resampler through the public entry point's parts.
    from speechbrain_imlkd.significance import _SortedSystem

    system = _SortedSystem(scores, lab.astype(bool), spk)
    for counts in speaker_resamples(n_spk, 30, seed=5):
        tgt, non = system.resample(counts)
        got_t = np.bincount((tgt // 10).astype(int), minlength=n_spk)
        got_n = np.bincount((non // 10).astype(int), minlength=n_spk)
        np.testing.assert_array_equal(got_t, counts * n_tgt)
        np.testing.assert_array_equal(got_n, counts * n_non)
        assert np.all(np.diff(tgt) >= 0) and np.all(np.diff(non) >= 0)


def test_speaker_clusters_widen_the_interval_when_speakers_correlate():
    """Trial-level resampling understates the spread of correlated trials."""

    def width_ratio(sc, sd):
        s, lab, spk = _draw(np.random.default_rng(3), 30, 20, 60, sc=sc, sd=sd)
        by_spk = bootstrap_ci(s, lab, spk, n_boot=200)
        by_trial = bootstrap_ci(s, lab, np.arange(s.size), n_boot=200)
        return (by_spk.high - by_spk.low) / (by_trial.high - by_trial.low)

    assert width_ratio(1.0, 1.0) > 1.5
    assert width_ratio(0.0, 0.0) < 1.3  # no correlation: both alike


def test_seed_determinism():
    s, lab, spk = _draw(np.random.default_rng(4), 20, 4, 8)
    a = bootstrap_ci(s, lab, spk, n_boot=50, seed=9)
    b = bootstrap_ci(s, lab, spk, n_boot=50, seed=9)
    c = bootstrap_ci(s, lab, spk, n_boot=50, seed=10)
    np.testing.assert_array_equal(a.replicates, b.replicates)
    assert (a.low, a.high) == (b.low, b.high)
    assert not np.array_equal(a.replicates, c.replicates)


def test_result_fields_and_inputs_of_other_types():
    s, lab, spk = _draw(np.random.default_rng(5), 12, 2, 6)
    names = np.array([f"id{10000 + k}" for k in spk])
    r = bootstrap_ci(torch.tensor(s, dtype=torch.float32), lab.tolist(), names, n_boot=30)
    s32 = s.astype(np.float32)
    assert r.estimate == compute_eer(s32[lab == 1], s32[lab == 0])[0]
    assert (r.n_speakers, r.n_target, r.n_nontarget, r.n_boot) == (12, 24, 72, 30)
    assert r.level == 0.95 and r.metric == "eer" and r.replicates.shape == (30,)
    dcf = bootstrap_ci(s, lab, spk, metric="min_dcf", p_target=0.05, n_boot=30)
    assert dcf.estimate == compute_min_dcf(s[lab == 1], s[lab == 0], p_target=0.05)[0]


def test_paired_identical_systems():
    s, lab, spk = _draw(np.random.default_rng(6), 25, 4, 12)
    r = paired_comparison(s, s.copy(), lab, spk, n_boot=100)
    assert r.difference == 0.0 and r.low == 0.0 and r.high == 0.0
    assert r.p_a_better == 0.5
    np.testing.assert_array_equal(r.replicates_a, r.replicates_b)


def test_paired_equal_quality_systems_give_no_verdict():
    """Two different systems of the same quality: p is far from 0 and 1."""
    rng = np.random.default_rng(8)
    s, lab, spk = _draw(rng, 40, 5, 15)
    a = s + rng.normal(0, 0.5, s.size)
    b = s + rng.normal(0, 0.5, s.size)
    r = paired_comparison(a, b, lab, spk, n_boot=200)
    assert 0.05 < r.p_a_better < 0.95
    assert r.low < 0 < r.high


def test_paired_clearly_better_system():
    rng = np.random.default_rng(9)
    s, lab, spk = _draw(rng, 40, 5, 15)
    better = s + 1.5 * lab  # wider target/non-target gap
    r = paired_comparison(better, s, lab, spk, n_boot=200, seed=1)
    assert r.p_a_better > 0.99
    assert r.difference < 0 and r.high < 0
    assert r.estimate_a == compute_eer(better[lab == 1], better[lab == 0])[0]
    flipped = paired_comparison(s, better, lab, spk, n_boot=200, seed=1)
    assert flipped.p_a_better < 0.01
    assert flipped.difference == pytest.approx(-r.difference)


def test_paired_uses_the_same_resamples_as_bootstrap_ci():
    s, lab, spk = _draw(np.random.default_rng(10), 20, 3, 9)
    other = s + np.random.default_rng(11).normal(0, 0.3, s.size)
    r = paired_comparison(s, other, lab, spk, n_boot=40, seed=4)
    np.testing.assert_array_equal(
        r.replicates_a, bootstrap_ci(s, lab, spk, n_boot=40, seed=4).replicates
    )
    np.testing.assert_array_equal(
        r.replicates_b, bootstrap_ci(other, lab, spk, n_boot=40, seed=4).replicates
    )


def test_paired_mismatched_inputs():
    s, lab, spk = _draw(np.random.default_rng(12), 10, 2, 4)
    with pytest.raises(ValueError, match="scores_b has 59 scores but there are 60"):
        paired_comparison(s, s[:-1], lab, spk)
    with pytest.raises(ValueError, match="labels has 59 entries"):
        paired_comparison(s, s, lab[:-1], spk)
    with pytest.raises(ValueError, match="speakers has 59 entries"):
        paired_comparison(s, s, lab, spk[:-1])
    lab_b = lab.copy()
    lab_b[[3, 7]] = 1 - lab_b[[3, 7]]
    with pytest.raises(ValueError, match="labels_b disagrees with labels on 2 trial.*trial 3"):
        paired_comparison(s, s, lab, spk, labels_b=lab_b)
    paired_comparison(s, s, lab, spk, labels_b=lab.copy(), n_boot=5)  # equal: fine


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, 95])
def test_bad_level_is_named(level):
    s, lab, spk = _draw(np.random.default_rng(13), 5, 2, 4)
    with pytest.raises(ValueError, match=f"level must be in \\(0, 1\\), got {level}"):
        bootstrap_ci(s, lab, spk, level=level)
    with pytest.raises(ValueError, match=f"got {level}"):
        paired_comparison(s, s, lab, spk, level=level)


@pytest.mark.parametrize("n_boot", [0, -3, 2.5, True, "100"])
def test_bad_n_boot_is_named(n_boot):
    s, lab, spk = _draw(np.random.default_rng(14), 5, 2, 4)
    with pytest.raises(ValueError, match=f"n_boot must be a positive integer, got {n_boot!r}"):
        bootstrap_ci(s, lab, spk, n_boot=n_boot)


def test_other_bad_inputs():
    s, lab, spk = _draw(np.random.default_rng(15), 5, 2, 4)
    with pytest.raises(ValueError, match="metric must be one of .* got 'auc'"):
        bootstrap_ci(s, lab, spk, metric="auc")
    with pytest.raises(ValueError, match="p_target must be in \\(0, 1\\), got 2"):
        bootstrap_ci(s, lab, spk, metric="min_dcf", p_target=2)
    bad = s.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match="non-finite score.*trial 4"):
        bootstrap_ci(bad, lab, spk)
    with pytest.raises(ValueError, match="labels must be 0 or 1.*trial 0: 2"):
        bootstrap_ci(s, np.where(np.arange(s.size) == 0, 2, lab), spk)
    with pytest.raises(ValueError, match="0 non-target trials"):
        bootstrap_ci(s, np.ones_like(lab), spk)
    with pytest.raises(ValueError, match="1 speaker\\(s\\).*at least 2"):
        bootstrap_ci(s, lab, np.zeros_like(spk))
    with pytest.raises(ValueError, match="must be 1-D"):
        bootstrap_ci(s.reshape(5, -1), lab, spk)


def test_resample_without_targets_is_an_error():
    """Only one of many speakers has target trials: some resamples miss it."""
    spk = np.repeat(np.arange(10), 4)
    lab = np.zeros(spk.size, dtype=int)
    lab[:2] = 1
    s = np.random.default_rng(16).normal(size=spk.size) + lab
    with pytest.raises(ValueError, match="drew no target trial: only 1 speaker"):
        bootstrap_ci(s, lab, spk, n_boot=100)


def test_test_speakers_check_the_labels():
    enrol = np.array(["a", "a", "b", "b"])
    test = np.array(["a", "b", "b", "a"])
    s = np.array([0.9, 0.1, 0.8, 0.2])
    r = bootstrap_ci(s, [1, 0, 1, 0], enrol, test_speakers=test, n_boot=10)
    assert r.n_speakers == 2
    differ = "1 target trials whose enrolment and test speakers differ, first at trial 1"
    with pytest.raises(ValueError, match=differ):
        bootstrap_ci(s, [1, 1, 1, 0], enrol, test_speakers=test)
    same = "non-target trials whose enrolment and test speakers are the same, first at trial 0"
    with pytest.raises(ValueError, match=same):
        bootstrap_ci(s, [0, 0, 1, 0], enrol, test_speakers=test)


def test_speakers_of_trials_rules():
    assert speakers_of_trials(
        ["id10270/x6uYqmx31kE/00001.wav", "id10309/0cYFdtyWVds/00005.wav"]
    ).tolist() == ["id10270", "id10309"]
    assert speakers_of_trials(
        ["19-198-0001", "19-198-0001_w2", "8842-304647-0010.flac", "19/198/19-198-0001.flac"]
    ).tolist() == ["19", "19", "8842", "19"]
    custom = speakers_of_trials(["spkA_1", "spkB_2"], speaker_fn=lambda p: p.split("_")[0])
    assert custom.tolist() == ["spkA", "spkB"]
    with pytest.raises(ValueError, match="cannot tell the speaker of 'utt7'"):
        speakers_of_trials(["id10270/a/1.wav", "utt7"])
    with pytest.raises(ValueError, match="cannot tell the speaker of '/abs/a.wav'"):
        speakers_of_trials(["/abs/a.wav"])
    with pytest.raises(ValueError, match="speaker_fn returned None for trial path 1"):
        speakers_of_trials(["a", "b"], speaker_fn=lambda p: None if p == "b" else p)


def test_real_voxceleb1_trial_structure():
    """Real VoxCeleb1-O list: 40 enrolment speakers, labels match speakers."""
    path = VOX / "veri_test2.txt"
    if not path.is_file():
        pytest.skip(f"real VoxCeleb1 trial list {path} absent (needs ../shared/data)")
    trials = read_trials(path)
    enrol = speakers_of_trials(trials.enrol)
    test = speakers_of_trials(trials.test)
    scores = trials.labels * 2.0 + np.random.default_rng(0).normal(size=len(enrol))
    r = bootstrap_ci(scores, trials.labels, enrol, test_speakers=test, n_boot=20)
    assert r.n_speakers == 40
    assert (r.n_target, r.n_nontarget) == (18802, 37611 - 18802)


def test_format_ci():
    r = BootstrapResult("eer", 0.123, 0.101, 0.146, 0.95, 1000, 40, 1, 1)
    assert format_ci(r, digits=1) == "12.3% [10.1, 14.6]"
    assert format_ci(r) == "12.30% [10.10, 14.60]"
    s, lab, spk = _draw(np.random.default_rng(17), 10, 2, 4)
    p = paired_comparison(s, s, lab, spk, n_boot=5)
    assert format_ci(p) == "0.00% [0.00, 0.00]"
    d = bootstrap_ci(s, lab, spk, metric="min_dcf", n_boot=5)
    text = format_ci(d)
    assert "%" not in text and text.startswith(f"{d.estimate:.3f} [")


# ---------------------------------------------------------------------------
# Seed-averaged comparison of several methods
# ---------------------------------------------------------------------------
def _method_scores(rng, labels, separation, n_seeds):
    return [labels * separation + rng.normal(size=labels.size) for _ in range(n_seeds)]


def test_compare_methods_seed_mean_interval_and_paired_result():
    from speechbrain_imlkd.significance import compare_methods

    rng = np.random.default_rng(3)
    labels = np.tile([1, 0, 0, 0, 0], 80)
    speakers = np.repeat(np.arange(40), 10)
    runs = {
        "kd": _method_scores(rng, labels, 1.0, 3),
        "imlkd": _method_scores(rng, labels, 2.5, 3),
        "same": None,
    }
    runs["same"] = [s.copy() for s in runs["kd"]]
    out = compare_methods(runs, labels, speakers, reference="kd", n_boot=300, seed=1)
    assert list(out) == ["kd", "imlkd", "same"]
    kd, iml, same = out["kd"], out["imlkd"], out["same"]
    for summary in out.values():
        assert summary.n_seeds == 3 and len(summary.per_seed) == 3
        assert summary.low <= summary.mean <= summary.high
        assert summary.seed_std == pytest.approx(np.std(summary.per_seed, ddof=1))
    assert kd.difference is None and kd.p_better is None
    assert iml.mean < kd.mean and iml.p_better > 0.99 and iml.diff_high < 0
    # A copy of the reference: no difference on any resample.
    assert same.difference == 0.0 and same.p_better == 0.5
    assert same.diff_low == same.diff_high == 0.0


def test_compare_methods_bad_input():
    from speechbrain_imlkd.significance import compare_methods

    labels = np.tile([1, 0], 10)
    speakers = np.repeat(np.arange(5), 4)
    scores = [np.random.default_rng(0).normal(size=20)]
    with pytest.raises(ValueError, match="reference"):
        compare_methods({"kd": scores}, labels, speakers, reference="nope")
    with pytest.raises(ValueError, match="no run"):
        compare_methods({"kd": scores, "x": []}, labels, speakers)
    with pytest.raises(ValueError, match="19"):
        compare_methods({"kd": [np.zeros(19)]}, labels, speakers)
