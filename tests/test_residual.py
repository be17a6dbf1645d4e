"""``edgeretina export --int8 --residual-weights LAYER``: a conv layer as two int8 kernels (converters/residual.py),
on a small Keras model run through the TF converter, ai-edge-quantizer and LiteRT, and on the ``tiny_run`` model
through the whole export."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeretina.converters.export import ExportOptions
from edgeretina.errors import ExportError
from edgeretina.runtime import LiteRTModel


def _model():
    """ReLU6 stem → depthwise (+BN, ReLU6) → project → GAP → linear logit. The depthwise kernels have one large
    tap and 24 small ones (0.3–0.49 int8 steps each), so nearest int8 rounding wipes out their response:
    weight rounding, not activation ranges, is this model's int8 noise, as on MobileNetV2's first block."""
    from edgeretina._keras import keras

    rng = np.random.default_rng(0)
    inp = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    dw = keras.layers.DepthwiseConv2D(5, padding="same", use_bias=False, name="dw")
    x = dw(x)
    bn = keras.layers.BatchNormalization(name="dw_bn")
    x = keras.layers.ReLU(6.0, name="dw_relu")(bn(x))
    x = keras.layers.Conv2D(4, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    m = keras.Model(inp, keras.layers.Dense(1, name="head_logits")(x))
    m.get_layer("stem").set_weights([rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32)])
    k = rng.uniform(0.3, 0.49, (5, 5, 8, 1)) / 127  # below half an int8 step of the centre tap: round to 0
    k[2, 2, :, 0] = 1.0
    dw.set_weights([k.astype(np.float32)])
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 0.3, 8), rng.normal(0.5, 0.2, 8),
                    rng.uniform(0.5, 2, 8)])
    m.get_layer("project").set_weights([rng.normal(0, 1, (1, 1, 8, 4)).astype(np.float32),
                                        np.zeros(4, np.float32)])
    m.get_layer("head_logits").set_weights([rng.normal(0, 3, (4, 1)).astype(np.float32), np.zeros(1, np.float32)])
    X = rng.uniform(-1, 1, (96, 24, 24, 3)) * rng.uniform(0.1, 1.0, (96, 1, 1, 1))  # brightness varies
    return m, X.astype(np.float32)


def _aeq_int8(model, X, caps=None) -> bytes:
    from edgeretina.converters import aeq
    from edgeretina.converters.tflite import convert
    from edgeretina.converters.variants import IO, VARIANTS, Variant

    return aeq.quantize(convert(model, VARIANTS[Variant.FLOAT32]), X, IO.FLOAT, caps=caps)[0]


def test_residual_kernels_keep_the_function_and_cut_the_int8_weight_noise():
    from edgeretina.converters.gptq import weight_ops
    from edgeretina.converters.residual import grid_split, rewrite

    m, X = _model()
    ref = m.predict(X, verbose=0)
    bm, (b,) = rewrite(m, "dw")  # data-free offsets: exact on any input
    np.testing.assert_allclose(bm.predict(X, verbose=0), ref, atol=1e-4)  # ReLU6 kept exact by the ±c biases
    rm, done = rewrite(m, "dw", X[:64])  # offsets from the calibration images: tighter
    (d,) = done
    assert (d.layer, d.kind, d.weights, d.folded_bn, d.activation, d.input_bound) == \
        ("dw", "depthwise", 200, "dw_bn", "relu6-exact", 6.0)
    assert d.max_residual_over_step <= 0.5 and (b.offset_source, d.offset_source) == ("bound", "calibration")
    assert 0 < d.offset_max < b.offset_max
    np.testing.assert_allclose(rm.predict(X, verbose=0), ref, atol=1e-4)

    caps = {"/dw_hi/": d.hi_cap}  # as the export passes them
    assert d.hi_cap == pytest.approx(6 + 2 * d.offset_max)

    def err(model, caps=None) -> float:
        out = LiteRTModel(_aeq_int8(model, X[:64], caps)).raw(X[64:])
        return float(np.sqrt(np.mean((out - ref[64:]) ** 2)))

    e_plain, e_res = err(m), err(rm, caps)
    assert e_res < e_plain / 2, (e_plain, e_res)  # measured: 0.156 → 0.043

    # in the int8 file the grid half comes back exactly: its int8 values are round(w / s) of the folded kernel
    buf = _aeq_int8(rm, X[:64], caps)
    (hq,) = [t["quantization_parameters"] for t in LiteRTModel(buf).interpreter.get_tensor_details()
             if "/dw_hi/" in t["name"] and tuple(t["shape"]) == (1, 24, 24, 8)]  # the grid kernel's output
    assert (127 - hq["zero_points"][0]) * hq["scales"][0] <= d.hi_cap * 1.01  # never above the cap
    dws = [r for r in weight_ops(buf) if r["weights"].shape[-1] == 8 and r["weights"].shape[1:3] == (5, 5)]
    assert len(dws) == 2  # two depthwise kernels where there was one
    hi_keras = rm.get_layer("dw_residual").hi.get_weights()[0][..., 0]  # (5, 5, 8), folded, on its grid
    deq = [r["weights"].reshape(5, 5, 8) * r["scales"].reshape(1, 1, 8) for r in dws]
    hi = [r for r, w in zip(dws, deq) if np.allclose(w, hi_keras, rtol=1e-5, atol=1e-7)]
    assert len(hi) == 1 and np.abs(hi[0]["weights"]).max() == 127
    assert rewrite(m, "") == (m, ())


@pytest.mark.parametrize("names, msg", [
    ("nope", "has no layer 'nope'"),
    ("dw_bn", "is a BatchNormalization, not a Conv2D"),
    ("dw,dw", "named twice"),
    ("dw,", "empty layer name"),
    ("stem", "input is not the output of a clamping ReLU"),
])
def test_residual_refuses_layers_it_cannot_keep_exact(names, msg):
    from edgeretina.converters.residual import rewrite

    m, _ = _model()
    with pytest.raises(ExportError, match=msg):
        rewrite(m, names)


def test_residual_options_need_an_int8_variant():
    with pytest.raises(ExportError, match="--residual-weights only applies"):
        ExportOptions(variants=["fp16"], residual_weights="expanded_conv_depthwise")
    with pytest.raises(ExportError, match="--residual-weights needs --quantizer aeq"):
        ExportOptions(variants=["int8"], residual_weights="expanded_conv_depthwise")
    assert ExportOptions(variants=["int8"], quantizer="aeq", residual_weights="a,b").residual_weights == ("a", "b")


def test_export_with_residual_weights_records_them(tiny_run, tmp_path):
    """The whole export on the tiny MobileNetV2: verified in LiteRT, the layer in the manifest and metadata; a
    name the model lacks is a one-line error and leaves no file."""
    from click.testing import CliRunner

    from edgeretina.cli import cli
    from edgeretina.converters import export_model, read_metadata

    r = export_model(tiny_run, ["int8"], tmp_path / "r", quantizer="aeq", calib_n=32, verify_n=16,
                     residual_weights="expanded_conv_depthwise", borderline_band="off")["int8"]
    assert r.verification["within_tolerance"]
    (layer,) = r.quantizer["residual_weights"]["layers"]
    assert layer["layer"] == "expanded_conv_depthwise" and layer["activation"] == "relu6-exact"
    man = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert man["options"]["residual_weights"] == ["expanded_conv_depthwise"]
    assert read_metadata(r.path)["export"]["quantizer"]["residual_weights"]["layers"][0]["weights"] == layer["weights"]
    assert LiteRTModel(r.path).float_ops() == []

    out = tmp_path / "bad"
    res = CliRunner().invoke(cli, ["export", str(tiny_run), "--int8", "--quantizer", "aeq",
                                   "--residual-weights", "no_such_layer",
                                   "--out", str(out)])
    assert res.exit_code != 0 and "has no layer 'no_such_layer'" in res.output
    assert "Traceback" not in res.output and not list(out.glob("*.tflite")) if out.exists() else True
