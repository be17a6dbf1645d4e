"""The ``keras-cpu`` and ``gpu`` devices: the Keras model's own ``predict`` at batch 1.

This is what the glaucoma benchmark paper timed and the baseline users compare against. Scores are
computed in batches (same numbers, much faster); only the timing is batch 1. TensorFlow is imported when
a runner is made, never at module import.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeretina.env import device_facts
from edgeretina.errors import DeviceError, ModelError
from edgeretina.runtime import Timing, time_batch1, to_probabilities


def gpu_devices() -> list[str]:
    from edgeretina._keras import tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def set_cpu_threads(threads: int | None) -> int:
    """Ask TensorFlow for ``threads`` intra-op threads (possible only before TensorFlow starts its
    runtime) and return the number it uses (its default, 0, means one per core)."""
    from edgeretina._keras import tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass
    return tf.config.threading.get_intra_op_parallelism_threads() or (os.cpu_count() or 1)


class KerasRunner:
    supports_predict = True

    def __init__(self, path: str | Path, *, gpu: bool = False, logits: bool = False,
                 activation: str = "softmax", threads: int | None = None, batch_size: int = 32):
        from edgeretina._keras import keras, tf

        self.path = Path(path)
        self.gpu = gpu
        self.device = "gpu" if gpu else "keras-cpu"
        self.logits, self.activation = logits, activation
        self.batch_size = batch_size
        if gpu:
            found = gpu_devices()
            if not found:
                raise DeviceError("gpu: no GPU found (TensorFlow lists no GPU device; install "
                                  "'edgeretina[gpu]' on a machine with a CUDA GPU)")
            self._tf_device = "/GPU:0"
            self.threads = None
            self.facts = device_facts("keras (TensorFlow GPU)", None, runtime="tensorflow", gpu=found[0])
            try:
                details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
                self.facts.update({k: str(v) for k, v in details.items()})
            except (RuntimeError, ValueError, IndexError):
                pass
        else:
            self._tf_device = "/CPU:0"
            self.threads = set_cpu_threads(threads)
            self.facts = device_facts("keras (TensorFlow CPU)", self.threads, runtime="tensorflow")
        try:
            with tf.device(self._tf_device):
                self.model = keras.models.load_model(str(self.path), compile=False)
        except Exception as e:  # noqa: BLE001 - any load failure is an unusable model file
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{self.path}: Keras cannot load this model ({msg})") from None
        shape = self.model.input_shape
        if isinstance(shape, list):
            raise ModelError(f"{self.path}: expected one input, the model has {len(shape)}")
        self.input_shape = tuple(shape[1:])

    @classmethod
    def from_model(cls, model, threads: int | None = None, gpu: bool = False) -> "KerasRunner":
        return cls(model.path, gpu=gpu, logits=model.outputs_logits, activation=model.activation,
                   threads=threads)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        want = self.input_shape
        if len(want) != x.ndim - 1 or any(w is not None and w != g for w, g in zip(want, x.shape[1:])):
            raise ModelError(f"{self.path}: input is {tuple(x.shape[1:])} but the model expects {want}")
        return x

    def _out(self, out) -> np.ndarray:
        if isinstance(out, (list, tuple)):
            out = np.concatenate([np.asarray(o).reshape(len(o), -1) for o in out], axis=1)
        return np.asarray(out)

    def predict(self, x: np.ndarray) -> np.ndarray:
        from edgeretina._keras import tf

        x = self._check(x)
        with tf.device(self._tf_device):
            out = self.model.predict(x, batch_size=self.batch_size, verbose=0)
        return to_probabilities(self._out(out), self.logits, self.activation)

    def time(self, x: np.ndarray, runs: int = 10, warmup: int = 3) -> Timing:
        from edgeretina._keras import tf

        x = self._check(x)
        with tf.device(self._tf_device):
            return time_batch1(lambda x1: self.model.predict(x1, verbose=0), x, runs, warmup)
