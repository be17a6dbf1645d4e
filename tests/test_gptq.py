"""GPTQ-style int8 weight rounding (``export --int8 --weight-rounding gptq``, converters/gptq.py): the core on a
layer with correlated inputs, and a real export of the self-contained ``tiny_run`` model through LiteRT."""
from __future__ import annotations

import numpy as np
import pytest

from edgeretina.converters import gptq, read_metadata
from edgeretina.converters.export import ExportOptions
from edgeretina.errors import ExportError
from edgeretina.runtime import LiteRTModel
from edgeretina.runtime.flatbuffer import weight_ops


def _layer(seed=0, n=600, k=48, cout=16):
    """A layer whose inputs are correlated, non-negative (ReLU-like) and have a mean: where nearest rounding's
    per-weight errors add up in the output."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 6)) @ rng.normal(size=(6, k)) + 0.3 * rng.normal(size=(n, k))
    x = np.maximum(base + 1.0, 0.0)
    W = rng.normal(size=(cout, k)) * rng.uniform(0.2, 2.0, size=(cout, 1))
    scale = np.abs(W).max(axis=1) / gptq.QMAX
    return x, W, scale


def test_gptq_lowers_the_layer_output_error_on_new_inputs():
    x, W, scale = _layer()
    fit, test = x[:400], x[400:]
    Q_near = np.clip(np.round(W / scale[:, None]), -127, 127)
    Q = gptq.gptq_rows(W, fit.T @ fit, scale)
    assert Q.dtype == np.int8 and Q.shape == W.shape and np.abs(Q.astype(int)).max() <= 127
    H = test.T @ test
    before, after = gptq.output_mse(W, Q_near, scale, H, len(test)), gptq.output_mse(W, Q, scale, H, len(test))
    assert after < 0.5 * before
    assert np.mean(np.abs(Q - Q_near) <= 1) > 0.99  # the same grid: at most one step from nearest


def test_depthwise_form_equals_rows_form_per_channel():
    x, W, scale = _layer(seed=1, k=9, cout=4)
    H = np.stack([x[i::4].T @ x[i::4] for i in range(4)])  # each channel its own inputs
    Q = gptq.gptq_channels(W, H, scale)
    for c in range(4):
        np.testing.assert_array_equal(Q[c], gptq.gptq_rows(W[c:c + 1], H[c], scale[c:c + 1], act_order=False)[0])


def test_conv_rows_reproduce_the_convolution():
    """im2col rows in the weights' column order: rows @ w == the conv's output, SAME padding, stride 2."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 7, 9, 3))
    w = rng.normal(size=(5, 3, 3, 3))
    rec = {"op": "CONV_2D", "weights": w, "stride": (2, 2), "same": True}
    out = gptq.layer_rows(rec, x) @ w.reshape(5, -1).T
    xp = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    ref = np.array([[np.einsum("hwc,ohwc->o", xp[i:i + 3, j:j + 3], w) for j in range(0, 9, 2)]
                    for i in range(0, 7, 2)])
    np.testing.assert_allclose(out.reshape(ref.shape), ref, atol=1e-9)


def test_refusals():
    with pytest.raises(ExportError, match="--weight-rounding gptq only applies"):
        ExportOptions(variants=["fp16"], weight_rounding="gptq")
    with pytest.raises(ExportError, match="unknown --weight-rounding"):
        ExportOptions(variants=["int8"], weight_rounding="round")
    o = ExportOptions(variants=["int8"], weight_rounding="gptq", quantizer="aeq", max_flips=0.01)  # combines
    assert o.budget.max_float_macs == 0.10
    with pytest.raises(ExportError, match="--max-float-macs must be a share"):
        ExportOptions(variants=["int8"], weight_rounding="gptq", quantizer="aeq", max_flips=0.01, max_float_macs=2)


def test_mac_cap_keeps_rank_order_and_skips_what_does_not_fit():
    from edgeretina.converters.aeq import Op
    from edgeretina.converters.budget import capped

    ops = [(Op(i, "CONV_2D", f"s{i}", m), g) for i, (m, g) in enumerate([(50, 0.4), (8, 0.3), (0, 0.1), (3, 0.05)])]
    assert [o.index for o, _ in capped(ops, 100, 0.10)] == [1, 2]       # 50 never fits; 8 + 3 > 10
    assert [o.index for o, _ in capped(ops, 100, 0.12)] == [1, 2, 3]
    assert [o.index for o, _ in capped(ops, 100, 1.0)] == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def tiny_files(tiny_float_logits):
    """The tiny model as a float32 .tflite (its logits graph, tests/conftest.py) and ai-edge-quantizer's int8 of
    it (per-channel int8 weights; much faster than the TF converter's int8), with 48 of its training images as
    calibration images."""
    from edgeretina.converters import aeq
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.preprocess import Pipeline
    from helpers.tiny import DATASET, INPUT_SIZE

    fb = tiny_float_logits
    parts = open_dataset(DATASET, "glaucoma").split("70/10/20", seed=0)
    X, _ = load_arrays(parts["train"][:64], Pipeline.default(INPUT_SIZE, "tf", onh=True))
    X = np.asarray(X, np.float32)
    int8, _ = aeq.quantize(fb, X[:48], ranges="minmax")
    return fb, int8, X


def test_gptq_on_a_real_model_lowers_layer_error_and_keeps_the_interface(tiny_files):
    """On a real (tiny, trained) model: GPTQ lowers the held-out layer output error against nearest rounding,
    only int8 weights change (same ops, scales, interface), and the file runs in LiteRT close to the float
    model — closer than the nearest-rounded file on new images."""
    fb, int8, X = tiny_files
    out, info = gptq.reround(int8, fb, X[:48])
    d = info.to_dict()
    assert d["method"] == "gptq" and (d["n_fit"], d["n_heldout"]) == (36, 12)
    assert d["ops"] >= 50 and d["ops_gptq"] >= 0.8 * d["ops"] and not d["skipped"]
    mse = d["heldout_output_mse_sum"]
    assert mse["shipped"] < 0.7 * mse["nearest"]
    assert all(x["mse_gptq" if x["kept"] == "gptq" else "mse_nearest"] <= x["mse_nearest"] for x in d["layers"])

    near, new = weight_ops(int8), weight_ops(out)
    assert [o["op"] for o in near] == [o["op"] for o in new] and len(out) == pytest.approx(len(int8), rel=0.01)
    for a, b in zip(near, new):
        np.testing.assert_array_equal(a["scales"], b["scales"])
        assert b["weights"].dtype == np.int8 and np.abs(b["weights"].astype(int)).max() <= 127
        assert np.mean(np.abs(a["weights"].astype(int) - b["weights"]) <= 1) > 0.95
    m_near, m_new, m_float = LiteRTModel(int8), LiteRTModel(out), LiteRTModel(fb)
    assert m_new.io_details() == m_near.io_details()
    Xn = X[48:]  # images the rounding never saw
    ref = m_float.raw(Xn)
    err_near, err_new = np.abs(m_near.raw(Xn) - ref).mean(), np.abs(m_new.raw(Xn) - ref).mean()
    assert err_new < err_near


def test_export_records_the_rounding(tiny_run, tmp_path):
    """``export --int8 --weight-rounding gptq`` through the whole export: bias corrected, verified in LiteRT,
    ``quantizer.weight_rounding`` in the manifest, the per-op list kept out of the file's metadata."""
    import json

    from edgeretina.converters import export_model

    r = export_model(tiny_run, ["int8"], tmp_path / "g", weight_rounding="gptq", quantizer="aeq", calib_n=32,
                     verify_n=16, borderline_band="off")["int8"]  # aeq: no TF int8 conversion (the slow step)
    wr = r.quantizer["weight_rounding"]
    assert wr["method"] == "gptq" and wr["ops_gptq"] > 0 and r.verification["within_tolerance"]
    assert r.bias_correction is not None
    man = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert man["options"]["weight_rounding"] == "gptq"
    assert man["results"][0]["quantizer"]["weight_rounding"]["ops"] == wr["ops"]
    meta = read_metadata(r.path)["export"]["quantizer"]["weight_rounding"]
    assert meta["layers"] == "manifest.json" and meta["ops_gptq"] == wr["ops_gptq"]


def test_gptq_weights_in_the_float_file_come_back_on_their_grid(tiny_files):
    """The budget's float file (gptqfloat.py): GPTQ's integers, dequantized into the float32 file, are what
    ai-edge-quantizer gives back when it quantizes that file (same scales), and an op it keeps float holds
    exactly those int8-grid values."""
    from edgeretina.converters import aeq
    from edgeretina.converters.gptqfloat import grid_match, rounded_float

    fb, int8, X = tiny_files
    g, _ = gptq.reround(int8, fb, X[:48], pin_ends=True)  # as the budgeted export does
    fg, n = rounded_float(fb, g)
    assert n == len(weight_ops(g)) and len(fg) == pytest.approx(len(fb), rel=0.01)
    assert grid_match(int8, g) < 0.99                      # GPTQ moved weights off nearest
    back, _ = aeq.quantize(fg, X[:48], ranges="minmax")
    assert grid_match(back, g) == 1.0
    ops = aeq.op_table(fg)
    conv = next(o for o in ops if o.type == "CONV_2D")
    part = aeq.Quantization(fg, X[:48]).quantize([conv.scope])  # that conv float, the rest int8
    fl = {gptq.op_key(r["output_name"]): r for r in weight_ops(part) if r["scales"] is None}
    assert len(fl) == 1
    (key, rec), = fl.items()
    ref = next(r for r in weight_ops(g) if gptq.op_key(r["output_name"]) == key)
    np.testing.assert_allclose(rec["weights"], ref["weights"] * ref["scales"].reshape(-1, 1, 1, 1), rtol=1e-6)


def test_budget_on_gptq_weights_export(tiny_run, tmp_path):
    """``export --int8 --quantizer aeq --weight-rounding gptq --max-logit-noise X``: the budget search runs on
    the GPTQ-rounded model; the shipped int8 ops carry GPTQ's integers (grid_match 1.0) and the manifest
    records both the rounding and the budget with its --max-float-macs cap."""
    from edgeretina.converters import export_model

    r = export_model(tiny_run, ["int8"], tmp_path / "b", weight_rounding="gptq", quantizer="aeq", calib_n=32,
                     verify_n=16, budget_n=32, max_logit_noise=100.0, max_float_macs=0.05,
                     borderline_band="off")["int8"]
    q = r.quantizer
    assert q["weight_rounding"]["method"] == "gptq" and q["weight_rounding"]["ops_gptq"] > 0
    assert q["weight_rounding"]["grid_match"] == 1.0
    assert q["budget"]["max_float_macs"] == 0.05 and not q["budget"]["float_layers"]
    assert r.verification["within_tolerance"]


def test_budget_unmet_under_the_mac_cap_names_the_best(tiny_run, tmp_path):
    from click.testing import CliRunner

    from edgeretina.cli import cli

    r = CliRunner().invoke(cli, ["export", str(tiny_run), "--int8", "--quantizer", "aeq", "--weight-rounding", "gptq",
                                 "--max-flips", "0", "--max-logit-noise", "1e-6", "--max-float-macs", "0.02",
                                 "--calib-n", "32", "--budget-n", "32", "--verify-n", "0", "--no-bias-correction",
                                 "--borderline-band", "off", "--out", str(tmp_path / "x"), "-q"])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: --max-flips 0 and --max-logit-noise 1e-06 cannot be met: the best reached is")
    assert "--max-float-macs 0.02" in line and "of the multiply-adds" in line
    assert not list((tmp_path / "x").glob("*.tflite"))  # nothing published
