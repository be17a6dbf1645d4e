"""Patient-level K-fold cross-validation over the development set (train + val of the run's split).

Model selection must never look at the test split. ``edgeretina train --cv K`` therefore:

1. takes the development records (the run split's train + val; the test split stays locked),
2. deals them into K stratified folds by patient / content-hash group (``kfold:K:i:val`` of
   :mod:`edgeretina.data.splits`: fold i is held out, fold i+1 is the inner validation set that early
   stopping watches, the rest trains),
3. trains one model per fold from the same initial weights and scores its held-out fold,
4. reports per-fold scores, their mean ± sd, and the **pooled out-of-fold** AUROC (every development eye scored
   once, by a model that never saw it) with a bootstrap CI; the operating threshold comes from the pooled
   out-of-fold scores (Youden's J, and the threshold at the target sensitivity), which rests on the whole
   development set instead of the ~10 % validation split.

The final model is then trained on all development records for the median best epoch count of the folds, and
the test split is scored once, for that model only (:func:`edgeretina.train.run.train_run`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from edgeretina.errors import DataError
from edgeretina.tasks import TaskKind, TaskSpec
from edgeretina.data.splits import split_records
from edgeretina.metrics import (binary_metrics, bootstrap_auroc, evaluate, primary_score, threshold_at_sensitivity,
                                youden_threshold)


@dataclass(frozen=True)
class FoldResult:
    fold: int
    seed: int
    n_train: int
    n_val: int
    n_eval: int
    n_pos_eval: int | None
    score: float          # the task metric (AUROC / quadratic kappa / macro AUROC) on the held-out fold
    best_epochs: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CVResult:
    k: int
    seeds: tuple[int, ...]
    metric: str
    folds: tuple[FoldResult, ...]
    mean: float
    sd: float
    pooled: dict[str, Any]            # pooled out-of-fold metrics (+ bootstrap CI for binary tasks)
    per_seed_pooled: tuple[float, ...]  # the pooled metric of each seed's K folds
    threshold: float | None           # Youden's J on the pooled out-of-fold scores (binary)
    threshold_at_sensitivity: float | None
    sensitivity_target: float
    final_epochs: dict[str, int]      # median best epoch per phase → the final fit on all dev records
    n_dev: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["folds"] = [f.to_dict() for f in self.folds]
        d["seeds"] = list(self.seeds)
        d["per_seed_pooled"] = list(self.per_seed_pooled)
        d["seed_sd"] = float(np.std(self.per_seed_pooled, ddof=1)) if len(self.per_seed_pooled) > 1 else None
        d["note"] = ("model selection statistic: never computed on the test split; pooled = every development "
                     "record scored once by the fold model that did not train on it")
        return d

    def headline(self) -> str:
        m = self.metric.replace("_", " ")
        txt = f"{self.k}-fold CV {m} {self.mean:.3f} ± {self.sd:.3f} (per fold)"
        if "auroc" in self.pooled and "auroc_ci_low" in self.pooled:
            txt += (f"; pooled out-of-fold AUROC {self.pooled['auroc']:.3f} "
                    f"(95% CI {self.pooled['auroc_ci_low']:.3f}-{self.pooled['auroc_ci_high']:.3f})")
        if len(self.per_seed_pooled) > 1:
            txt += (f"; over {len(self.seeds)} seeds {np.mean(self.per_seed_pooled):.3f} ± "
                    f"{np.std(self.per_seed_pooled, ddof=1):.3f}")
        return txt


def fold_indices(records: Sequence, spec: TaskSpec, k: int, fold: int, seed: int) -> dict[str, np.ndarray]:
    """Index arrays (into ``records``) of fold ``fold``: ``train``, ``val`` (inner early-stopping set) and
    ``eval`` (held out). Patient / content-hash groups never straddle two parts; strata keep the class mix."""

    parts = split_records(list(records), spec, f"kfold:{k}:{fold}:val", seed=seed, check=False)
    pos = {id(r): i for i, r in enumerate(records)}
    return {"train": np.array([pos[id(r)] for r in parts["train"]], int),
            "val": np.array([pos[id(r)] for r in parts["val"]], int),
            "eval": np.array([pos[id(r)] for r in parts["test"]], int)}


def check_cv(k: int, spec: TaskSpec, y: np.ndarray) -> None:
    if k < 3:
        raise DataError(f"--cv needs at least 3 folds (one held out, one for early stopping), got {k}")
    if spec.kind is TaskKind.BINARY:
        n_pos = int(np.sum(y == 1))
        if n_pos < 2 * k:
            raise DataError(f"--cv {k}: the development set has only {n_pos} positive records; "
                            f"need at least {2 * k} (two per fold)")


def _median_epochs(folds: Sequence[FoldResult]) -> dict[str, int]:
    names = sorted({n for f in folds for n in f.best_epochs})
    return {n: max(1, int(round(float(np.median([f.best_epochs[n] for f in folds if n in f.best_epochs])))))
            for n in names}


FitFn = Callable[[np.ndarray, np.ndarray, int, str], tuple[Callable[[np.ndarray], np.ndarray], dict[str, int]]]


def cross_validate(records: Sequence, y: np.ndarray, spec: TaskSpec, fit: FitFn, *, k: int = 5,
                   seeds: Sequence[int] = (0,), n_boot: int = 1000, sensitivity: float = 0.9,
                   log: Callable[[str], None] | None = None) -> tuple[CVResult, np.ndarray]:
    """Run K-fold CV. ``fit(train_idx, val_idx, seed, tag) -> (score_fn, best_epochs)`` trains a fresh model
    on the given development indices; ``score_fn(eval_idx)`` returns its task scores on those records.
    Returns the result and the pooled out-of-fold scores of the first seed (same order as ``records``)."""

    check_cv(k, spec, y)
    say = log or (lambda m: None)
    t0 = time.perf_counter()
    folds: list[FoldResult] = []
    oof_first = None
    per_seed = []
    total = k * len(seeds)
    for si, seed in enumerate(seeds):
        oof = np.full((len(records),) + (() if spec.kind is TaskKind.BINARY else y.shape[1:] or (spec.n_outputs,)),
                      np.nan, np.float64)
        for i in range(k):
            step = si * k + i + 1
            tf0 = time.perf_counter()
            idx = fold_indices(records, spec, k, i, seed)
            tag = f"cv {step}/{total}"
            score_fn, best = fit(idx["train"], idx["val"], seed, tag)
            s = np.asarray(score_fn(idx["eval"]), np.float64)
            oof[idx["eval"]] = s
            ye = y[idx["eval"]]
            try:
                sc = float(primary_score(spec, ye, s))
            except ValueError:
                sc = float("nan")
            folds.append(FoldResult(i, int(seed), len(idx["train"]), len(idx["val"]), len(idx["eval"]),
                                    int(np.sum(ye == 1)) if spec.kind is TaskKind.BINARY else None, sc,
                                    dict(best), round(time.perf_counter() - tf0, 2)))
            elapsed = time.perf_counter() - t0
            eta = elapsed / step * (total - step)
            say(f"[{tag}] fold {i + 1}/{k} seed {seed}: held-out {len(idx['eval'])} records, score {sc:.3f}  "
                f"(elapsed {elapsed:.0f} s, ETA {eta:.0f} s)")
        if oof_first is None:
            oof_first = oof
        per_seed.append(float(primary_score(spec, y, oof)))
    scores = np.array([f.score for f in folds], float)
    threshold = t_sens = None
    metric = {TaskKind.BINARY: "auroc", TaskKind.MULTICLASS: "quadratic_kappa",
              TaskKind.MULTILABEL: "macro_auroc"}[spec.kind]
    if spec.kind is TaskKind.BINARY:
        threshold = float(youden_threshold(y, oof_first))
        t_sens = float(threshold_at_sensitivity(y, oof_first, sensitivity))
        pooled = {**bootstrap_auroc(y, oof_first, n_boot, seeds[0]).to_dict(),
                  "at_youden_threshold": binary_metrics(y, oof_first, threshold),
                  f"at_sensitivity_{sensitivity:g}": binary_metrics(y, oof_first, t_sens),
                  "n": int(len(y)), "n_pos": int(np.sum(y == 1))}
    else:
        pooled = evaluate(spec, y, oof_first, None, n_boot, seeds[0])
    res = CVResult(k=k, seeds=tuple(int(s) for s in seeds), metric=metric, folds=tuple(folds),
                   mean=float(np.nanmean(scores)), sd=float(np.nanstd(scores, ddof=1)) if len(scores) > 1 else 0.0,
                   pooled=pooled, per_seed_pooled=tuple(per_seed), threshold=threshold,
                   threshold_at_sensitivity=t_sens, sensitivity_target=float(sensitivity),
                   final_epochs=_median_epochs(folds), n_dev=len(records),
                   seconds=round(time.perf_counter() - t0, 2))
    return res, oof_first
