"""Accuracy of one model's probabilities against the labels and against the reference's probabilities.

One function per task kind; every number the report carries about accuracy and agreement is made here.
BINARY: AUROC of p(positive) (paired DeLong Δ, flips at the reference's threshold). DR grading (multiclass
``dr``): the quadratic-weighted κ of the argmax grade with a bootstrap CI, Δκ with a paired bootstrap CI,
accuracy, per-grade recall, grade flips (predicted grade changed) and referable flips (predicted grade ≥ 2
changed), plus the referable-DR AUROC of p(grade >= 2). Other multiclass: accuracy, per-class recall, class
flips and the macro one-vs-rest AUROC. MULTILABEL (ODIR labels, multi-task heads): macro AUROC with a
bootstrap CI, Δ macro AUROC with a paired bootstrap CI, micro / macro F1 at the reference's per-label
thresholds, and per label (head): AUROC, CI, ΔAUROC with its paired DeLong CI and p, sensitivity,
specificity and decision flips at that label's threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeretina import compare
from edgeretina.metrics import bootstrap_auroc
from edgeretina.runtime.decisions import REFERABLE_GRADE, screening_threshold
from edgeretina.tasks import Task, TaskKind, TaskSpec, predicted_classes, scores_from_output


@dataclass(frozen=True)
class Scores:
    auroc: float | None = None
    auroc_ci95: tuple[float, float] | None = None
    delta_auroc: float | None = None
    delta_auroc_ci95: tuple[float, float] | None = None  # DeLong (normal approximation), paired
    auroc_retention: float | None = None
    delong_p: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    flip_rate: float | None = None
    kappa: float | None = None
    kappa_ci95: tuple[float, float] | None = None  # percentile bootstrap
    delta_kappa: float | None = None
    delta_kappa_ci95: tuple[float, float] | None = None  # paired percentile bootstrap
    accuracy: float | None = None  # multiclass: argmax class == label
    grade_flip_rate: float | None = None  # multiclass: share of images whose argmax class changed
    referable_flip_rate: float | None = None  # DR grading: share whose (argmax grade >= 2) changed
    per_class: dict[str, dict[str, Any]] | None = None  # multiclass: per class n, recall, Δrecall, flips
    f1_micro: float | None = None  # multilabel, at the reference's per-label thresholds
    f1_macro: float | None = None
    per_label: dict[str, dict[str, Any]] | None = None
    logit_shift: float | None = None
    logit_noise_sd: float | None = None
    near_threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def screening_scores(spec: TaskSpec, probs: np.ndarray) -> np.ndarray:
    """The score the screening decision is made on: p(positive) (BINARY), p(referable) (DR grading),
    the (N, L) label probabilities (MULTILABEL), or the (N, K) class probabilities (other multiclass)."""
    probs = np.asarray(probs, dtype=np.float64)
    if spec.kind is TaskKind.MULTICLASS and spec.task is Task.DR:
        return probs.reshape(len(probs), -1)[:, REFERABLE_GRADE:].sum(axis=1)
    return scores_from_output(spec, probs)


def binary_truth(spec: TaskSpec, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if spec.kind is TaskKind.MULTICLASS and spec.task is Task.DR:
        return (y.reshape(-1) >= REFERABLE_GRADE).astype(int)
    if spec.kind is TaskKind.MULTILABEL:
        return np.asarray(y, dtype=np.float64).reshape(len(y), -1).round().astype(int)
    return y.reshape(-1).astype(int)


default_threshold = screening_threshold  # one reading of a model's threshold (edgeretina.runtime.decisions)


def _sens_spec(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float | None, float | None]:
    pred = s >= t
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else None
    spec = float((~pred[neg]).mean()) if neg.any() else None
    return sens, spec


def _two_classes(y) -> bool:
    return len(np.unique(y)) == 2


def _bootstrap_ci(y, s, n_boot: int, seed: int) -> tuple[float, float] | None:
    """95 % percentile bootstrap CI of the AUROC — the same function (and so, for the same images and
    seed, the same numbers) as the training run's metrics.json."""
    if not n_boot:
        return None

    r = bootstrap_auroc(y, s, n_boot=n_boot, seed=seed)
    return (r.lo, r.hi) if math.isfinite(r.lo) and math.isfinite(r.hi) else None


def _binary(y, s, s_ref, t, n_boot, seed) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if _two_classes(y):
        d = compare.delong_test(y, s, s_ref)
        out.update(auroc=d.auc_a, delta_auroc=d.delta, delta_auroc_ci95=d.ci95(), delong_p=d.p,
                   auroc_retention=compare.retention(d.auc_a, d.auc_b),
                   auroc_ci95=_bootstrap_ci(y, s, n_boot, seed))
    out["sensitivity"], out["specificity"] = _sens_spec(y, s, t)
    out["flip_rate"] = compare.flip_rate(s_ref, s, t)
    out.update(_logit_agreement(s, s_ref, t))
    return out


NEAR_LOGIT = 0.25


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _logit_agreement(s, s_ref, t) -> dict[str, float]:
    """How far the variant's scores sit from the reference's, in logit units (mean shift, sd), and how many
    images the reference scores within ±0.25 logit of the threshold — the decisions any noise can flip."""
    d = _logit(s) - _logit(s_ref)
    out = {"logit_shift": float(d.mean()), "logit_noise_sd": float(d.std())}
    if t is not None and 0 < float(t) < 1:
        out["near_threshold"] = float(np.mean(np.abs(_logit(s_ref) - _logit([float(t)])[0]) < NEAR_LOGIT))
    return out


def _multiclass(spec: TaskSpec, grades, probs, ref_probs, n_boot: int, seed: int) -> dict[str, Any]:
    """Argmax-class accuracy, per-class recall (and its change vs the reference), class flips; for DR
    grading also κ, Δκ (both with bootstrap CIs over the same image draws) and referable flips."""
    k = probs.shape[1]
    pred, pred_ref = predicted_classes(spec, probs), predicted_classes(spec, ref_probs)
    changed = pred != pred_ref
    per_class: dict[str, dict[str, Any]] = {}
    for i, label in enumerate(spec.labels[:k]):
        m = grades == i
        rec = float(np.mean(pred[m] == i)) if m.any() else None
        rec_ref = float(np.mean(pred_ref[m] == i)) if m.any() else None
        per_class[label] = {"n": int(m.sum()), "recall": rec,
                            "delta_recall": None if rec is None else rec - rec_ref,
                            "flip_rate": float(changed[m].mean()) if m.any() else None}
    out: dict[str, Any] = {"accuracy": float(np.mean(pred == grades)) if len(grades) else None,
                           "grade_flip_rate": compare.label_flip_rate(pred_ref, pred), "per_class": per_class}
    if spec.task is not Task.DR:
        out["flip_rate"] = out["grade_flip_rate"]
        return out
    kap = lambda g, p: compare.quadratic_kappa(g, p, k)  # noqa: E731
    kappa, kappa_ref = kap(grades, pred), kap(grades, pred_ref)
    n = len(grades)
    out.update(kappa=_finite(kappa), delta_kappa=_finite(kappa - kappa_ref),
               kappa_ci95=compare.bootstrap_ci(lambda i: kap(grades[i], pred[i]), n, n_boot, seed=seed),
               delta_kappa_ci95=compare.bootstrap_ci(
                   lambda i: kap(grades[i], pred[i]) - kap(grades[i], pred_ref[i]), n, n_boot, seed=seed),
               referable_flip_rate=compare.label_flip_rate(pred_ref >= REFERABLE_GRADE, pred >= REFERABLE_GRADE))
    return out


def _ovr_auroc(grades, probs, ref_probs) -> dict[str, Any]:
    """Macro one-vs-rest AUROC of a multiclass model without a screening score (every class present)."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(grades)) != probs.shape[1]:
        return {}
    auc = float(roc_auc_score(grades, probs, multi_class="ovr", average="macro"))
    auc_ref = float(roc_auc_score(grades, ref_probs, multi_class="ovr", average="macro"))
    return {"auroc": auc, "delta_auroc": auc - auc_ref, "auroc_retention": compare.retention(auc, auc_ref)}


def _finite(v) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _f1(yb, s, ts) -> dict[str, float]:
    """Micro and macro F1 of the multi-label decisions at the per-label thresholds ``ts``."""
    from sklearn.metrics import f1_score

    pred = (s >= np.asarray(ts, dtype=np.float64)).astype(int)
    return {"f1_micro": float(f1_score(yb, pred, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(yb, pred, average="macro", zero_division=0))}


def evaluate(spec: TaskSpec, y, probs, ref_probs, threshold=None, n_boot: int = 1000,
             seed: int = 0) -> Scores:
    """Accuracy of ``probs`` on labels ``y`` and agreement with ``ref_probs`` (same images, same order)."""
    probs = np.asarray(probs, dtype=np.float64)
    ref_probs = np.asarray(ref_probs, dtype=np.float64)
    if probs.shape != ref_probs.shape:
        raise ValueError(f"model outputs {probs.shape} but the reference outputs {ref_probs.shape}")
    t = default_threshold(spec, threshold)
    yb = binary_truth(spec, y)
    s, s_ref = screening_scores(spec, probs), screening_scores(spec, ref_probs)

    if spec.kind is TaskKind.BINARY:
        return Scores(**_binary(yb, s, s_ref, t, n_boot, seed))

    if spec.kind is TaskKind.MULTICLASS:
        grades = np.asarray(y).reshape(-1).astype(int)
        out = _multiclass(spec, grades, probs, ref_probs, n_boot, seed)
        if spec.task is Task.DR:  # the referable screen on p(grade >= 2) at the threshold, too
            b = _binary(yb, s, s_ref, t, n_boot, seed)
            return Scores(**{**b, **out})
        return Scores(**out, **_ovr_auroc(grades, probs, ref_probs))

    # MULTILABEL
    n_labels = s.shape[1]
    ts = t if isinstance(t, list) else [float(t)] * n_labels
    per_label: dict[str, dict[str, Any]] = {}
    aucs, ref_aucs, ps, sens, specs = [], [], [], [], []
    for j, label in enumerate(spec.labels[:n_labels]):
        r = _binary(yb[:, j], s[:, j], s_ref[:, j], ts[j], n_boot, seed + j)
        r["threshold"] = ts[j]
        r["n_positive"] = int(yb[:, j].sum())
        per_label[label] = r
        if r.get("auroc") is not None:
            aucs.append(r["auroc"])
            ref_aucs.append(r["auroc"] - r["delta_auroc"])
            ps.append(r["delong_p"])
        if r["sensitivity"] is not None:
            sens.append(r["sensitivity"])
        if r["specificity"] is not None:
            specs.append(r["specificity"])
    auc = float(np.mean(aucs)) if aucs else None
    auc_ref = float(np.mean(ref_aucs)) if ref_aucs else None
    valid = [j for j in range(n_labels) if _two_classes(yb[:, j])]
    ci = (compare.bootstrap_mean_auroc_ci(yb[:, valid], s[:, valid], n_boot=n_boot, seed=seed)
          if valid and n_boot else None)
    dci = (compare.paired_mean_auroc_delta_ci(yb[:, valid], s[:, valid], s_ref[:, valid], n_boot=n_boot, seed=seed)
           if valid and n_boot else None)
    return Scores(
        auroc=auc, auroc_ci95=ci,
        delta_auroc=None if auc is None else auc - auc_ref, delta_auroc_ci95=dci,
        auroc_retention=compare.retention(auc, auc_ref),
        delong_p=min(1.0, len(ps) * min(ps)) if ps else None,  # Bonferroni over labels
        sensitivity=float(np.mean(sens)) if sens else None,
        specificity=float(np.mean(specs)) if specs else None,
        flip_rate=compare.flip_rate(s_ref, s, np.asarray(ts)),
        per_label=per_label, **_f1(yb, s, ts),
    )


# ------------------------------------------------------------------ agreement of one model with itself
@dataclass(frozen=True)
class Change:
    """How a model's decisions and screening logits move between two versions of the same images."""

    flip_rate: float | None
    logit_mean: float | None = None
    logit_sd: float | None = None


def decision_change(spec: TaskSpec, probs_a, probs_b, threshold) -> Change:
    """Flip rate of the screening decision (any label for MULTILABEL, the argmax class for a multiclass task
    without a screening threshold) and the mean / sd of the screening-logit change from ``a`` to ``b``."""
    a, b = np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"decision change needs the same images: {a.shape} vs {b.shape}")
    if len(a) == 0:
        return Change(None)
    t = default_threshold(spec, threshold)
    if t is None:  # multiclass without a screening score: the predicted class
        return Change(compare.label_flip_rate(a.argmax(axis=1), b.argmax(axis=1)))
    sa, sb = screening_scores(spec, a), screening_scores(spec, b)
    d = (_logit(sb) - _logit(sa)).reshape(-1)
    return Change(compare.flip_rate(sa, sb, np.asarray(t) if isinstance(t, list) else t),
                  float(d.mean()), float(d.std()))


def margin_share(spec: TaskSpec, probs, threshold, band: float | None) -> float | None:
    """Share of images whose screening logit lies within ±``band`` of the threshold's logit (any label for
    MULTILABEL): the decisions a perturbation of that size can flip."""
    t = default_threshold(spec, threshold)
    if t is None or band is None or not math.isfinite(band):
        return None
    s = _logit(screening_scores(spec, probs))
    tl = _logit(np.asarray(t, dtype=np.float64))
    near = np.abs(s - tl) <= band
    if near.ndim > 1:
        near = near.any(axis=1)
    return float(near.mean()) if near.size else None
