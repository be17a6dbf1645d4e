"""The short fine-tune that pruning and QAT need: a few hundred steps on the run's training split.

Two targets (``FineTune.target``):

- ``teacher`` (default): distillation — the model is trained to reproduce the *source* float model's logits
  (mean squared error), so the pruned / QAT model keeps the float model's decisions and its screening
  threshold. On ODIR glaucoma, QAT trained on labels flipped 11.9 % of decisions at the float threshold
  (it had become a different classifier, with its own threshold); distilled it stays close to the float model.
- ``labels``: cross-entropy on the labels (class-weighted), the textbook recipe; the variant then gets its
  own Youden threshold on the validation split.

The model being fine-tuned outputs logits (``tflite.logits_model``). BatchNorm layers are frozen (inference
mode), so a few small batches cannot wreck their statistics.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from edgeretina.data.labels import as_label_array
from edgeretina.errors import ExportError
from edgeretina.tasks import TaskKind


TARGETS = ("teacher", "labels")
EAGER_STEPS = 16  # fine-tunes of at most this many steps skip tracing the train step (fit)

# Who hears about fine-tune steps (set by the exporter for its progress lines): fn(step, total).
_STEP_PROGRESS: ContextVar[Callable[[int, int], None] | None] = ContextVar("finetune_progress", default=None)


@contextlib.contextmanager
def reporting(fn: Callable[[int, int], None] | None):
    """Inside the block, every :func:`fit` reports its progress to ``fn(step, total)`` about ten times."""
    token = _STEP_PROGRESS.set(fn)
    try:
        yield
    finally:
        _STEP_PROGRESS.reset(token)


def _progress_callback(total: int):
    fn = _STEP_PROGRESS.get()
    if fn is None:
        return None
    from edgeretina._keras import keras

    every = max(1, total // 10)

    class _Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % every == 0 or batch + 1 == total:
                fn(batch + 1, total)

    return _Steps()


@dataclass(frozen=True)
class FineTune:
    steps: int = 300            # optimizer steps (batches)
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_images: int = 1024      # training images loaded (stratified by class)
    seed: int = 0
    target: str = "teacher"     # "teacher" (distil the float model's logits) | "labels"

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ExportError(f"unknown fine-tune target '{self.target}' (choose {' or '.join(TARGETS)})")

    @property
    def distil(self) -> bool:
        return self.target == "teacher"

    def to_dict(self) -> dict:
        return asdict(self)


def labels_array(y: list, kind: str) -> np.ndarray:
    """Fine-tune labels from ``Record.y`` values (``edgeretina.data.labels.as_label_array``)."""
    return as_label_array(y, kind)


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
    """Compile and fit ``model`` (logits) for ``ft.steps`` batches drawn with replacement-free shuffling.
    ``y``: labels, or with ``ft.distil`` the teacher's logits (float, same shape as the model output)."""
    from edgeretina._keras import keras, tf

    if ft.distil:
        loss, class_weight = keras.losses.MeanSquaredError(), None
        y = np.asarray(y, dtype=np.float32)
    else:
        loss = loss_for(kind)
    # a short fine-tune runs eagerly: tracing the train step of a wrapped (pruned / QAT) MobileNetV2 costs as much
    # as ~25 eager steps (4 QAT steps at 48 px: 75 s traced vs 12 s eager on the loaded 2-core VM); same math
    model.compile(optimizer=keras.optimizers.Adam(ft.learning_rate), loss=loss, run_eagerly=ft.steps <= EAGER_STEPS)
    ds = (tf.data.Dataset.from_tensor_slices((X, y)).shuffle(len(X), seed=ft.seed, reshuffle_each_iteration=True)
          .repeat().batch(ft.batch_size, drop_remainder=False))
    if class_weight is not None and kind != TaskKind.MULTILABEL.value:
        w = np.asarray([class_weight.get(i, 1.0) for i in range(int(y.max()) + 1)], dtype=np.float32)
        ds = ds.map(lambda a, b: (a, b, tf.gather(w, b)))
    cb = _progress_callback(max(1, ft.steps))
    callbacks = list(callbacks) + ([cb] if cb is not None else [])
    model.fit(ds, steps_per_epoch=max(1, ft.steps), epochs=1, verbose=0, callbacks=callbacks)
    return model


def balanced_class_weight(y: np.ndarray, kind: str) -> dict[int, float] | None:
    """Inverse-frequency weights for single-label tasks (what training used), None for multi-label."""
    if kind == TaskKind.MULTILABEL.value or len(y) == 0:
        return None
    counts = np.bincount(y)
    return {i: float(len(y) / (len(counts) * c)) for i, c in enumerate(counts) if c > 0}
