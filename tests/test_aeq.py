"""``edgeretina export --int8 --quantizer aeq``: ai-edge-quantizer as the full-integer backend (converters/aeq.py),
on the self-contained ``tiny_run`` model through the same verify / metadata / manifest path as every variant."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeretina.converters import read_metadata
from edgeretina.converters.export import ExportOptions
from edgeretina.errors import ExportError
from edgeretina.runtime import LiteRTModel


@pytest.fixture(scope="module")
def exported(tiny_run):
    from helpers.guarded import guard_export

    return guard_export(tiny_run)


def test_aeq_int8_is_verified_litert_int8_with_metadata_and_manifest(exported):
    rep, out = exported
    r = rep["int8"]
    assert r.quantizer["backend"] == "aeq" and r.quantizer["recipe"] == "static_wi8_ai8"
    assert r.quantizer["ranges"] == "minmax" and r.quantizer["n_calibration"] == 48
    assert r.verification["within_tolerance"] and r.verification["agreement"] >= 0.9
    assert r.verification["float_ops"] == []  # every op integer
    path = next(out.glob("*_int8.tflite"))
    m = LiteRTModel(path)
    io = m.io_details()
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"  # our int8 interface convention
    meta = read_metadata(path)
    assert meta["export"]["quantizer"]["backend"] == "aeq"
    assert meta["output"]["kind"] == "logits" and meta["export"]["bias_correction"]["applied"] in (True, False)
    man = json.loads((out / "manifest.json").read_text())
    entry = next(e for e in man["results"] if e["variant"] == "int8")
    assert entry["quantizer"]["backend"] == "aeq" and man["options"]["quantizer"] == "aeq"
    assert entry["size_bytes"] < 0.7 * next(e for e in man["results"] if e["variant"] == "fp16")["size_bytes"]
    # the file scores images: logits near the float model's (tiny model: ±0.1 logit)
    x = np.zeros((2, *m.input_shape), np.float32)
    assert np.isfinite(m.raw(x)).all()


def test_aeq_float_interface_and_ranges(tiny_float_logits):
    """--io float keeps float32 interface tensors (INPUT/OUTPUT no_quantize); ema ranges differ from min/max."""
    from edgeretina.converters import aeq
    from edgeretina.converters.variants import IO

    fb = tiny_float_logits  # the tiny model's float32 logits .tflite (tests/conftest.py)
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (12, *LiteRTModel(fb).input_shape)).astype(np.float32)
    qf, info = aeq.quantize(fb, X, IO.FLOAT)
    m = LiteRTModel(qf)
    assert info.float_io and m.io_details()["input"]["dtype"] == "float32"
    assert m.io_details()["output"]["dtype"] == "float32" and m.float_ops() == []
    qi, _ = aeq.quantize(fb, X, IO.INT8)
    qe, _ = aeq.quantize(fb, X, IO.INT8, ranges="ema")
    s_i = LiteRTModel(qi).io_details()["input"]["scale"]
    s_e = LiteRTModel(qe).io_details()["input"]["scale"]
    assert s_i == pytest.approx(2 / 255, rel=0.02) and s_e < s_i  # min/max covers [-1, 1]; the EMA range less
    with pytest.raises(ExportError, match="unknown activation ranges"):
        aeq.quantize(fb, X, ranges="p99")


@pytest.mark.parametrize("kw, msg", [
    ({"variants": ["fp16"], "quantizer": "aeq"}, "--quantizer only applies"),
    ({"variants": ["int8"], "quantizer": "tflite"}, "unknown --quantizer"),
    ({"variants": ["int8"], "ranges": "ema"}, "--ranges applies to --quantizer aeq only"),
    ({"variants": ["int8-guard"], "guard_k": -1.0}, "--guard-k"),
    ({"variants": ["int8"], "head_split": 1}, "--head-split must be"),
    ({"variants": ["fp16"], "head_split": 4}, "--head-split only applies"),
])
def test_options_refuse_bad_quantizer_choices(kw, msg):
    with pytest.raises(ExportError, match=msg):
        ExportOptions(**kw)


def test_guard_adds_its_files_and_cli_flags():
    from click.testing import CliRunner

    from edgeretina.cli import cli
    from edgeretina.converters.variants import Variant, select_variants

    assert ExportOptions(variants=["int8-guard"]).variants == (Variant.FP16, Variant.INT8, Variant.INT8_GUARD)
    assert select_variants(int8_guard=True) == (Variant.FP16, Variant.INT8, Variant.INT8_GUARD)
    with pytest.raises(ExportError, match="--pruned conflicts with --int8-guard"):
        select_variants(int8_guard=True, pruned=True)
    r = CliRunner().invoke(cli, ["export", "--help"])
    assert "--int8-guard" in r.output and "--quantizer" in r.output and "--guard-k" in r.output


def _wide_head():
    """A GAP + linear head whose screening weights span 300x (a logistic regression on standardised features,
    folded) and whose 'normal' logit has all-zero weights, like ``--head-fit linear``; and sparse features."""
    from edgeretina._keras import keras

    rng = np.random.default_rng(0)
    inp = keras.Input((1, 1, 256))
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(inp)
    m = keras.Model(inp, keras.layers.Dense(2, name="head_logits")(x))
    w = rng.choice([-1, 1], 256) * np.exp(rng.normal(-4.5, 1.0, 256))
    w[:3] = [2.5, -1.7, 1.1]  # the few features with a tiny spread
    m.get_layer("head_logits").set_weights([np.stack([np.zeros(256), w], 1).astype(np.float32),
                                            np.array([0.0, -1.3], np.float32)])
    X = np.clip(rng.exponential(0.5, (64, 1, 1, 256)), 0, 6)  # sparse post-ReLU6 features
    X[..., :3] = 1 + 0.01 * rng.normal(size=(64, 1, 1, 3))     # the three with a tiny spread
    return m, X.astype(np.float32)


def _aeq_int8(model, X) -> bytes:
    from edgeretina.converters import aeq
    from edgeretina.converters.tflite import convert
    from edgeretina.converters.variants import VARIANTS, IO, Variant

    return aeq.quantize(convert(model, VARIANTS[Variant.FLOAT32]), X, IO.FLOAT)[0]


def test_head_split_keeps_the_function_and_cuts_the_int8_weight_rounding():
    """One int8 grid per output rounds most of the wide head's weights to 0 or 1 step; split into 4 magnitude
    bands (converters/headsplit.py) the same model loses less than half as much in LiteRT int8."""
    from edgeretina.converters.headsplit import split_head

    m, X = _wide_head()
    sm, info = split_head(m, 4)
    assert info.units == 5 and info.max_over_median > 100  # 4 bands for the screening logit, 1 for the zero one
    ref = m.predict(X, verbose=0)
    np.testing.assert_allclose(sm.predict(X, verbose=0), ref, atol=1e-4)

    def err(model) -> float:
        out = LiteRTModel(_aeq_int8(model, X[:48])).raw(X[48:])
        return float(np.std((out[:, 1] - out[:, 0]) - (ref[48:, 1] - ref[48:, 0])))

    e_plain, e_split = err(m), err(sm)
    assert e_split < e_plain / 2, (e_plain, e_split)  # the rest: the int8 input step times the big weights
    assert split_head(m, 0) == (m, None)


def test_bias_correction_moves_the_logit_difference_when_one_channel_cannot_move():
    """ai-edge-quantizer gives the all-zero 'normal' channel a weight scale of 0, so its int32 bias has no step:
    the correction moves the other channel by the whole difference (softmax logits are defined up to a
    constant) instead of removing only half of the error."""
    from edgeretina.converters.biascorr import correct_output_bias, shift_output_bias

    m, X = _wide_head()
    buf = _aeq_int8(m, X)
    ref = m.predict(X, verbose=0)
    moved, _ = shift_output_bias(buf, np.array([0.0, 0.2]))  # an offset of the kind int8 rounding leaves
    new, info = correct_output_bias(moved, X, ref, softmax=True)
    assert info.applied and abs(info.mean_error_before[1] - info.mean_error_before[0]) > 0.15
    assert abs(info.mean_error_after[1] - info.mean_error_after[0]) < 0.03, info  # half would be left: 0.1


def test_a_dead_channel_with_a_bias_keeps_its_output():
    """A conv channel with (near-)zero weights and a bias (MobileNetV2's ImageNet Conv1 has 7): ai-edge-quantizer
    gives it a weight scale of max|w|/127 ≈ 1e-12, its int32 bias overflows and is clamped. Every aeq file
    goes through fit_int32_biases, which grows that channel's weight scale until the bias fits: the int8
    output stays close to the float model's."""
    from edgeretina._keras import keras
    from edgeretina.converters import aeq
    from edgeretina.converters.tflite import convert
    from edgeretina.converters.variants import VARIANTS, IO, Variant

    rng = np.random.default_rng(1)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(2, name="head")(x))
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32) * 0.3
    w[..., 2] = 1e-10 * rng.normal(size=(3, 3, 3))  # dead channel 2 ...
    m.get_layer("conv").set_weights([w, np.array([0.1, -0.1, 0.8, 0.0], np.float32)])  # ... with a bias
    m.get_layer("head").set_weights([np.array([[0.5, -0.5], [0.2, 0.3], [-2.0, 2.0], [0.1, 0.1]], np.float32),
                                     np.zeros(2, np.float32)])
    X = rng.uniform(0, 1, (48, 8, 8, 3)).astype(np.float32)
    q = aeq.Quantization(convert(m, VARIANTS[Variant.FLOAT32]), X[:32], IO.FLOAT)
    out = LiteRTModel(q.quantize()).raw(X[32:])
    assert q.refit == 1 and q.info().bias_refit_channels == 1
    ref = m.predict(X[32:], verbose=0)
    assert np.abs(out - ref).max() < 0.05  # a clamped bias moves both logits by about ±1.6
