"""The ``cpu`` device: a .tflite on ai-edge-litert's Interpreter (XNNPACK, the default CPU delegate).

Batch 1, ``num_threads`` from ``--threads``. int8 interface tensors are quantized/dequantized with their own
(scale, zero_point); a model whose metadata says it outputs logits gets the recorded activation, so
``predict`` always returns probabilities.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeretina.errors import ModelError

from ._common import time_batch1, to_probabilities
from .base import Timing


def _qparams(detail: dict) -> tuple[float, int] | None:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []))
    zps = np.asarray(q.get("zero_points", []))
    if scales.size == 0:
        scale, zp = detail.get("quantization", (0.0, 0))
        return (float(scale), int(zp)) if scale else None
    return float(scales.reshape(-1)[0]), int(zps.reshape(-1)[0]) if zps.size else 0


class LiteRTRunner:
    device = "cpu"
    supports_predict = True

    def __init__(self, path: str | Path, *, logits: bool = False, activation: str = "softmax",
                 threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.threads = threads
        self.logits, self.activation = logits, activation
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{self.path}: LiteRT cannot load this model ({msg})") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input tensor, found {len(inputs)}")
        self._in = inputs[0]
        self._outs = self.interpreter.get_output_details()
        self.input_shape = tuple(int(d) for d in self._in["shape"][1:])
        self.input_dtype = np.dtype(self._in["dtype"])
        self._in_q = _qparams(self._in) if self.input_dtype.kind in "iu" else None
        self._out_q = [(_qparams(o) if np.dtype(o["dtype"]).kind in "iu" else None) for o in self._outs]

    @classmethod
    def from_model(cls, model, threads: int | None = None) -> "LiteRTRunner":
        """From a :class:`~edgeretina.benchmarks.modelfile.ModelFile`."""
        return cls(model.path, logits=model.outputs_logits, activation=model.activation, threads=threads)

    # ----------------------------------------------------------------------------------------- internals
    def _set(self, x1: np.ndarray) -> None:
        if self._in_q is not None:
            scale, zp = self._in_q
            info = np.iinfo(self.input_dtype)
            x1 = np.clip(np.round(x1 / scale + zp), info.min, info.max).astype(self.input_dtype)
        else:
            x1 = x1.astype(self.input_dtype, copy=False)
        self.interpreter.set_tensor(self._in["index"], x1)

    def _get(self) -> np.ndarray:
        outs = []
        for o, q in zip(self._outs, self._out_q):
            raw = self.interpreter.get_tensor(o["index"])
            raw = raw.astype(np.float64)
            if q is not None:
                scale, zp = q
                raw = (raw - zp) * scale
            outs.append(raw.reshape(len(raw), -1))
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise ModelError(f"{self.path}: input is {tuple(x.shape[1:])} but the model expects "
                             f"{self.input_shape}")
        return x

    def _step(self, x1: np.ndarray) -> np.ndarray:
        self._set(x1)
        self.interpreter.invoke()
        return self._get()

    # ----------------------------------------------------------------------------------------- interface
    def raw(self, x: np.ndarray) -> np.ndarray:
        """Dequantized raw outputs (logits or probabilities, as the model emits them)."""
        x = self._check(x)
        return np.concatenate([self._step(x[i:i + 1]) for i in range(len(x))], axis=0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return to_probabilities(self.raw(x), self.logits, self.activation)

    def time(self, x: np.ndarray, runs: int = 10, warmup: int = 3) -> Timing:
        x = self._check(x)
        return time_batch1(self._step, x, runs, warmup)
