"""Comparing a variant with its reference on the same images: paired DeLong test, decision flips, retention.

A quantized or pruned model is only as good as the screening decisions it still makes. This module answers
three questions for a variant scored on the same images as its reference (usually the float model):

- **Is the AUROC drop real?** :func:`delong_test` — the paired nonparametric test of DeLong, DeLong and
  Clarke-Pearson (Biometrics 1988), computed with the fast midrank algorithm of Sun and Xu (IEEE SPL 2014).
  Both models are scored on the *same* cases, so their AUROCs are correlated; the test uses the covariance
  of the structural components instead of treating the two AUROCs as independent.
- **Does it change decisions?** :func:`flip_rate` — the share of images whose screening decision (score at
  the reference's recommended threshold) differs from the reference's. Decisions and flip rates live in
  ``edgeretina.runtime.decisions`` (re-exported here), the same code as the export's agreement figure.
- **How much is kept, per what?** :func:`retention` and :func:`auroc_density` (AUROC per million parameters,
  per million non-zero parameters, or per MB).

The single-model AUROC bootstrap CI is ``edgeretina.metrics.bootstrap_auroc`` (shared with training);
:func:`bootstrap_mean_auroc_ci` adds the CI of a multi-label model's mean AUROC and
:func:`paired_mean_auroc_delta_ci` the paired CI of the difference of two models' mean AUROCs. Grading:
:func:`quadratic_kappa` (NumPy, = scikit-learn's ``cohen_kappa_score(weights="quadratic")``, fast enough to
resample) and :func:`bootstrap_ci` (percentile CI of any statistic of resampled images; one index draw for
both models of a paired difference).

Pure NumPy/SciPy; no TensorFlow. ``scipy.stats`` (seconds to import) is loaded by :func:`_stats` when a test
runs, so that importing the bench (and the CLI that names it) stays fast.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeretina.runtime.decisions import decisions, flip_rate, label_flip_rate

__all__ = [
    "DeLongResult",
    "auroc_variance",
    "delong_test",
    "structural_components",
    "flip_rate",
    "decisions",
    "retention",
    "auroc_density",
    "bootstrap_mean_auroc_ci",
    "paired_mean_auroc_delta_ci",
    "bootstrap_ci",
    "quadratic_kappa",
    "label_flip_rate",
    "wilson_ci",
]


def _stats():
    """``scipy.stats``, imported on first use (a heavy import, deferred like TensorFlow: docs/ARCHITECTURE.md)."""
    from scipy import stats

    return stats


def wilson_ci(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (default 95 %): tight and never outside [0, 1], also
    for ``k = 0`` (flip rates on agreement data). ``(nan, nan)`` for ``n = 0``."""
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"wilson_ci needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else float(lo)), (1.0 if k == n else float(hi))


def _binary_labels(y) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    u = np.unique(y)
    if not np.all(np.isin(u, (0, 1))):
        raise ValueError(f"labels must be 0/1, got values {u[:5].tolist()}")
    if len(u) < 2:
        raise ValueError("AUROC needs both classes among the labels (only one class present)")
    return y.astype(bool)


def structural_components(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong's structural components of one or several score vectors over the same cases.

    ``scores`` is ``(N,)`` or ``(k, N)``. Returns ``(auc (k,), v10 (k, m), v01 (k, n))`` where ``m`` is the
    number of positives and ``n`` of negatives: ``v10[i]`` = P(score of positive i > a random negative)
    (ties count one half) and ``v01[j]`` = P(a random positive > score of negative j). Midranks make this
    O(N log N) (Sun & Xu 2014).
    """
    yb = _binary_labels(y)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != yb.size:
        raise ValueError(f"scores have {s.shape[1]} cases but labels have {yb.size}")
    pos, neg = s[:, yb], s[:, ~yb]
    m, n = pos.shape[1], neg.shape[1]
    stats = _stats()
    tx = stats.rankdata(pos, axis=1)  # midranks within positives
    ty = stats.rankdata(neg, axis=1)  # midranks within negatives
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks over all cases
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return auc, v10, v01


def _covariance(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(v10), len(v10)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(v01), len(v01)))
    return s10 / m + s01 / n


def auroc_variance(y, scores) -> tuple[float, float]:
    """AUROC and its DeLong variance for one score vector."""
    auc, v10, v01 = structural_components(y, scores)
    return float(auc[0]), float(_covariance(v10, v01)[0, 0])


@dataclass(frozen=True)
class DeLongResult:
    """Paired DeLong test of ``auc_a`` vs ``auc_b`` on the same cases (two-sided)."""

    auc_a: float
    auc_b: float
    delta: float  # auc_a - auc_b
    se: float  # standard error of the difference
    z: float
    p: float
    n_pos: int
    n_neg: int

    def ci95(self) -> tuple[float, float]:
        """Normal-approximation 95 % CI of ``auc_a - auc_b``."""
        h = 1.959963984540054 * self.se
        return (self.delta - h, self.delta + h)

    def to_dict(self) -> dict:
        return asdict(self)


def delong_test(y, scores_a, scores_b) -> DeLongResult:
    """Paired two-sided DeLong test that two models scored on the same cases have equal AUROC.

    Identical score vectors (or any pair whose difference has zero variance and zero mean) give p = 1.
    """
    s_a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    s_b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    if s_a.shape != s_b.shape:
        raise ValueError(f"paired test needs the same cases: {s_a.size} vs {s_b.size} scores")
    auc, v10, v01 = structural_components(y, np.stack([s_a, s_b]))
    cov = _covariance(v10, v01)
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    delta = float(auc[0] - auc[1])
    se = float(np.sqrt(max(var, 0.0)))
    if se <= 1e-15:
        z, p = (0.0, 1.0) if abs(delta) <= 1e-15 else (float(np.sign(delta) * np.inf), 0.0)
    else:
        z = delta / se
        p = float(2.0 * _stats().norm.sf(abs(z)))
    return DeLongResult(float(auc[0]), float(auc[1]), delta, se, float(z), min(p, 1.0),
                        int(v10.shape[1]), int(v01.shape[1]))


def retention(value, reference) -> float | None:
    """``value / reference`` (e.g. AUROC retention); ``None`` when either is missing or the reference is 0."""
    if value is None or reference is None:
        return None
    if not np.isfinite(value) or not np.isfinite(reference) or reference == 0:
        return None
    return float(value / reference)


def auroc_density(auroc, amount) -> float | None:
    """AUROC per unit of ``amount`` (millions of parameters, or MB); ``None`` when undefined."""
    if auroc is None or amount is None or not np.isfinite(auroc) or amount <= 0:
        return None
    return float(auroc / amount)


def _rank_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``pos`` (k, m) against the same row of ``neg`` (k, n), via midranks."""
    m, n = pos.shape[1], neg.shape[1]
    tz = _stats().rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)


def _mean_aurocs(Y: np.ndarray, S: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean per-label AUROC of each model in ``S`` (k, N, L) on the images ``idx``; labels whose draw holds a
    single class are left out (of every model's mean alike). NaN when no label is left."""
    vals = []
    for j in range(Y.shape[1]):
        yy = Y[idx, j]
        if yy.all() or not yy.any():
            continue
        ss = S[:, idx, j]
        vals.append(_rank_auc(ss[:, yy], ss[:, ~yy]))
    return np.mean(vals, axis=0) if vals else np.full(len(S), np.nan)


def _draw_mean_aurocs(y, scores: list, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) mean AUROCs of k score matrices over the same resampled images."""
    Y = np.asarray(y).reshape(len(y), -1).astype(bool)
    S = np.stack([np.asarray(s, dtype=np.float64).reshape(len(Y), -1) for s in scores])
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, len(S)))
    for b in range(n_boot):
        means[b] = _mean_aurocs(Y, S, rng.integers(0, len(Y), size=len(Y)))
    return means


def bootstrap_mean_auroc_ci(y, scores, n_boot: int = 1000, alpha: float = 0.05,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean per-label AUROC of multi-label ``y``/``scores`` (N, L).

    Images are resampled as a whole (labels of one image stay together); a label whose draw holds a single
    class is left out of that draw's mean.
    """
    means = _draw_mean_aurocs(y, [scores], n_boot, seed)[:, 0]
    means = means[np.isfinite(means)]
    lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def paired_mean_auroc_delta_ci(y, scores, ref_scores, n_boot: int = 1000, alpha: float = 0.05,
                               seed: int = 0) -> tuple[float, float] | None:
    """Paired percentile bootstrap CI of mean AUROC(``scores``) − mean AUROC(``ref_scores``) (multi-label,
    (N, L) each): both models on the same resampled images, the same labels left out of a draw."""
    if not n_boot:
        return None
    d = np.diff(_draw_mean_aurocs(y, [ref_scores, scores], n_boot, seed), axis=1)[:, 0]
    d = d[np.isfinite(d)]
    if not d.size:
        return None
    lo, hi = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def quadratic_kappa(y, pred, n_classes: int) -> float:
    """Quadratic weighted Cohen's κ of integer grades ``y`` vs ``pred`` in 0..``n_classes``−1 (the value of
    scikit-learn's ``cohen_kappa_score(y, pred, weights="quadratic", labels=range(n_classes))``); NaN when
    undefined (e.g. every image of one grade, predicted the same)."""
    y = np.asarray(y).reshape(-1).astype(int)
    p = np.asarray(pred).reshape(-1).astype(int)
    k = int(n_classes)
    if y.size == 0 or k < 2:
        return float("nan")
    o = np.bincount(y * k + p, minlength=k * k).reshape(k, k).astype(np.float64)
    e = np.outer(o.sum(axis=1), o.sum(axis=0)) / y.size
    i = np.arange(k)
    w = (i[:, None] - i[None, :]) ** 2 / (k - 1) ** 2
    den = float((w * e).sum())
    return float(1.0 - (w * o).sum() / den) if den > 0 else float("nan")


def bootstrap_ci(stat, n: int, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap CI of ``stat(idx)`` over ``n_boot`` draws of ``n`` image indices with
    replacement. A paired difference (variant − reference on the same images) is one ``stat`` of both, so
    each draw resamples the two together. Draws where ``stat`` is NaN are dropped; None without draws."""
    if not n_boot or n <= 0:
        return None
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, size=n)) for _ in range(n_boot)], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return None
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)
