"""Export time per variant and size ratios vs float32 for MobileNetV2-224 with ImageNet weights.

    python -m pytest benchmarks/suites/test_export_bench.py --benchmark-only
    EDGERETINA_BENCH_EXPORT=float32,int8 python -m pytest benchmarks/suites/test_export_bench.py

One export per variant (rounds=1: an export is seconds to minutes, not microseconds). ``extra_info`` holds
the file size, gzip size, their ratios to float32 and, for pruned variants, the measured sparsity. The head
is a GAP + softmax on ImageNet features (untrained: sizes and times do not depend on it). Calibration uses
200 real ODIR images through the model's preprocessing; pruned/QAT variants fine-tune for 20 steps only
(``EDGERETINA_BENCH_STEPS``), so their times are the conversion cost plus a token fine-tune.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from edgeretina.converters import FineTune, export_model  # noqa: E402
from edgeretina.models import build_model  # noqa: E402
from edgeretina.paths import seed_keras_cache, shared_dir  # noqa: E402
from edgeretina.preprocess import Pipeline  # noqa: E402
from edgeretina.run import MODEL_FILE, RunConfig  # noqa: E402
from edgeretina.tasks import task_spec  # noqa: E402

VARIANTS = os.environ.get("EDGERETINA_BENCH_EXPORT",
                          "float32,fp16,dynamic,int8,pruned,pruned-int8,qat,pqat").split(",")
STEPS = int(os.environ.get("EDGERETINA_BENCH_STEPS", "20"))
pytestmark = pytest.mark.skipif(not (shared_dir() / "weights").is_dir() or not (shared_dir() / "data" / "odir").is_dir(),
                                reason="ImageNet weights / ODIR not found in shared/")
_SIZES: dict[str, tuple[int, int]] = {}


@pytest.fixture(scope="module")
def run224(tmp_path_factory):
    seed_keras_cache()
    spec = task_spec("glaucoma")
    d = tmp_path_factory.mktemp("mnv2_224") / "mobilenetv2_224"
    d.mkdir()
    build_model("mobilenetv2", spec, 224, weights="imagenet").save(d / MODEL_FILE)
    odir = shared_dir() / "data" / "odir"
    RunConfig(task="glaucoma", kind=spec.kind.value, labels=spec.labels,
              preprocessing=Pipeline.default(224, "tf").to_json(), input_size=224, weights="imagenet",
              positive_index=1, threshold=0.5,
              dataset={"path": str(odir), "format": "odir", "split": {"scheme": "70/10/20", "seed": 0}}).save(d)
    return d


@pytest.mark.parametrize("variant", VARIANTS)
def test_export_time(benchmark, run224, tmp_path, variant):
    ft = FineTune(steps=STEPS, batch_size=8, max_images=64)
    rep = benchmark.pedantic(export_model, args=(run224, [variant], tmp_path),
                             kwargs={"calib_n": 200, "verify_n": 16, "finetune": ft}, rounds=1, iterations=1)
    r = rep[variant]
    _SIZES[variant] = (r.size_bytes, r.gzip_bytes)
    info = {"size_mb": round(r.size_mb, 3), "gzip_mb": round(r.gzip_mb, 3),
            "max_abs_diff": r.verification["max_abs_diff"], "agreement": r.verification["agreement"]}
    if "float32" in _SIZES:
        f, g = _SIZES["float32"]
        info.update(size_ratio_vs_float32=round(r.size_bytes / f, 3), gzip_ratio_vs_float32=round(r.gzip_bytes / g, 3))
    if r.sparsity is not None:
        info["sparsity"] = round(float(r.sparsity), 4)
    if r.finetune:
        info["finetune_steps"] = r.finetune["steps"]
    benchmark.extra_info.update(info)
    assert np.isfinite(r.size_bytes) and r.size_bytes > 0
