"""The ``linear`` head recipe: a strongly regularised logistic regression on the frozen backbone's pooled
features, solved exactly (L-BFGS) and written into the model's ``head_logits`` layer.

Why it exists: on ODIR glaucoma the two-phase SGD fine-tune does not beat a linear probe on frozen ImageNet
features under patient-level cross-validation, and an L2 penalty much stronger than the usual (C ≈ 3e-4 on
standardised features rather than 0.1) generalises best (docs/benchmarks/glaucoma_recipe.md). The penalty
is chosen per fit by an inner, patient-grouped K-fold over the fitting records only — so an outer CV around
it stays honest (nested) and the final fit never sees the test split.

The fitted model is still one plain Keras graph (backbone → GAP → Dense → softmax/sigmoid): the feature
standardisation is folded into the Dense weights (w' = w / σ, b' = b − Σ w μ / σ), so every export variant,
LiteRT and the Android app run it unchanged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeretina.errors import ModelError
from edgeretina.tasks import TaskKind, TaskSpec
from edgeretina.train.consistency import AUROC_TOLERANCE, choose_lambda, relative_nuisance

#: the inverse L2 strengths searched (standardised features); the ODIR optimum sits inside the range
DEFAULT_CS: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


@dataclass(frozen=True)
class LinearHeadOptions:
    """The searched inverse penalties ``cs``, the inner fold count, the class weighting and the fold seed."""

    cs: tuple[float, ...] = DEFAULT_CS
    inner_k: int = 5
    class_weight: str | None = "balanced"
    seed: int = 0
    lambdas: tuple[float, ...] = (0.0,)  # consistency penalties searched (edgeretina.train.consistency)
    auroc_tolerance: float | None = None  # λ search: inner-AUROC loss accepted (None: consistency.AUROC_TOLERANCE)
    sd_floor: float = 0.0  # standardise by max(σ, sd_floor × median σ): caps the folded weight of near-dead features


@dataclass(frozen=True)
class LinearHeadFit:
    """What a linear-head fit chose and how it scored on its own inner folds."""

    C: float
    inner_scores: dict[str, float]   # C → mean inner-fold score (AUROC / −log loss)
    inner_k: int
    n: int
    class_weight: str | None
    seconds: float
    metric: str = field(default="auroc")
    lam: float = 0.0                    # the consistency penalty λ of the fit (0: plain L2)
    consistency: dict | None = None     # λ → mean inner-fold AUROC and relative nuisance (when searched)

    def to_dict(self) -> dict[str, Any]:
        return {"C": self.C, "inner_k": self.inner_k, "n": self.n, "class_weight": self.class_weight,
                "metric": self.metric, "inner_scores": self.inner_scores, "seconds": round(self.seconds, 2),
                "consistency_lambda": self.lam, **({"consistency": self.consistency} if self.consistency else {})}


@dataclass(frozen=True)
class Nuisance:
    """Feature changes ``delta`` (rows: raw pooled features of a re-acquired copy minus the original's) and,
    per row, the index of its record among the fitted feature rows (``rows``): inner folds estimate the
    nuisance covariance from their own fitting records only."""

    delta: np.ndarray
    rows: np.ndarray


def _logits_layer(model):
    try:
        dense = model.get_layer("head_logits")
    except ValueError:
        raise ModelError("the linear head recipe needs a model with a 'head_logits' layer") from None
    if not hasattr(dense, "kernel"):
        raise ModelError("the linear head recipe needs the 'gap' head (GAP → Dense); use --head gap")
    return dense


def check_linear_head(model, feature_dim: int) -> None:
    """One-line error unless ``head_logits`` reads the pooled features directly (the ``gap`` head)."""
    dense = _logits_layer(model)
    if int(dense.kernel.shape[0]) != int(feature_dim):
        raise ModelError("the linear head recipe needs the 'gap' head (Dense straight on the pooled features), "
                         f"this model's head has a {int(dense.kernel.shape[0])}-unit hidden layer; use --head gap")


def _inner_folds(y1: np.ndarray, groups, k: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    counts = np.bincount(y1) if y1.size else np.zeros(0, int)
    counts = counts[counts > 0]  # a stratum nobody is in does not limit the fold count
    k = max(2, min(k, int(counts.min()) if counts.size else 2))
    g = np.asarray(groups) if groups is not None else np.arange(len(y1))
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y1)), y1, g)), k


def _strata(spec: TaskSpec, y: np.ndarray) -> np.ndarray:
    """Fold strata: the class; for MULTILABEL the rarest label a record is positive for (L: none), so every
    label's positives spread over the inner folds (``any label positive`` is 1 for every ODIR eye)."""
    if spec.kind is TaskKind.MULTILABEL:
        pos = np.asarray(y).reshape(len(y), -1) > 0.5
        rank = np.argsort(np.argsort(pos.sum(0), kind="stable"), kind="stable")  # 0 = the rarest label
        key = np.where(pos, rank[None, :], pos.shape[1])
        return key.min(1).astype(int)
    return np.asarray(y).reshape(len(y), -1).argmax(1) if np.asarray(y).ndim == 2 else np.asarray(y).astype(int)


@dataclass(frozen=True)
class _Constant:
    """The fit of a 0/1 target with one class only (a rare label absent from a small fold): zero weights, the
    smoothed prevalence's logit as bias; it scores NaN on the inner folds (left out of their mean)."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray

    @classmethod
    def of(cls, Z: np.ndarray, y1: np.ndarray) -> "_Constant":
        p = (float(np.sum(y1)) + 0.5) / (len(y1) + 1.0)
        return cls(np.zeros((1, Z.shape[1])), np.array([np.log(p / (1 - p))]), np.unique(y1))


def _solve(Z: np.ndarray, y1: np.ndarray, C: float, class_weight):
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y1)) < 2:
        return _Constant.of(Z, y1)
    return LogisticRegression(C=C, max_iter=5000, class_weight=class_weight).fit(Z, y1)


def _score(spec: TaskSpec, clf, Z, y1) -> float:
    from sklearn.metrics import log_loss, roc_auc_score

    if isinstance(clf, _Constant):
        return float("nan")
    if _by_auroc(spec):  # binary, or one binary label of a multi-label task
        return float(roc_auc_score(y1, clf.decision_function(Z))) if len(set(y1)) == 2 else float("nan")
    return -float(log_loss(y1, clf.predict_proba(Z), labels=clf.classes_))


def _by_auroc(spec: TaskSpec) -> bool:
    """C is chosen on the inner folds' AUROC (mean over labels for MULTILABEL: the macro AUROC the task is
    judged by) — class-balanced log loss favours a weaker penalty (ODIR 8-label: C 1e-2 by log loss, pooled
    out-of-fold macro AUROC 0.790; 3e-4 by AUROC, 0.815); multiclass keeps the log loss."""
    return spec.kind in (TaskKind.BINARY, TaskKind.MULTILABEL)


def _columns(spec: TaskSpec, y: np.ndarray) -> list[np.ndarray]:
    """One integer target per fitted problem: one for binary/multiclass, one per label for multi-label."""
    y = np.asarray(y)
    if spec.kind is TaskKind.MULTILABEL:
        return [(y[:, j] > 0.5).astype(int) for j in range(y.shape[1])]
    return [_strata(spec, y)]


def fit_linear_head(model, spec: TaskSpec, feats: np.ndarray, y: np.ndarray, groups: Sequence | None = None,
                    opts: LinearHeadOptions = LinearHeadOptions(), nuisance: Nuisance | None = None) -> LinearHeadFit:
    """Choose C by inner patient-grouped K-fold on (feats, y), refit on all of them, write ``head_logits``.
    With ``nuisance`` and a λ > 0 in ``opts.lambdas``: the consistency penalty λ wᵀS̃w joins the L2 one
    (:mod:`edgeretina.train.consistency`), λ fixed or chosen on the same inner folds."""
    t0 = time.perf_counter()
    cs, class_weight = tuple(opts.cs), opts.class_weight
    feats = np.asarray(feats, dtype=np.float64)
    check_linear_head(model, feats.shape[1])
    mu, sd = feats.mean(0), feats.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    if opts.sd_floor > 0:  # a feature ~0 on almost every eye would get w / σ hundreds of times the median weight
        sd = np.maximum(sd, opts.sd_floor * float(np.median(sd)))
    Z = (feats - mu) / sd
    targets = _columns(spec, y)
    folds, k = _inner_folds(_strata(spec, y), groups, opts.inner_k, opts.seed)
    scores: dict[str, float] = {}
    for C in cs:
        per = [np.nanmean([_score(spec, _solve(Z[tr], t[tr], C, class_weight), Z[te], t[te]) for t in targets])
               for tr, te in folds]
        scores[f"{C:g}"] = round(float(np.nanmean(per)), 5)
    best = max(cs, key=lambda c: (scores[f"{c:g}"], -c))  # ties → the stronger penalty
    lam, table = 0.0, None
    lams = tuple(float(v) for v in opts.lambdas)
    if nuisance is not None and any(v > 0 for v in lams):
        D = np.asarray(nuisance.delta, dtype=np.float64) / sd
        rows = np.asarray(nuisance.rows)
        basis = _Basis.of(D)
        if len(lams) > 1:
            lam, table = _choose_lambda(spec, Z, targets, folds, ((D, rows), basis), best, class_weight,
                                        (lams, opts.auroc_tolerance))
        else:
            lam = lams[0]
        clfs = [_solve_consistent(Z, t, best, class_weight, basis, lam) for t in targets]
    else:
        clfs = [_solve(Z, t, best, class_weight) for t in targets]
    _write(model, spec, clfs, mu, sd)
    return LinearHeadFit(C=float(best), inner_scores=scores, inner_k=k, n=len(Z), class_weight=class_weight,
                         seconds=time.perf_counter() - t0,
                         metric="auroc" if _by_auroc(spec) else "neg_log_loss", lam=float(lam),
                         consistency=table)


#: nuisance directions penalised one by one: on ODIR two-view features (2560-d) the top 384 carry ~77 % of the
#: trace (the top one alone 160× the mean eigenvalue); 64 directions (31 %) lowered the CV flips less
NUISANCE_RANK = 384


@dataclass(frozen=True)
class _Basis:
    """The top nuisance directions: ``S̃ ≈ V diag(e) Vᵀ + ρ (I − V Vᵀ)`` (randomised SVD of the feature
    changes ``D``, ``S̃`` scaled to mean eigenvalue 1; no d×d matrix, no full eigendecomposition), ρ the mean
    eigenvalue of the rest. The penalty is ``wᵀ M w``, ``M = (I + λS̃) / (1 + λρ)``: the common nuisance
    level ρ is absorbed into C (so C keeps its meaning and the λ = 0 choice of C stands), every direction
    outside V keeps the plain L2 penalty, direction i of V pays ``(1 + λeᵢ) / (1 + λρ)`` times more."""

    V: np.ndarray
    e: np.ndarray
    rho: float

    @classmethod
    def of(cls, D: np.ndarray, rank: int = NUISANCE_RANK) -> "_Basis":
        from sklearn.utils.extmath import randomized_svd

        d = D.shape[1]
        k = max(1, min(rank, min(D.shape) - 1))
        _, sv, Vt = randomized_svd(D, k, n_iter=4, random_state=0)
        e = sv ** 2 * d / max(float(np.sum(D * D)), 1e-300)
        return cls(Vt.T, e, max(0.0, d - float(e.sum())) / max(1, d - k))

    def penalty_ratio(self, lam: float) -> np.ndarray:
        return (1.0 + lam * self.e) / (1.0 + lam * self.rho)

    def half_inverse(self, X: np.ndarray, lam: float) -> np.ndarray:
        """``X M^(-1/2)`` (rows of X; M is symmetric): ``M^(-1/2) = I + V diag(ratio^(-1/2) − 1) Vᵀ``."""
        return X + ((X @ self.V) * (self.penalty_ratio(lam) ** -0.5 - 1.0)) @ self.V.T


def _solve_consistent(Z: np.ndarray, y1: np.ndarray, C: float, class_weight, basis: "_Basis | None", lam: float,
                      Zt: np.ndarray | None = None):
    """sklearn's L2 logistic regression with the consistency penalty ``(1/2C)·wᵀMw`` (:class:`_Basis`): the
    plain L2 fit of ``v`` on ``Zt = Z M^(-1/2)`` (given, or computed), mapped back ``w = M^(-1/2) v`` (then
    ``‖v‖² = wᵀMw``) — the returned model reads the standardised features ``Z``."""
    if lam <= 0 or basis is None:
        return _solve(Z, y1, C, class_weight)
    clf = _solve(basis.half_inverse(Z, lam) if Zt is None else Zt, y1, C, class_weight)
    clf.coef_ = basis.half_inverse(clf.coef_, lam)
    return clf


def _choose_lambda(spec: TaskSpec, Z, targets, folds, nz: tuple, C: float, class_weight, grid: tuple):
    """Each λ on the inner folds: mean AUROC and relative nuisance of the held-out records;
    :func:`edgeretina.train.consistency.choose_lambda`. ``nz`` = ((D, rows), basis): the nuisance basis comes
    from all fitting records' copies once (label-free, like the standardisation); ``grid`` = (λs, tolerance)."""

    lams, tol = grid
    (D, rows), basis = nz
    auc: dict[float, list] = {v: [] for v in lams}
    rel: dict[float, list] = {v: [] for v in lams}
    Zt = {v: basis.half_inverse(Z, v) for v in lams if v > 0}
    for tr, te in folds:
        test_rows = np.isin(rows, te)
        for v in lams:
            clf = _solve_consistent(Z[tr], targets[0][tr], C, class_weight, basis, v, Zt[v][tr] if v > 0 else None)
            auc[v].append(_score(spec, clf, Z[te], targets[0][te]))
            rel[v].append(relative_nuisance(clf.coef_[0], Z[te], D[test_rows]))
    a = {v: float(np.nanmean(x)) if x else float("nan") for v, x in auc.items()}
    r = {v: float(np.nanmean(x)) if x else float("nan") for v, x in rel.items()}
    lam = choose_lambda(a, r, AUROC_TOLERANCE if tol is None else float(tol))
    return lam, {f"{v:g}": {"inner_auroc": round(a[v], 5), "relative_nuisance": round(r[v], 5)} for v in lams}


def _write(model, spec: TaskSpec, clfs, mu: np.ndarray, sd: np.ndarray) -> None:
    """Fold the standardisation into ``head_logits`` so that the model's probabilities equal the fitted
    logistic regression's: binary softmax [0, z] / sigmoid z, multinomial softmax, per-label sigmoid."""
    dense = _logits_layer(model)
    n_out = int(dense.kernel.shape[1])
    W = np.zeros((len(mu), n_out))
    b = np.zeros(n_out)

    def fold(coef, icpt):
        w = coef / sd
        return w, icpt - float(np.dot(coef, mu / sd))
    if spec.kind is TaskKind.BINARY:
        w, c = fold(clfs[0].coef_[0], clfs[0].intercept_[0])
        col = spec.positive_index if n_out == 2 and spec.positive_index is not None else n_out - 1
        W[:, col], b[col] = w, c
    elif spec.kind is TaskKind.MULTICLASS:
        clf = clfs[0]
        if list(clf.classes_) != list(range(n_out)):
            raise ModelError(f"the linear head needs every one of the {n_out} classes in the fitting records "
                             f"(saw {list(clf.classes_)})")
        for j in range(n_out):
            W[:, j], b[j] = fold(clf.coef_[j], clf.intercept_[j])
    else:
        for j, clf in enumerate(clfs):
            W[:, j], b[j] = fold(clf.coef_[0], clf.intercept_[0])
    dense.set_weights([W.astype(np.float32), b.astype(np.float32)])
