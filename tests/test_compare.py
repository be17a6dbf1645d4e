"""edgeretina.compare: DeLong (vs a direct O(n²) computation and published numbers), flips, bootstrap CI."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from edgeretina import compare


def _psi(x, y):
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _delong_direct(y, a, b):
    """DeLong et al. (1988) written out literally: placement values by double loops, then the
    covariance of the two AUROCs and the z statistic of their difference."""
    y = np.asarray(y).astype(bool)
    scores = [np.asarray(a, float), np.asarray(b, float)]
    X = [s[y] for s in scores]  # positives
    Y = [s[~y] for s in scores]  # negatives
    m, n = len(X[0]), len(Y[0])
    V10 = np.array([[np.mean([_psi(X[r][i], Y[r][j]) for j in range(n)]) for i in range(m)] for r in range(2)])
    V01 = np.array([[np.mean([_psi(X[r][i], Y[r][j]) for i in range(m)]) for j in range(n)] for r in range(2)])
    auc = V10.mean(axis=1)
    S10 = np.array([[np.sum((V10[r] - auc[r]) * (V10[s] - auc[s])) / (m - 1) for s in range(2)] for r in range(2)])
    S01 = np.array([[np.sum((V01[r] - auc[r]) * (V01[s] - auc[s])) / (n - 1) for s in range(2)] for r in range(2)])
    S = S10 / m + S01 / n
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    z = (auc[0] - auc[1]) / np.sqrt(var)
    return auc, S, z, 2 * stats.norm.sf(abs(z))


def test_delong_matches_direct_quadratic_computation_with_ties():
    rng = np.random.default_rng(3)
    n = 90
    y = rng.integers(0, 2, n)
    a = np.round(y * 0.8 + rng.normal(0, 1, n), 1)  # rounding makes ties within and across classes
    b = np.round(y * 0.4 + 0.5 * a + rng.normal(0, 1, n), 1)
    auc_ref, S_ref, z_ref, p_ref = _delong_direct(y, a, b)
    r = compare.delong_test(y, a, b)
    assert r.auc_a == pytest.approx(auc_ref[0], abs=1e-12)
    assert r.auc_b == pytest.approx(auc_ref[1], abs=1e-12)
    assert r.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r.se ** 2 == pytest.approx(S_ref[0, 0] + S_ref[1, 1] - 2 * S_ref[0, 1], rel=1e-10)
    assert r.z == pytest.approx(z_ref, rel=1e-10)
    assert r.p == pytest.approx(p_ref, rel=1e-10)
    _, var_a = compare.auroc_variance(y, a)
    assert var_a == pytest.approx(S_ref[0, 0], rel=1e-10)


def test_hanley_mcneil_published_example():
    # Hanley & McNeil (Radiology 1982), Table 1: CT ratings of 58 normal and 51 abnormal cases on a 5-point
    # scale; published AUROC 0.893 with standard error 0.032 (their exponential approximation).
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    s = np.concatenate([np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)])
    y = np.concatenate([np.zeros(58), np.ones(51)])
    auc, var = compare.auroc_variance(y, s)
    assert round(auc, 3) == 0.893
    assert np.sqrt(var) == pytest.approx(0.032, abs=0.002)  # DeLong's SE agrees with theirs: 0.0307


def test_delong_model_against_itself_and_separable_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(0, 1, 200)
    r = compare.delong_test(y, s, s)
    assert (r.delta, r.p, r.z) == (0.0, 1.0, 0.0)
    # a monotone transform keeps every rank: same AUROC, p = 1
    assert compare.delong_test(y, s, np.exp(s)).p == 1.0
    perfect = compare.auroc_variance([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert perfect == (1.0, 0.0)


def test_delong_detects_a_real_difference_and_holds_its_size_under_the_null():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 2, n)
    good = 1.5 * y + rng.normal(0, 1, n)
    poor = 0.3 * y + rng.normal(0, 1, n)
    assert compare.delong_test(y, good, poor).p < 1e-6
    # Under H0 (two equally good, correlated models) about 5 % of tests reject at 0.05.
    rejections = 0
    trials = 300
    for _ in range(trials):
        y = rng.integers(0, 2, 150)
        shared = rng.normal(0, 1, 150)
        a = y + shared + rng.normal(0, 1, 150)
        b = y + shared + rng.normal(0, 1, 150)
        rejections += compare.delong_test(y, a, b).p < 0.05
    assert 0.015 <= rejections / trials <= 0.10


def test_delong_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same cases"):
        compare.delong_test([0, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="one class"):
        compare.delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])


def test_flip_rate():
    rng = np.random.default_rng(0)
    s = rng.random(500)
    assert compare.flip_rate(s, s, 0.5) == 0.0
    assert compare.flip_rate([0.2, 0.6, 0.7, 0.4], [0.2, 0.4, 0.7, 0.6], 0.5) == 0.5
    # multi-label: an image flips when any label decision changes; per-label thresholds
    ref = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.6]])
    var = np.array([[0.9, 0.1], [0.2, 0.45], [0.6, 0.6]])
    assert compare.flip_rate(ref, var, [0.5, 0.4]) == pytest.approx(1 / 3)
    assert compare.flip_rate(ref, var, [0.5, 0.5]) == 0.0
    assert compare.label_flip_rate([0, 1, 2, 2], [0, 1, 2, 3]) == 0.25


def test_bootstrap_ci_covers_the_estimate_and_narrows_with_n():
    """The bench's AUROC CI (edgeretina.metrics.bootstrap_auroc, shared with training) and the multi-label
    mean-AUROC CI both contain the point estimate and shrink like 1/sqrt(n)."""
    from edgeretina.benchmarks.scoring import _bootstrap_ci

    rng = np.random.default_rng(7)
    widths, widths_ml = [], []
    for n in (100, 900):
        y = rng.integers(0, 2, n)
        s = y + rng.normal(0, 1.2, n)
        auc = roc_auc_score(y, s)
        lo, hi = _bootstrap_ci(y, s, n_boot=400, seed=0)
        assert lo < auc < hi
        widths.append(hi - lo)
        Y = rng.integers(0, 2, (n, 2))
        S = Y + rng.normal(0, 1.2, (n, 2))
        lo, hi = compare.bootstrap_mean_auroc_ci(Y, S, n_boot=200, seed=0)
        assert lo < np.mean([roc_auc_score(Y[:, j], S[:, j]) for j in range(2)]) < hi
        widths_ml.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n): 3x narrower for 9x the images
    assert widths_ml[1] < widths_ml[0] / 2
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(0, 1, 200)
    assert _bootstrap_ci(y, s, 200, seed=5) == _bootstrap_ci(y, s, 200, seed=5)  # deterministic under a seed
    assert _bootstrap_ci(y, s, 0, seed=5) is None


def test_bootstrap_mean_auroc_ci_multilabel():
    rng = np.random.default_rng(2)
    Y = rng.integers(0, 2, (400, 3))
    S = Y + rng.normal(0, 1, (400, 3))
    mean_auc = np.mean([roc_auc_score(Y[:, j], S[:, j]) for j in range(3)])
    lo, hi = compare.bootstrap_mean_auroc_ci(Y, S, n_boot=300)
    assert lo < mean_auc < hi and hi - lo < 0.1


def test_retention_and_density():
    assert compare.retention(0.85, 0.9) == pytest.approx(0.85 / 0.9)
    assert compare.retention(None, 0.9) is None and compare.retention(0.8, 0.0) is None
    assert compare.auroc_density(0.9, 2.25) == pytest.approx(0.4)
    assert compare.auroc_density(0.9, 0) is None
