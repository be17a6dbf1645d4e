"""The short fine-tune that pruning and QAT need: a few hundred steps on the run's training split.

The model being fine-tuned outputs logits (``tflite.logits_model``), so the loss is built ``from_logits``.
BatchNorm layers are frozen (inference mode), so a few small batches cannot wreck their statistics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeretina.tasks import TaskKind


@dataclass(frozen=True)
class FineTune:
    steps: int = 300            # optimizer steps (batches)
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_images: int = 1024      # training images loaded (stratified by class)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def labels_array(y: list, kind: str) -> np.ndarray:
    if kind == TaskKind.MULTILABEL.value:
        return np.asarray([list(v) for v in y], dtype=np.float32)
    return np.asarray(y, dtype=np.int32)


def loss_for(kind: str):
    from edgeretina._keras import keras

    if kind == TaskKind.MULTILABEL.value:
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def freeze_batchnorm(model) -> None:
    from edgeretina._keras import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def fit(model, X: np.ndarray, y: np.ndarray, kind: str, ft: FineTune, callbacks=(), class_weight=None):
    """Compile and fit ``model`` (logits) for ``ft.steps`` batches drawn with replacement-free shuffling."""
    from edgeretina._keras import keras, tf

    model.compile(optimizer=keras.optimizers.Adam(ft.learning_rate), loss=loss_for(kind))
    ds = (tf.data.Dataset.from_tensor_slices((X, y)).shuffle(len(X), seed=ft.seed, reshuffle_each_iteration=True)
          .repeat().batch(ft.batch_size, drop_remainder=False))
    if class_weight is not None and kind != TaskKind.MULTILABEL.value:
        w = np.asarray([class_weight.get(i, 1.0) for i in range(int(y.max()) + 1)], dtype=np.float32)
        ds = ds.map(lambda a, b: (a, b, tf.gather(w, b)))
    model.fit(ds, steps_per_epoch=max(1, ft.steps), epochs=1, verbose=0, callbacks=list(callbacks))
    return model


def balanced_class_weight(y: np.ndarray, kind: str) -> dict[int, float] | None:
    """Inverse-frequency weights for single-label tasks (what training used), None for multi-label."""
    if kind == TaskKind.MULTILABEL.value or len(y) == 0:
        return None
    counts = np.bincount(y)
    return {i: float(len(y) / (len(counts) * c)) for i, c in enumerate(counts) if c > 0}
