"""Helpers shared by the runners: output post-processing and batch-1 timing."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edgeretina.tasks import activate

from .base import Timing


def to_probabilities(raw: np.ndarray, logits: bool, activation: str) -> np.ndarray:
    """Raw model output → probabilities (N, outputs); logits get the metadata's activation."""
    out = np.asarray(raw, dtype=np.float64)
    out = out.reshape(len(out), -1)
    return activate(out, activation) if logits else out


def time_batch1(step: Callable[[np.ndarray], object], x: np.ndarray, runs: int, warmup: int) -> Timing:
    """Warm up with ``warmup`` calls on the first image, then ``runs`` passes over every image of ``x``,
    each image timed alone at batch 1 (wall clock, ``time.perf_counter``). Timing.n = runs * len(x)."""
    if len(x) == 0:
        raise ValueError("timing needs at least one image")
    if runs < 1:
        raise ValueError("runs must be >= 1")
    first = x[:1]
    for _ in range(max(0, warmup)):
        step(first)
    samples = []
    for _ in range(runs):
        for i in range(len(x)):
            xi = x[i:i + 1]
            t0 = time.perf_counter()
            step(xi)
            samples.append((time.perf_counter() - t0) * 1000.0)
    return Timing.from_samples(samples)
