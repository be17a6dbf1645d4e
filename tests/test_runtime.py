"""edgeretina.runtime: (de)quantization from each tensor's own dtype range, decisions, and the export's
agreement = 1 - the bench's flip rate on the same images (one computation), on the self-contained
``tiny_run`` model (no ../shared)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeretina.runtime import (decision_flip_rate, dequantize, flip_rate, quantize, task_decisions,
                                to_probabilities)
from edgeretina.tasks import task_spec


def _detail(dtype, scale, zp):
    return {"dtype": dtype, "quantization": (scale, zp),
            "quantization_parameters": {"scales": np.array([scale]), "zero_points": np.array([zp])}}


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
def test_quantize_clips_to_the_tensor_dtype_range(dtype):
    info = np.iinfo(dtype)
    d = _detail(dtype, 0.5, 0 if dtype is not np.uint8 else 128)
    q = quantize(np.array([-1e9, 0.0, 1.0, 1e9], np.float32), d)
    assert q.dtype == dtype and q[0] == info.min and q[-1] == info.max
    assert dequantize(q[1:3], d).tolist() == [0.0, 1.0]
    assert quantize(np.array([0.25], np.float32), {"dtype": np.float32, "quantization": (0.0, 0)}).dtype == np.float32


def test_decisions_and_flip_rates():
    glaucoma = task_spec("glaucoma")
    s, r = np.array([0.2, 0.6, 0.7, 0.4]), np.array([0.2, 0.4, 0.7, 0.6])
    assert task_decisions(glaucoma, s, 0.5).tolist() == [False, True, True, False]
    assert decision_flip_rate(glaucoma, s, r, 0.5) == flip_rate(r, s, 0.5) == 0.5
    multi = task_spec("multitask")
    m, mr = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.9, 0.6], [0.2, 0.8]])
    assert decision_flip_rate(multi, m, mr, [0.5, 0.5]) == 0.5  # per image, any label
    assert decision_flip_rate(multi, m, mr, {"glaucoma": 0.5, "dr": 0.7}) == 0.0
    p = to_probabilities(np.array([[0.0, np.log(3.0)]]), True, "softmax")
    np.testing.assert_allclose(p, [[0.25, 0.75]])


def test_manifest_agreement_is_one_minus_the_bench_flip_rate(tiny_run, tmp_path):
    """Export verifies int8 on the whole validation split (verify_n >= its size); the bench scores the same
    split against the same Keras model: 1 - agreement == flip rate (the same runtime code)."""
    from edgeretina.benchmarks.harness import run_bench
    from edgeretina.benchmarks.robustness import BenchOptions
    from edgeretina.converters import export_model
    from edgeretina.run import RunConfig

    cfg = RunConfig.load(tiny_run)
    rep = export_model(tiny_run, ["int8"], tmp_path / "exp", calib_n=32, verify_n=500, borderline_band="off")
    ver = rep["int8"].verification
    assert ver["sample"] == "val split"
    bench = run_bench([tiny_run, rep["int8"].path], cfg.dataset["path"], split="val", runs=1, warmup=0,
                      timing_images=1, n_boot=0, options=BenchOptions(stability=False))
    row = next(v for v in bench.variants if v.name == "int8")
    assert bench.dataset["n_images"] == ver["n"]
    assert row.flip_rate == pytest.approx(1.0 - ver["agreement"], abs=1e-12)
    assert row.auroc > 0.7  # the tiny model learned
