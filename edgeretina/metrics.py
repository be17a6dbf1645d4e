"""Classification metrics for the four task kinds, bootstrap CIs, decision thresholds and ROC plots.

scikit-learn does the arithmetic (roc_auc_score, roc_curve, confusion_matrix, f1_score, cohen_kappa_score);
this module picks the right ones per task and adds the 95 % percentile-bootstrap CI for AUROC.

Conventions: ``y`` follows the task's label encoding (binary 0/1, multiclass 0..K-1, multi-label 0/1
matrix); ``scores`` are :func:`edgeretina.tasks.scores_from_output` (binary p(positive), else (N, K|L)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.io import atomic_path
from edgeretina.tasks import TaskKind, TaskSpec, predicted_classes


@dataclass(frozen=True)
class AUROC:
    value: float
    lo: float
    hi: float
    n_boot: int

    def to_dict(self) -> dict[str, float]:
        return {"auroc": self.value, "auroc_ci_low": self.lo, "auroc_ci_high": self.hi, "n_boot": self.n_boot}

    def __str__(self) -> str:
        return f"{self.value:.3f} (95% CI {self.lo:.3f}-{self.hi:.3f})"


def auroc(y, s) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int).ravel()
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(s, dtype=np.float64).ravel()))


def bootstrap_auroc(y, s, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> AUROC:
    """AUROC with a percentile-bootstrap CI (resampling cases with replacement; resamples with one class
    only are redrawn, so every one of the ``n_boot`` replicates counts)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    value = auroc(y, s)
    if math.isnan(value) or n_boot <= 0:
        return AUROC(value, float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    n = len(y)
    reps = np.empty(n_boot)
    k = 0
    while k < n_boot:
        idx = rng.integers(0, n, n)
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        reps[k] = roc_auc_score(yy, s[idx])
        k += 1
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [a, 1.0 - a])
    return AUROC(value, float(lo), float(hi), n_boot)


def youden_threshold(y, s) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity − 1 (choose it on validation data)."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(int).ravel()
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, np.asarray(s, dtype=np.float64).ravel())
    i = int(np.argmax(tpr - fpr))
    return float(min(thr[i], 1.0))


def threshold_at_sensitivity(y, s, sensitivity: float) -> float:
    """The highest threshold whose sensitivity (predict positive when score ≥ threshold) reaches the target."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(int).ravel()
    if not 0.0 < sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity}")
    fpr, tpr, thr = roc_curve(y, np.asarray(s, dtype=np.float64).ravel())
    i = int(np.argmax(tpr >= sensitivity - 1e-12))
    return float(min(thr[i], 1.0))


def _div(a, b) -> float:
    return float(a) / float(b) if b else float("nan")


def binary_metrics(y, s, threshold: float = 0.5) -> dict[str, float]:
    """Confusion-matrix metrics at ``threshold`` (positive when score ≥ threshold)."""
    from sklearn.metrics import confusion_matrix

    y = np.asarray(y).astype(int).ravel()
    pred = (np.asarray(s, dtype=np.float64).ravel() >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    sens, spec = _div(tp, tp + fn), _div(tn, tn + fp)
    ppv, npv = _div(tp, tp + fp), _div(tn, tn + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return {"threshold": float(threshold), "accuracy": _div(tp + tn, len(y)), "sensitivity": sens,
            "specificity": spec, "ppv": ppv, "npv": npv, "f1": f1,
            "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def quadratic_kappa(y, pred, n_classes: int | None = None) -> float:
    from sklearn.metrics import cohen_kappa_score

    labels = list(range(n_classes)) if n_classes else None
    return float(cohen_kappa_score(np.asarray(y).astype(int), np.asarray(pred).astype(int),
                                   weights="quadratic", labels=labels))


def multiclass_metrics(y, probs, labels: tuple[str, ...] | None = None, pred=None) -> dict[str, Any]:
    """Accuracy, quadratic κ, F1 and per-class recall of the predicted classes ``pred`` (default: argmax of
    ``probs``; :func:`evaluate` passes the task's rule, :func:`edgeretina.tasks.predicted_classes`)."""
    from sklearn.metrics import f1_score, recall_score, roc_auc_score

    y = np.asarray(y).astype(int).ravel()
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    pred = probs.argmax(1) if pred is None else np.asarray(pred).astype(int).ravel()
    names = list(labels) if labels else [str(i) for i in range(k)]
    rec = recall_score(y, pred, labels=list(range(k)), average=None, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float((pred == y).mean()),
        "quadratic_kappa": quadratic_kappa(y, pred, k),
        "macro_f1": float(f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y, pred, labels=list(range(k)), average="micro", zero_division=0)),
        "per_class_recall": {n: float(r) for n, r in zip(names, rec)},
    }
    present = np.unique(y)
    if len(present) == k:
        out["auroc_ovr_macro"] = float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    return out


def multilabel_metrics(y, scores, labels: tuple[str, ...] | None = None, thresholds=0.5,
                       n_boot: int = 0, seed: int = 0) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    L = y.shape[1]
    names = list(labels) if labels else [str(i) for i in range(L)]
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (L,))
    pred = (scores >= thr).astype(int)
    per = {}
    for j, n in enumerate(names):
        a = bootstrap_auroc(y[:, j], scores[:, j], n_boot, seed) if n_boot else None
        per[n] = {"auroc": a.value if a else auroc(y[:, j], scores[:, j]),
                  **({"auroc_ci_low": a.lo, "auroc_ci_high": a.hi} if a else {}),
                  **binary_metrics(y[:, j], scores[:, j], thr[j])}
    aucs = [v["auroc"] for v in per.values() if not math.isnan(v["auroc"])]
    return {
        "macro_auroc": float(np.mean(aucs)) if aucs else float("nan"),
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "per_label": per,
    }


def evaluate(spec: TaskSpec, y, scores, threshold: float | None = None, n_boot: int = 1000,
             seed: int = 0) -> dict[str, Any]:
    """All metrics of a task kind as one JSON-able dict (binary: AUROC+CI and metrics at ``threshold``)."""
    if spec.kind is TaskKind.BINARY:
        a = bootstrap_auroc(y, scores, n_boot, seed)
        t = 0.5 if threshold is None else float(threshold)
        return {"n": int(len(np.asarray(y))), "n_positive": int(np.sum(np.asarray(y) == 1)),
                **a.to_dict(), **binary_metrics(y, scores, t)}
    if spec.kind is TaskKind.MULTICLASS:
        return {"n": int(len(np.asarray(y))),
                **multiclass_metrics(y, scores, spec.labels, predicted_classes(spec, scores))}
    return {"n": int(len(np.asarray(y))),
            **multilabel_metrics(y, scores, spec.labels, 0.5 if threshold is None else threshold, n_boot, seed)}


def primary_score(spec: TaskSpec, y, scores) -> float:
    """The model-selection objective: AUROC (binary), quadratic κ (multiclass), macro AUROC (multi-label)."""
    if spec.kind is TaskKind.BINARY:
        return auroc(y, scores)
    if spec.kind is TaskKind.MULTICLASS:
        return quadratic_kappa(y, predicted_classes(spec, scores), np.asarray(scores).shape[1])
    return multilabel_metrics(y, scores, spec.labels)["macro_auroc"]


def headline(metrics: dict[str, Any]) -> str:
    """The one line a person reads first of a run's metrics.json: the test split's (else the validation
    split's) metric of the task kind — binary: AUROC (95 % CI) and sensitivity / specificity at the run's
    threshold; DR grading: quadratic κ and accuracy; multi-label: macro AUROC and micro F1."""
    which = "test" if "test" in metrics else "val"
    m = metrics.get("test") or metrics["val"]
    if "auroc" in m:
        return (f"{which} AUROC {m['auroc']:.3f} (95% CI {m['auroc_ci_low']:.3f}-{m['auroc_ci_high']:.3f}) at "
                f"threshold {metrics['threshold']['value']:.3f}: sensitivity {m['sensitivity']:.3f}, "
                f"specificity {m['specificity']:.3f}")
    if "quadratic_kappa" in m:
        return f"{which} quadratic kappa {m['quadratic_kappa']:.3f}, accuracy {m['accuracy']:.3f}"
    return f"{which} macro AUROC {m['macro_auroc']:.3f}, micro F1 {m['micro_f1']:.3f}"


def plot_roc(path: str | Path, curves, title: str = "ROC") -> Path:
    """ROC curves → PNG at ``path`` (written atomically; matplotlib Agg). ``curves``: ``{name: (y, scores)}``
    or an iterable of ``(name, y, scores)`` for a binary outcome; a curve whose labels hold one class is
    left out. The one ROC plot of edgeretina (training's roc.png and the benchmark's)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    items = [(k, *v) for k, v in curves.items()] if isinstance(curves, dict) else list(curves)
    styles = ["-", "--", "-.", ":"]
    fig, ax = plt.subplots(figsize=(6.4, 6.0), dpi=120)
    try:
        for i, (name, y, s) in enumerate(items):
            y = np.asarray(y).astype(int).reshape(-1)
            s = np.asarray(s, dtype=np.float64).reshape(-1)
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, styles[i % len(styles)], color=f"C{i % 10}", lw=1.6, alpha=0.9,
                    label=f"{name} (AUROC {auroc(y, s):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity (false positive rate)",
               ylabel="sensitivity (true positive rate)", title=title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def roc_curves_for(spec: TaskSpec, sets: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """Curves to plot for a task: binary → one per split; multi-label/multiclass → one per label of the
    last split (one-vs-rest)."""
    if spec.kind is TaskKind.BINARY:
        return sets
    name, (y, s) = list(sets.items())[-1]
    s = np.asarray(s)
    y = np.asarray(y)
    Y = y if spec.kind is TaskKind.MULTILABEL else np.eye(s.shape[1])[y.astype(int)]
    return {f"{name} {lab}": (Y[:, j], s[:, j]) for j, lab in enumerate(spec.labels)}
