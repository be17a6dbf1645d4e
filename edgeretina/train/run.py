"""``train_run``: dataset → split → preprocess → model → two-phase training → evaluation → run dir.

The run dir holds ``model.keras`` + ``config.json`` (the contract every later stage reads), plus
``history.csv`` (one row per epoch and phase), ``metrics.json`` (validation and test metrics, the chosen
threshold, a logistic-regression probe on the frozen ImageNet features as a baseline, timings) and
``roc.png``. ``checkpoint/`` exists only while a run is unfinished: calling ``train_run`` again with the
same arguments resumes from it.
"""
from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeretina.errors import DataError, EdgeRetinaError, ModelError
from edgeretina.io import ensure_writable_dir, write_json_atomic, write_text_atomic
from edgeretina.tasks import TaskKind, TaskSpec, scores_from_output, task_spec
from edgeretina.train.two_phase import Arrays, TrainConfig, finetune, warmup

CHECKPOINT_DIR = "checkpoint"


def subsample(records: list, n: int | None, spec: TaskSpec, seed: int = 0) -> list:
    """At most ``n`` records, drawn at random; the positive/minority records are kept preferentially
    (up to half of ``n``) so a small sample still has enough of them. ``None`` → all records."""
    if n is None or n >= len(records):
        return list(records)
    from edgeretina.data import is_minority

    rng = np.random.default_rng(seed)
    pos = [r for r in records if is_minority(r, spec)]
    neg = [r for r in records if not is_minority(r, spec)]
    k_pos = min(len(pos), n // 2)
    pick_pos = [pos[i] for i in sorted(rng.choice(len(pos), k_pos, replace=False))] if k_pos else []
    k_neg = min(len(neg), n - k_pos)
    pick_neg = [neg[i] for i in sorted(rng.choice(len(neg), k_neg, replace=False))] if k_neg else []
    return pick_pos + pick_neg


def make_strategy(name: str | None):
    """``default`` → None (one device); ``mirrored`` → MirroredStrategy (all local GPUs);
    ``multiworker`` → MultiWorkerMirroredStrategy (reads ``TF_CONFIG``)."""
    name = (name or "default").lower()
    if name == "default":
        return None
    from edgeretina._keras import tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise EdgeRetinaError(f"unknown strategy '{name}' (choose default, mirrored or multiworker)")


def check_task_served(data, task: str, fmt: str | None = None) -> str:
    """One-line DataError when the dataset's format cannot serve the task. Returns the format."""
    from edgeretina.data import FORMAT_TASKS, DataFormat, detect_format

    f = DataFormat(fmt) if fmt else detect_format(data)
    served = FORMAT_TASKS.get(f, ())
    if task not in served:
        raise DataError(f"{data}: a {f.value} dataset does not serve task '{task}' "
                        f"(it serves: {', '.join(served)})")
    return f.value


def history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = ["phase", "epoch", "loss", "val_loss", "val_score", "lr", "seconds"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def logreg_probe(f_train, y_train, f_test, y_test, spec: TaskSpec, n_boot: int = 1000, seed: int = 0,
                 f_val=None, y_val=None):
    """Baseline: logistic regression (balanced classes, standardized features) on frozen pooled features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from edgeretina.metrics import bootstrap_auroc

    if spec.kind is not TaskKind.BINARY:
        return None
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced"))
    clf.fit(f_train, y_train)
    s = clf.predict_proba(f_test)[:, 1]
    out = {"model": "logistic regression (C=0.1, balanced) on frozen pooled backbone features",
           **bootstrap_auroc(y_test, s, n_boot, seed).to_dict(), "_test_scores": s}
    if f_val is not None and len(f_val):
        from edgeretina.metrics import auroc

        out["val_auroc"] = auroc(y_val, clf.predict_proba(f_val)[:, 1])
    return out


def save_clean_model(model, path: Path) -> Path:
    """Save an uncompiled copy (no custom loss/optimizer needed to load it), atomically."""
    from edgeretina._keras import keras
    from edgeretina.io import atomic_path

    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    for layer in clean.layers:
        layer.trainable = True
    with atomic_path(path) as tmp:
        tmpk = tmp.with_suffix(".keras")
        clean.save(tmpk)
        tmpk.replace(tmp)
    return path


def evaluate_model(model, spec: TaskSpec, x, y, threshold=None, n_boot: int = 1000, seed: int = 0):
    from edgeretina.metrics import evaluate

    s = scores_from_output(spec, model.predict(x, batch_size=64, verbose=0))
    return s, evaluate(spec, y, s, threshold, n_boot, seed)


@dataclass(frozen=True)
class RunOptions:
    """Everything ``train_run`` needs besides (data, task, arch, out). Validated on construction."""

    weights: Any = "imagenet"
    input_size: int | None = None
    head: Any = None
    arch_options: dict | None = None
    config: TrainConfig | None = None
    split: str | None = None
    seed: int = 0
    pipeline: Any = None
    data_options: dict | None = None
    max_train: int | None = None
    max_val: int | None = None
    max_test: int | None = None
    grid: bool = False
    grid_space: dict | None = None
    strategy: str | None = "default"
    n_boot: int = 1000
    baseline: bool = True
    sensitivity: float = 0.9
    overwrite: bool = False
    cv: int | None = None             # K-fold CV over train+val; the final model trains on all of them
    cv_seeds: tuple[int, ...] = (0,)  # repeat the CV with these fold/training seeds (spread over seeds)
    cv_only: bool = False             # recipe selection: write cv.json only, never touch the test split

    def __post_init__(self):
        if self.input_size is not None and not 32 <= int(self.input_size) <= 1024:
            raise ModelError(f"input size must be between 32 and 1024 px, got {self.input_size}")
        if self.cv is not None and int(self.cv) < 3:
            raise EdgeRetinaError(f"--cv needs at least 3 folds, got {self.cv}")
        if self.cv_only and not self.cv:
            raise EdgeRetinaError("--cv-only needs --cv K")
        if not self.cv_seeds:
            raise EdgeRetinaError("cv_seeds must name at least one seed")
        if not 0.0 < float(self.sensitivity) < 1.0:
            raise EdgeRetinaError(f"sensitivity target must be in (0, 1), got {self.sensitivity}")
        if self.grid and self.strategy not in (None, "default") and self.cv:
            raise EdgeRetinaError("--grid with --cv runs on one device (strategy default)")

    @property
    def cfg(self) -> TrainConfig:
        return self.config or TrainConfig()


def train_run(data, task: str, arch: str, out, *, log: Callable[[str], None] | None = None, callbacks=(),
              options: RunOptions | None = None, **kw) -> Path:
    """Train one model and write its run dir ``out``; returns ``Path(out)``. Options: :class:`RunOptions`
    (pass ``options=`` or its fields as keywords). Re-running the same call after an interruption resumes
    from ``out/checkpoint``. With ``cv=K`` the recipe is cross-validated first (:mod:`edgeretina.train.cv`) and
    the final model trains on train+val. See docs/training.md."""
    from edgeretina.train.stages import TrainRun

    opts = options if options is not None else RunOptions(**kw)
    return TrainRun(data, task, arch, out, opts, log=log, callbacks=callbacks).run()
