"""The runner interface every device implements (litert-cpu, keras-cpu, keras-gpu, android-adb)."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from edgeretina.runtime.timing import Timing

__all__ = ["Runner", "Timing"]


class Runner(Protocol):
    """Loads one model file on one device.

    ``predict(x)`` takes a float32 batch (N, H, W, C) — the output of the model's own preprocessing
    Pipeline — handles int8 (de)quantisation of interface tensors and any logits→probability activation
    recorded in the metadata, and returns the model's probabilities (N, outputs).
    ``time(x, runs, warmup)`` returns batch-1 latency: ``warmup`` untimed calls, then ``runs`` passes over
    every image of ``x``, each timed alone (``Timing.n == runs * len(x)``).

    Optional attributes the harness reads: ``threads`` (threads actually used), ``supports_predict``
    (False for a runner that only times, e.g. a phone: scores then come from the same file on the host)
    and ``facts`` (a dict about the device, reported as ``device_info``).
    """

    device: str

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def time(self, x: np.ndarray, runs: int = 10, warmup: int = 3) -> Timing: ...
