"""Speed of the embedded synthetic-fundus generator (goal: 600 images at 128 px in ≲ 2–3 s on one core).

Run: ``python -m pytest benchmarks/suites/test_synthetic_bench.py --benchmark-only``; ``extra_info.images_per_s``
is the number to read. Each round uses a new seed, so the in-process cache of the last set never answers.
"""
from __future__ import annotations

import itertools

import pytest

pytest.importorskip("pytest_benchmark")

from edgeretina.data.synthetic import generate  # noqa: E402


@pytest.mark.parametrize("size", [128, 256])
def test_generate_600(benchmark, size):
    seeds = itertools.count(1000)
    n = 600 if size == 128 else 150
    images, labels, _ = benchmark.pedantic(lambda: generate(n, seed=next(seeds), size=size), rounds=3,
                                           iterations=1)
    assert images.shape == (n, size, size, 3) and set(labels.tolist()) == {0, 1}
    benchmark.extra_info["images"] = n
    benchmark.extra_info["images_per_s"] = round(n / benchmark.stats.stats.mean, 1)
