"""Losses: cross-entropy, class-weighted cross-entropy and the multi-task paper's exponential
uneven-weight binary cross-entropy (ExpUWBCE)::

    L = W1 · (exp(−y · log ŷ) − 1) − W2 · (1 − y) · log(1 − ŷ)

For y = 1 the first term is W1·(1/ŷ − 1) (steeply penalising missed positives); for y = 0 it vanishes and
the second is the usual W2-weighted negative log-likelihood.

Binary tasks have a 2-way softmax output and int labels: ``ce`` is sparse categorical CE (class weights
go through Keras ``class_weight``); ``exp-uwbce`` reads the positive column.
"""
from __future__ import annotations

from enum import Enum

import numpy as np

from edgeretina.errors import EdgeRetinaError
from edgeretina.tasks import TaskKind, TaskSpec


class LossName(str, Enum):
    CE = "ce"                    # (sparse) categorical CE / BCE for multi-label
    WEIGHTED_CE = "weighted-ce"  # class-weighted CE (balanced weights from the training labels)
    EXP_UWBCE = "exp-uwbce"      # exponential uneven-weight BCE


def exp_uwbce_numpy(y, p, w1: float = 1.0, w2: float = 1.0, eps: float = 1e-7) -> float:
    """Reference implementation (mean over all elements), straight from the formula."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return float(np.mean(w1 * (np.exp(-y * np.log(p)) - 1.0) - w2 * (1.0 - y) * np.log(1.0 - p)))


def _keras():
    from edgeretina._keras import keras, tf

    return keras, tf


def make_exp_uwbce(w1=1.0, w2=1.0, eps: float = 1e-7, positive_column: int | None = None):
    """ExpUWBCE as a Keras loss. ``w1``/``w2``: scalars or per-label vectors. ``positive_column``: for a
    binary softmax model with int labels, the column holding p(positive)."""
    keras, tf = _keras()

    class ExpUWBCE(keras.losses.Loss):
        def __init__(self, name="exp_uwbce", **kw):
            super().__init__(name=name, **kw)
            self.w1 = tf.constant(np.asarray(w1, np.float32))
            self.w2 = tf.constant(np.asarray(w2, np.float32))

        def call(self, y_true, y_pred):
            y_pred = tf.cast(y_pred, tf.float32)
            if positive_column is not None:
                y_pred = y_pred[:, positive_column:positive_column + 1]
                y_true = tf.reshape(tf.cast(y_true, tf.float32), (-1, 1))
            y_true = tf.cast(y_true, tf.float32)
            p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
            loss = self.w1 * (tf.exp(-y_true * tf.math.log(p)) - 1.0) - self.w2 * (1.0 - y_true) * tf.math.log(1.0 - p)
            return tf.reduce_mean(loss, axis=-1)

    return ExpUWBCE()


def make_weighted_bce(pos_weight, eps: float = 1e-7):
    """Multi-label BCE with per-label positive weights (``n_neg / n_pos``)."""
    keras, tf = _keras()
    pw = tf.constant(np.asarray(pos_weight, np.float32))

    def weighted_bce(y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        p = tf.clip_by_value(tf.cast(y_pred, tf.float32), eps, 1.0 - eps)
        return tf.reduce_mean(-(pw * y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p)), axis=-1)

    return weighted_bce


def make_loss(name: str | LossName, spec: TaskSpec, class_weights: dict[int, float] | None = None,
              w1=None, w2=None):
    """→ (keras loss, keras ``class_weight`` dict or None)."""
    keras, _ = _keras()
    try:
        name = LossName(name)
    except ValueError:
        raise EdgeRetinaError(f"unknown loss '{name}' (choose from: {', '.join(l.value for l in LossName)})") from None
    if spec.kind is TaskKind.MULTILABEL:
        if name is LossName.CE:
            return keras.losses.BinaryCrossentropy(), None
        if name is LossName.WEIGHTED_CE:
            pw = [class_weights.get(i, 1.0) for i in range(spec.n_outputs)] if class_weights else 1.0
            return make_weighted_bce(pw), None
        if w1 is None and class_weights:
            w1 = [class_weights.get(i, 1.0) for i in range(spec.n_outputs)]
        return make_exp_uwbce(1.0 if w1 is None else w1, 1.0 if w2 is None else w2), None
    if name is LossName.EXP_UWBCE:
        if spec.kind is not TaskKind.BINARY:
            raise EdgeRetinaError(f"loss 'exp-uwbce' needs a binary or multi-label task, not "
                                  f"'{spec.task.value}' ({spec.kind.value})")
        if w1 is None and class_weights:
            w1 = class_weights.get(spec.positive_index, 1.0) / max(class_weights.get(0, 1.0), 1e-9)
        return make_exp_uwbce(1.0 if w1 is None else w1, 1.0 if w2 is None else w2,
                              positive_column=spec.positive_index), None
    cw = dict(class_weights) if (name is LossName.WEIGHTED_CE and class_weights) else None
    return keras.losses.SparseCategoricalCrossentropy(), cw
