"""Batch-1 latency: :class:`Timing` and the one timing loop every runner uses (:func:`time_batch1`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Batch-1 latency after warm-up, in milliseconds, over ``runs`` passes."""

    p50: float
    p90: float
    mean: float
    n: int

    @property
    def images_per_s(self) -> float:
        return 1000.0 / self.mean if self.mean > 0 else float("inf")

    @classmethod
    def from_samples(cls, ms) -> "Timing":
        a = np.asarray(ms, dtype=np.float64)
        return cls(float(np.percentile(a, 50)), float(np.percentile(a, 90)), float(a.mean()), int(a.size))


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
