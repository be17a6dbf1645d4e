"""Helpers of ``edgeretina train`` shared by the stages (:mod:`edgeretina.train.stages`) and the demo:
subsampling, strategies, the task/format check, history CSV, the frozen-feature probe, clean model saving.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.errors import DataError, EdgeRetinaError
from edgeretina.tasks import TaskKind, TaskSpec, scores_from_output
from edgeretina.data import DataFormat, FORMAT_TASKS, detect_format, is_minority
from edgeretina.io import atomic_path
from edgeretina.metrics import auroc, bootstrap_auroc, evaluate

CHECKPOINT_DIR = "checkpoint"


def subsample(records: list, n: int | None, spec: TaskSpec, seed: int = 0) -> list:
    """At most ``n`` records, drawn at random; the positive/minority records are kept preferentially
    (up to half of ``n``) so a small sample still has enough of them. ``None`` → all records."""
    if n is None or n >= len(records):
        return list(records)

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


def logreg_probe(spec: TaskSpec, train, test, val=None, *, n_boot: int = 1000, seed: int = 0):
    """Baseline: logistic regression (balanced classes, standardized features) on frozen pooled features.
    ``train`` / ``test`` / ``val`` = (features, labels); test AUROC with a bootstrap CI, and ``val_auroc``
    when ``val`` is given. None for a task that is not binary."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler


    if spec.kind is not TaskKind.BINARY:
        return None
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced"))
    (f_train, y_train), (f_test, y_test) = train, test
    clf.fit(f_train, y_train)
    s = clf.predict_proba(f_test)[:, 1]
    out = {"model": "logistic regression (C=0.1, balanced) on frozen pooled backbone features",
           **bootstrap_auroc(y_test, s, n_boot, seed).to_dict(), "_test_scores": s}
    if val is not None and len(val[0]):
        out["val_auroc"] = auroc(val[1], clf.predict_proba(val[0])[:, 1])
    return out


def save_clean_model(model, path: Path) -> Path:
    """Save an uncompiled copy (no custom loss/optimizer needed to load it), atomically."""
    from edgeretina._keras import keras

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
    s = scores_from_output(spec, model.predict(x, batch_size=64, verbose=0))
    return s, evaluate(spec, y, s, threshold, n_boot, seed)


