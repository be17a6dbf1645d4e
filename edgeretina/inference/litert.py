"""The ``cpu`` device: a .tflite on ai-edge-litert's Interpreter (XNNPACK, the default CPU delegate).

Batch 1, ``num_threads`` from ``--threads``. Everything LiteRT is :class:`edgeretina.runtime.LiteRTModel`
(int8 interface tensors quantized/dequantized with their own (scale, zero_point)); a model whose metadata
says it outputs logits gets the recorded activation, so ``predict`` always returns probabilities.

``xnnpack=False`` (``--device cpu:builtin``): LiteRT's built-in kernels instead of the XNNPACK delegate. Such a
runner made with the model's task (``from_model``) also runs the same inputs through XNNPACK and keeps the
comparison (:class:`edgeretina.emulation.parity.Parity`: decision flips, max |Δ| of the raw outputs,
bit-identity) in its facts as ``vs_xnnpack``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeretina.emulation.parity import compare_outputs
from edgeretina.env import device_facts
from edgeretina.runtime import LiteRTModel, Timing, to_probabilities


class LiteRTRunner:
    device = "cpu"
    supports_predict = True

    def __init__(self, path: str | Path, *, logits: bool = False, activation: str = "softmax",
                 threads: int | None = None, xnnpack: bool = True, task: tuple | None = None):
        self.path = Path(path)
        self.threads = threads
        self.logits, self.activation = logits, activation
        self.litert = LiteRTModel(self.path, threads=threads, xnnpack=xnnpack)
        self.device = "cpu" if xnnpack else "cpu:builtin"  # the bench row's device
        self.task = task  # (TaskSpec, threshold): a builtin runner compares its decisions with XNNPACK's
        self.parity = None
        self.interpreter = self.litert.interpreter
        self.input_shape = self.litert.input_shape
        self.input_dtype = self.litert.input_dtype

    @classmethod
    def from_model(cls, model, threads: int | None = None, xnnpack: bool = True) -> "LiteRTRunner":
        """From a :class:`~edgeretina.inference.modelfile.ModelFile`; ``xnnpack=False``: LiteRT's built-in
        kernels (``--device cpu:builtin``)."""
        return cls(model.path, logits=model.outputs_logits, activation=model.activation, threads=threads,
                   xnnpack=xnnpack, task=(model.config.spec, model.config.threshold))

    # kept for callers that drive the interpreter by hand (tests/test_android_core.py)
    @property
    def _in(self) -> dict:
        return self.litert.input_detail

    def _get(self) -> np.ndarray:
        return self.litert.get_output()

    # ----------------------------------------------------------------------------------------- interface
    def raw(self, x: np.ndarray) -> np.ndarray:
        """Dequantized raw outputs (logits or probabilities, as the model emits them)."""
        return self.litert.raw(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self.raw(x)
        if not self.litert.xnnpack and self.task is not None:
            xnn = LiteRTModel(self.path, threads=self.threads).raw(x)
            self.parity = compare_outputs(*self.task, raw, xnn, self.logits, self.activation)
        return to_probabilities(raw, self.logits, self.activation)

    def time(self, x: np.ndarray, runs: int = 10, warmup: int = 3) -> Timing:
        return self.litert.time(x, runs, warmup)

    @property
    def facts(self) -> dict:
        """This machine's CPU, ISA flags, LiteRT version, delegate and threads (the row's ``device_info``)."""
        facts = device_facts("xnnpack" if self.litert.xnnpack else "none (built-in kernels)", self.threads)
        if self.parity is not None:
            facts["vs_xnnpack"] = self.parity.to_dict()
        return facts
