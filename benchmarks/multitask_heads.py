"""Heads of the multi-task study (issue 15, system 3) on cached pooled features of one frozen backbone.

Every head is a linear read-out of the 1280 pooled features, fitted on the training split by full-batch
L-BFGS on the project's Keras loss (:func:`edgeretina.train.losses.make_loss`: ``BinaryCrossentropy`` /
``SparseCategoricalCrossentropy`` for plain BCE, ``ExpUWBCE``) plus an L2 penalty ``lam/2 · |W|^2`` on
centred features scaled by their mean sd (:func:`_standardise`), then folded into the full Keras model's
``head_logits`` Dense:

- multi-task: GAP → Dense(2, sigmoid) for (glaucoma, DR), plain BCE or ExpUWBCE;
- single-task: GAP → Dense(2, softmax) = softmax([0, z]) = sigmoid(z) for one of the two tasks (the
  project's binary convention), cross-entropy (= BCE).

Choices, on the validation split only: the penalty ``lam`` from :data:`LAMBDAS` per task (that task's
validation AUROC; the multi-task loss is a mean of per-task terms, so each head's weights are their own
problem) and ExpUWBCE's positive weight per
task ``W1_j = (n_neg / n_pos)_j ** alpha`` (training-split counts) with alpha from :data:`ALPHAS` (W2 = 1).
The test split is only scored (:func:`score_heads`), never used for a choice. (The SGD warm-up of ``edgeretina
train`` reaches the same validation AUROC here but costs ~5 min per head on the shared 2-core VM; a fit here
takes seconds, so every choice can be searched.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeretina.compare import delong_test
from edgeretina.metrics import auroc, bootstrap_auroc, youden_threshold
from edgeretina.models import build_model
from edgeretina.tasks import TaskSpec, scores_from_output, task_spec
from edgeretina.train import features as F
from edgeretina.train.linear_head import check_linear_head
from edgeretina.train.losses import make_loss

MULTI = task_spec("multitask")
TASKS = MULTI.labels  # ("glaucoma", "dr")
ALPHAS = (0.0, 0.5, 1.0)
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MAXITER = 300


@dataclass(frozen=True)
class Backbone:
    """The frozen backbone every head sits on (tests use a tiny untrained one)."""

    arch: str = "mobilenetv2"
    size: int = 224
    weights: str | None = "imagenet"


@dataclass(frozen=True)
class Head:
    """One head to train: ``columns`` (0, 1) = multi-task, (j,) = single-task on task j; ``loss`` ``ce``
    (BCE) or ``exp-uwbce`` with per-column positive weights ``w1``."""

    name: str
    columns: tuple[int, ...]
    loss: str = "ce"
    w1: tuple[float, ...] | None = None

    @property
    def spec(self) -> TaskSpec:
        if len(self.columns) > 1:
            return MULTI
        lab = TASKS[self.columns[0]]
        return task_spec("classes", (f"no {lab}", lab))

    def labels(self, y: np.ndarray) -> np.ndarray:
        """(N, 2) float multi-task labels → this head's training labels."""
        if len(self.columns) > 1:
            return np.asarray(y, np.float32)
        return np.asarray(y[:, self.columns[0]] > 0.5, dtype=np.int64)


@dataclass
class Trained:
    """A trained head: the full Keras model (backbone + head), its validation / test scores per task,
    validation Youden thresholds per task and the chosen penalty per task ``lam``."""

    head: Head
    model: Any
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    thresholds: dict[str, float]
    lam: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


def positive_ratio(y: np.ndarray) -> np.ndarray:
    """n_neg / n_pos per task of (N, 2) labels."""
    pos = np.maximum(np.asarray(y).sum(axis=0), 1.0)
    return (len(y) - pos) / pos


def w1_of(alpha: float, ratio: np.ndarray, columns: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(float(ratio[c] ** alpha) for c in columns)


def task_scores(head: Head, probs: np.ndarray) -> dict[str, np.ndarray]:
    s = scores_from_output(head.spec, probs)
    if len(head.columns) > 1:
        return {TASKS[c]: s[:, i] for i, c in enumerate(head.columns)}
    return {TASKS[head.columns[0]]: s}


def _standardise(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre per feature, scale by ONE number (the mean feature sd): a per-feature scale would fold into
    raw-feature weights spanning ~100× (pooled features with sd 0.01 next to sd 1), which int8 and
    dynamic-range weights cannot hold (measured: 47 % of decisions flipped); this is the ridge on raw features."""
    mu = f.mean(axis=0)
    return mu, np.full(f.shape[1], max(float(f.std(axis=0).mean()), 1e-6))


def fit_logits(head: Head, Z: np.ndarray, y: np.ndarray, lam: float, maxiter: int = MAXITER):
    """Full-batch L-BFGS of the head's Keras loss + ``lam/2 · |W|^2`` on standardised features ``Z`` →
    (W (d, k), b (k,)) of the k = len(columns) logits (multi-task: sigmoid; single-task: softmax([0, z]))."""
    from scipy.optimize import minimize

    from edgeretina._keras import tf

    d, k = Z.shape[1], len(head.columns)
    w1 = None if head.w1 is None else (list(head.w1) if k > 1 else head.w1[0])
    loss, _ = make_loss(head.loss, head.spec, None, w1=w1)
    X, Y = tf.constant(Z, tf.float32), tf.constant(head.labels(y))

    def probs(z):
        p = tf.sigmoid(z)
        return p if k > 1 else tf.concat([1.0 - p, p], axis=1)

    @tf.function
    def value_grad(t):
        with tf.GradientTape() as g:
            g.watch(t)
            W = tf.reshape(t[:d * k], (d, k))
            total = loss(Y, probs(tf.matmul(X, W) + t[d * k:])) + 0.5 * lam * tf.reduce_sum(W * W)
        return total, g.gradient(total, t)

    def fg(theta):
        v, gr = value_grad(tf.constant(theta, tf.float32))
        return float(v), gr.numpy().astype(np.float64)

    res = minimize(fg, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                   options={"maxiter": maxiter, "ftol": 1e-8, "gtol": 1e-6})
    return res.x[:d * k].reshape(d, k), res.x[d * k:], int(res.nit)


def fold_into(model, head: Head, W: np.ndarray, b: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> None:
    """Standardisation folded into ``head_logits``: raw features in, the fitted probabilities out."""
    Wr = W / sd[:, None]
    br = b - (mu / sd) @ W
    dense = model.get_layer("head_logits")
    if len(head.columns) > 1:
        dense.set_weights([Wr.astype(np.float32), br.astype(np.float32)])
    else:  # softmax([0, z]) = sigmoid(z)
        dense.set_weights([np.concatenate([np.zeros_like(Wr), Wr], axis=1).astype(np.float32),
                           np.array([0.0, br[0]], np.float32)])


def head_score(tr_val: dict[str, np.ndarray], y_val: np.ndarray) -> float:
    """Validation score of a head: mean AUROC over its tasks (macro AUROC for the multi-task heads)."""
    return float(np.mean([auroc(y_val[:, TASKS.index(t)], s) for t, s in tr_val.items()]))


def train_head(head: Head, feats: dict[str, np.ndarray], backbone: Backbone = Backbone(),
               lambdas=LAMBDAS, say=None) -> Trained:
    """Fit ``head`` on ``f_train``/``y_train`` for each penalty and keep, **per task**, the penalty with the
    best validation AUROC of that task (``f_val``/``y_val``): the loss is a mean of per-task terms, so the
    columns of W are separate problems and the per-task choice is the joint optimum with a penalty per head.
    The result is folded into a full backbone + head Keras model; ``f_test`` scored if present."""
    t0 = time.perf_counter()
    model = build_model(backbone.arch, head.spec, backbone.size, backbone.weights, "gap")
    check_linear_head(model, feats["f_train"].shape[1])
    hm = F.head_model_of(model)
    mu, sd = _standardise(feats["f_train"])
    Z = (feats["f_train"] - mu) / sd
    names = [TASKS[c] for c in head.columns]
    best: dict[str, tuple] = {}
    grid = []
    for lam in lambdas:
        W, b, nit = fit_logits(head, Z, feats["y_train"], lam)
        fold_into(model, head, W, b, mu, sd)
        val = task_scores(head, hm.predict(feats["f_val"], batch_size=512, verbose=0))
        row = {t: auroc(feats["y_val"][:, TASKS.index(t)], val[t]) for t in names}
        grid.append({"lambda": lam, "iterations": nit, **{f"val_auroc_{t}": v for t, v in row.items()}})
        if say:
            say(f"{head.name}: lambda {lam:g}: validation AUROC "
                + ", ".join(f"{t} {v:.4f}" for t, v in row.items()) + f" ({nit} L-BFGS iterations)")
        for i, t in enumerate(names):
            if t not in best or round(row[t], 6) > round(best[t][0], 6):
                best[t] = (row[t], lam, W[:, i], b[i])
    W = np.stack([best[t][2] for t in names], axis=1)
    b = np.array([best[t][3] for t in names])
    fold_into(model, head, W, b, mu, sd)
    val = task_scores(head, hm.predict(feats["f_val"], batch_size=512, verbose=0))
    test = task_scores(head, hm.predict(feats["f_test"], batch_size=512, verbose=0)) if "f_test" in feats else {}
    thr = {t: youden_threshold(feats["y_val"][:, TASKS.index(t)], s) for t, s in val.items()}
    return Trained(head, model, val, test, thr, {t: best[t][1] for t in names},
                   {"val_score": head_score(val, feats["y_val"]), "grid": grid,
                    "seconds": round(time.perf_counter() - t0, 1)})


def val_macro_auroc(tr: Trained, y_val: np.ndarray) -> float:
    return head_score(tr.val, y_val)


def choose_alpha(feats: dict[str, np.ndarray], backbone: Backbone = Backbone(), lambdas=LAMBDAS,
                 alphas=ALPHAS, say=print) -> tuple[float, list[dict], dict[float, Trained]]:
    """Multi-task ExpUWBCE for each alpha (its penalty chosen inside); the best validation macro AUROC wins
    (ties: the smaller alpha)."""
    ratio = positive_ratio(feats["y_train"])
    rows, trained = [], {}
    for a in alphas:
        tr = train_head(Head(f"multi_expuwbce_a{a:g}", (0, 1), "exp-uwbce", w1_of(a, ratio, (0, 1))),
                        feats, backbone, lambdas, say)
        m = val_macro_auroc(tr, feats["y_val"])
        rows.append({"alpha": a, "w1": list(tr.head.w1), "lambda": tr.lam, "val_macro_auroc": m,
                     **{f"val_auroc_{t}": auroc(feats["y_val"][:, TASKS.index(t)], s) for t, s in tr.val.items()}})
        trained[a] = tr
        say(f"ExpUWBCE alpha {a:g} (W1 {', '.join(f'{w:.2f}' for w in tr.head.w1)}): validation macro AUROC "
            f"{m:.4f} at lambda {tr.lam}")
    best = max(rows, key=lambda r: (round(r["val_macro_auroc"], 6), -r["alpha"]))["alpha"]
    return best, rows, trained


def test_auroc(y: np.ndarray, s: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    r = bootstrap_auroc(y, s, n_boot=n_boot, seed=seed)
    return {"auroc": r.value, "ci95": [r.lo, r.hi], "n_positive": int(np.sum(y > 0.5)), "n": int(len(y))}


def paired(y: np.ndarray, s_a: np.ndarray, s_b: np.ndarray) -> dict[str, Any]:
    """DeLong paired difference AUROC(a) − AUROC(b) on the same eyes, with its 95 % CI and p."""
    d = delong_test(y, s_a, s_b)
    return {"delta": d.delta, "ci95": list(d.ci95()), "p": d.p}


def score_heads(trained: dict[str, Trained], y_test: np.ndarray, pairs: list[tuple[str, str, str]],
                n_boot: int = 1000) -> dict[str, Any]:
    """Test AUROC (bootstrap CI) of every head per task, and the paired differences ``(label, a, b)``:
    head ``a`` minus head ``b`` per task they share."""
    out: dict[str, Any] = {"heads": {}, "pairs": []}
    for name, tr in trained.items():
        out["heads"][name] = {t: test_auroc(y_test[:, TASKS.index(t)], s, n_boot, seed=TASKS.index(t))
                              for t, s in tr.test.items()}
    for label, a, b in pairs:
        for t in TASKS:
            if t in trained[a].test and t in trained[b].test:
                out["pairs"].append({"comparison": label, "a": a, "b": b, "task": t,
                                     **paired(y_test[:, TASKS.index(t)], trained[a].test[t], trained[b].test[t])})
    return out
