"""Batch-1 latency of every model variant side by side (pytest-benchmark), so one run compares them.

    python -m pytest benchmarks/suites/test_latency_bench.py --benchmark-only
    EDGERETINA_BENCH_MODELS=runs/glaucoma:runs/glaucoma/export python -m pytest benchmarks/suites/test_latency_bench.py

Without ``EDGERETINA_BENCH_MODELS`` (model files or directories, ``os.pathsep``-separated) it trains the
test suite's small model (MobileNetV2 at 96 px on an ODIR glaucoma sample, ~1 min) and exports float32,
fp16 and int8. All variants sit in one benchmark group, so the table's ratio column (in parentheses)
compares them; ``extra_info`` holds images/s, the file size and the device. Read ratios, not absolute ms:
this machine's 2 cores are shared. ``edgeretina bench`` gives the same latencies with accuracy.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from edgeretina.benchmarks.devices import DEVICES, Device  # noqa: E402
from edgeretina.data import load_arrays, open_dataset  # noqa: E402
from edgeretina.inference.modelfile import expand_models, open_model  # noqa: E402
from edgeretina.paths import shared_dir  # noqa: E402
from edgeretina.preprocess import Pipeline  # noqa: E402

ENV = "EDGERETINA_BENCH_MODELS"
DEFAULT = ["keras", "float32", "fp16", "int8"]


def _given():
    if not os.environ.get(ENV):
        return None

    return expand_models([p for p in os.environ[ENV].split(os.pathsep) if p])


GIVEN = _given()
IDS = [str(p) for p in GIVEN] if GIVEN else DEFAULT
pytestmark = pytest.mark.skipif(GIVEN is None and not (shared_dir() / "data" / "odir").is_dir(),
                                reason="no models given and ODIR not found in shared/")


@pytest.fixture(scope="module")
def paths():
    if GIVEN:
        return {str(p): p for p in GIVEN}
    from helpers.testmodels import glaucoma_variants

    built = glaucoma_variants()
    return {"keras": built["model"], **built["tflite"]}


@pytest.fixture(scope="module")
def image_for():
    """One real preprocessed ODIR image per preprocessing recipe (a model's own)."""
    cache = {}

    def get(model):
        key = json.dumps(model.config.preprocessing, sort_keys=True)
        if key not in cache:
            data = (model.config.dataset or {}).get("path") or shared_dir() / "data" / "odir"
            rec = open_dataset(data, model.config.task).records[:1]
            x, _ = load_arrays(rec, Pipeline.from_json(model.config.preprocessing))
            cache[key] = np.asarray(x, dtype=np.float32)
        return cache[key]

    return get


@pytest.mark.parametrize("variant", IDS)
def test_latency(benchmark, paths, image_for, variant):
    model = open_model(paths[variant])
    runner = DEVICES[Device.CPU].load(model, os.cpu_count())
    x1 = image_for(model)
    benchmark.group = "batch-1 latency"
    benchmark.extra_info.update(variant=model.name, device=runner.device, size_bytes=model.size_bytes(),
                                threads=getattr(runner, "threads", None))
    probs = benchmark.pedantic(runner.predict, args=(x1,), rounds=20 if model.format == "keras" else 200,
                               iterations=1, warmup_rounds=3)
    assert probs.shape[0] == 1 and np.isfinite(probs).all()
    benchmark.extra_info["images_per_s"] = round(1.0 / benchmark.stats.stats.mean, 1)
