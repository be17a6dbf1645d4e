"""Optic-disc locator speed (issue 20 target: ≤ 30 ms per image on 1 CPU core at the recipe's working
resolution).

Run: ``python -m pytest benchmarks/suites/test_disc_bench.py --benchmark-only``

The ONH recipe (``fov_crop → onh_crop → pad_square → resize``) hands ``locate_disc`` the FOV-cropped photo;
the locator itself always works at 192 px on the longer side, so its cost is nearly independent of the
input size except for the initial area-downscale. Timed with ``time.process_time`` (CPU seconds of this
process; OpenCV runs single-threaded, ``cv2.setNumThreads(1)``), so the number is one core's work even
on a busy machine. ``extra_info.ms_per_image`` is the number to read.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from edgeretina.benchmarks.disc_eval import hard_synthetic  # noqa: E402
from edgeretina.data.synthetic import generate  # noqa: E402
from edgeretina.preprocess import Pipeline, fov_crop, locate_disc  # noqa: E402


@pytest.fixture(scope="module")
def hard_images():
    return {t["kind"]: img for _, img, t in hard_synthetic(6, seed=0, size=256)}


def _odir_like(size: int) -> np.ndarray:
    img = generate(1, seed=5, size=256)[0][0]
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


def _info(benchmark, shape):
    benchmark.extra_info["input"] = f"{shape[1]}x{shape[0]}"
    if benchmark.stats and benchmark.stats.stats.mean:
        benchmark.extra_info["ms_per_image"] = round(1000 * benchmark.stats.stats.mean, 2)


@pytest.mark.benchmark(timer=time.process_time, min_rounds=20)
@pytest.mark.parametrize("size", [320, 1024])
def test_locate_disc_fov_cropped(benchmark, size):
    """``locate_disc`` on a FOV-cropped square photo: 320 px (the ODIR copies) and 1024 px."""
    img = _odir_like(size)
    d = benchmark(locate_disc, img)
    assert d.found
    _info(benchmark, img.shape)


@pytest.mark.benchmark(timer=time.process_time, min_rounds=10)
def test_camera_b_frame_fov_crop_and_locate(benchmark, hard_images):
    """The whole ONH detection of the pipeline (``fov_crop`` + ``locate_disc``) on a 2,500 × 2,048 frame
    with a bright ring (camera B)."""
    img = hard_images["ring_b"]
    pipe = Pipeline.default(224, onh=True)
    d = benchmark(pipe.detect_disc, img)
    assert d is not None
    _info(benchmark, img.shape)


@pytest.mark.benchmark(timer=time.process_time, min_rounds=20)
def test_onh_recipe_image_steps(benchmark):
    """All image steps of the ONH recipe at 224 px (fov_crop → onh_crop → pad_square → resize) on 320 px."""
    img = _odir_like(320)
    pipe = Pipeline.default(224, onh=True)
    out = benchmark(pipe.apply_image, img)
    assert out.shape == (224, 224, 3)
    _info(benchmark, img.shape)
    assert fov_crop(img).shape[0] > 0
