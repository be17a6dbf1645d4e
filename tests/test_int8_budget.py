"""Flip-budgeted selective precision (``export --int8 --quantizer aeq --max-flips/--max-logit-noise``,
converters/budget.py) and percentile / MSE activation ranges (``--ranges``, converters/ranges.py), on the
self-contained ``tiny_run`` model through LiteRT."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeretina.converters import read_metadata
from edgeretina.converters.export import ExportOptions
from edgeretina.errors import ExportError
from edgeretina.runtime import LiteRTModel


@pytest.fixture(scope="module")
def float_tflite(tiny_float_logits):
    return tiny_float_logits  # the tiny model's float32 logits .tflite (tests/conftest.py, converted once)


@pytest.fixture(scope="module")
def calib_x(float_tflite):
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.preprocess import Pipeline
    from helpers.tiny import DATASET, INPUT_SIZE

    parts = open_dataset(DATASET, "glaucoma").split("70/10/20", seed=0)
    X, _ = load_arrays(parts["train"][:40], Pipeline.default(INPUT_SIZE, "tf", onh=True))
    return np.asarray(X, np.float32)


def _export(run, out, **kw):
    from edgeretina.converters import export_model

    # the borderline band (a measurement on the source model, test_borderline_export.py) is not what these test
    return export_model(run, ["int8"], out, calib_n=48, verify_n=16, quantizer="aeq", budget_n=96, io="float",
                        borderline_band="off", **kw)


@pytest.fixture(scope="module")
def budgeted(tiny_run, tmp_path_factory):
    """An all-int8 export whose budget holds at once (the starting point), and one whose logit-noise budget
    is 60 % of that starting noise: some layers must stay float (no bias correction there: each candidate's
    correction rewrites the flatbuffer, seconds per candidate; the first export covers it)."""
    root = tmp_path_factory.mktemp("budget")
    easy = _export(tiny_run, root / "easy", max_flips=0.5, max_logit_noise=100.0)
    start = easy["int8"].quantizer["budget"]["all_int8"]["logit_noise"]
    tight = _export(tiny_run, root / "tight", max_logit_noise=0.6 * start, bias_correction=False)
    return easy, tight, root / "tight", start


def test_budget_met_all_int8_records_the_measurement(budgeted):
    easy, _, _, start = budgeted
    b = easy["int8"].quantizer["budget"]
    assert list(b["float_layers"]) == [] and b["float_macs_share"] == 0.0 and start > 0
    assert b["holdout"]["n"] == 96 and "outside the calibration sample" in b["holdout"]["source"]
    lo, hi = b["flips_ci95"]
    assert 0 <= lo <= b["flips"] <= hi <= 1 and b["flips"] <= 0.5
    assert easy["int8"].verification["float_ops"] == []  # nothing float: a plain int8 file


def test_tight_budget_keeps_ranked_layers_float_and_holds(budgeted):
    _, tight, out, start = budgeted
    r = tight["int8"]
    b = r.quantizer["budget"]
    assert b["max_logit_noise"] == pytest.approx(0.6 * start)
    assert 1 <= len(b["float_layers"]) <= 16 and b["logit_noise"] <= 0.6 * start
    assert 0 < b["float_macs_share"] < 1 and b["tried"][0]["k"] == 0
    assert [t["k"] for t in b["tried"]] == sorted({t["k"] for t in b["tried"]})
    assert b["ranking"][0]["noise_share"] >= b["ranking"][-1]["noise_share"]
    # the shipped file: verified in LiteRT with the chosen layers' float ops
    path = next(out.glob("*_int8.tflite"))
    m = LiteRTModel(path)
    assert m.io_details()["input"]["dtype"] == "float32" and r.verification["within_tolerance"]
    assert r.verification["float_ops"]  # float by design, accepted without --allow-float-fallback
    assert read_metadata(path)["export"]["quantizer"]["budget"]["float_layers"] == list(b["float_layers"])
    man = json.loads((out / "manifest.json").read_text())
    assert man["options"]["max_logit_noise"] == pytest.approx(0.6 * start) and man["options"]["budget_n"] == 96
    graph = man["results"][0]["quantizer"]["budget"]["graph_bytes"]
    assert 0 < r.size_bytes - graph < 50_000  # the same graph, plus its metadata


def test_unreachable_budget_is_one_line_naming_the_best(tiny_run, tmp_path):
    from click.testing import CliRunner

    from edgeretina.cli import cli

    r = CliRunner().invoke(cli, ["export", str(tiny_run), "--int8", "--quantizer", "aeq", "--max-logit-noise",
                                 "1e-6", "--calib-n", "32", "--budget-n", "32", "--verify-n", "0", "--no-bias-correction",
                                 "--borderline-band", "off", "--out", str(tmp_path / "x"), "-q"])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: --max-logit-noise 1e-06 cannot be met: the best reached is")
    assert "layers float" in line and "hold-out images" in line
    assert not (tmp_path / "x" / "manifest.json").exists()


@pytest.mark.parametrize("kw, msg", [
    ({"variants": ["int8"], "max_flips": 0.01}, "need --quantizer aeq"),
    ({"variants": ["fp16"], "quantizer": "converter", "max_flips": 0.01}, "apply to --int8"),
    ({"variants": ["int8"], "quantizer": "aeq", "max_flips": 1.5}, "--max-flips must be a share"),
    ({"variants": ["int8"], "quantizer": "aeq", "max_logit_noise": 0.0}, "--max-logit-noise must be"),
    ({"variants": ["int8"], "quantizer": "aeq", "max_flips": 0.01, "budget_n": 3}, "--budget-n"),
    ({"variants": ["int8"], "ranges": "mse"}, "--ranges applies to --quantizer aeq only"),
])
def test_budget_and_range_options_refused(kw, msg):
    with pytest.raises(ExportError, match=msg):
        ExportOptions(**kw)


# ------------------------------------------------------------------------------------------ ranges


def test_range_rules_on_histograms():
    from edgeretina.converters.ranges import BINS, mse_range, percentile_range

    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0, 1, 2_000_000), [40.0, -30.0]])  # two outliers set min/max
    lo, hi = float(v.min()), float(v.max())
    counts = np.bincount(np.clip(((v - lo) * BINS / (hi - lo)).astype(int), 0, BINS - 1), minlength=BINS)
    a, b = percentile_range(counts, lo, hi)
    assert -4.5 < a < -3.0 and 3.0 < b < 4.5  # the 0.01 / 99.99 % points of N(0, 1): ±3.72
    a, b = mse_range(counts, lo, hi)
    assert a < 0 < b and (b - a) < 0.5 * (hi - lo)  # the outliers are clipped
    relu = np.maximum(rng.normal(0, 1, 100_000), 0)
    lo, hi = 0.0, float(relu.max())
    counts = np.bincount(np.clip((relu * BINS / hi).astype(int), 0, BINS - 1), minlength=BINS)
    assert percentile_range(counts, lo, hi)[0] == 0.0 and mse_range(counts, lo, hi)[0] == 0.0


@pytest.mark.parametrize("rule", ["percentile", "mse"])
def test_percentile_and_mse_ranges_edit_the_calibration(float_tflite, calib_x, rule):
    from edgeretina.converters import aeq
    from edgeretina.converters.variants import IO

    q_mm = aeq.Quantization(float_tflite, calib_x, IO.INT8, "minmax", threads=1)
    q = aeq.Quantization(float_tflite, calib_x, IO.INT8, rule, threads=1)
    info = q.info()
    assert info.ranges == rule and info.range_edit["tensors_edited"] > 10
    assert 0 < info.range_edit["median_width_kept"] <= 1
    widths = [(float(np.ravel(q.qsvs[k]["max"])[0] - np.ravel(q.qsvs[k]["min"])[0]),
               float(np.ravel(q_mm.qsvs[k]["max"])[0] - np.ravel(q_mm.qsvs[k]["min"])[0])) for k in q.qsvs]
    assert all(w <= w_mm + 1e-6 for w, w_mm in widths) and any(w < 0.9 * w_mm for w, w_mm in widths)
    # the model's input range is the preprocessing's: untouched
    name = LiteRTModel(float_tflite).input_detail["name"]
    assert np.ravel(q.qsvs[name]["min"])[0] == np.ravel(q_mm.qsvs[name]["min"])[0]
    m = LiteRTModel(q.quantize(), threads=1)
    assert m.float_ops() == [] and np.isfinite(m.raw(calib_x[:4])).all()


def test_op_table_and_float_scopes(float_tflite, calib_x):
    """Every candidate op has a scope the recipe matches: one op float adds a dequantize/quantize pair."""
    from edgeretina.converters import aeq
    from edgeretina.converters.variants import IO

    ops = aeq.op_table(float_tflite)
    conv = [o for o in ops if o.type == "CONV_2D"]
    assert conv and all(o.macs > 0 for o in conv) and ops[-1].type == "FULLY_CONNECTED"
    assert len(aeq.candidates(ops)) < len(ops) or all(o.type not in aeq.PASS_THROUGH for o in ops)
    q = aeq.Quantization(float_tflite, calib_x, IO.INT8, threads=1)
    plain = LiteRTModel(q.quantize(), threads=1).float_ops()
    one = LiteRTModel(q.quantize([conv[3].scope]), threads=1).float_ops()
    assert plain == [] and "CONV_2D" in one


def test_study_rows_and_table():
    """benchmarks/int8_study.py: a bench row + its export manifest → the published row (Wilson CI of the
    test flips, budget columns)."""
    from edgeretina.benchmarks.int8_study import _row, markdown

    v = {"name": "aeq-flips0.01", "format": "tflite", "size_bytes": 2_800_000, "auroc": 0.93, "delta_auroc": -0.001,
         "delong_p": 0.5, "flip_rate": 4 / 486, "logit_shift": 0.01, "logit_noise_sd": 0.12,
         "latency_ms": {"p50": 12.0, "mean": 12.5}}
    man = {"results": [{"variant": "int8", "quantizer": {"backend": "aeq", "ranges": "minmax", "budget": {
        "float_layers": [{"layer": "Conv1"}, {"layer": "head_logits"}], "float_macs_share": 0.036, "flips": 0.004,
        "logit_noise": 0.07, "holdout": {"n": 500}}}}]}
    r = _row(v, man, 486)
    assert r["flips"] == 4 and r["flip_ci95"][0] < 4 / 486 < r["flip_ci95"][1]
    assert r["float_layers"] == ["Conv1", "head_logits"] and r["backend"] == "aeq"
    md = markdown([r], {"command": "python -m edgeretina.benchmarks.int8_study", "minutes": 30,
                        "machine": "2-core AMD EPYC VM", "threads": 1, "run": "runs/recipe/final", "n": 486})
    assert "4/486 = 0.8 % (" in md and "2 (3.6 %): Conv1, head_logits" in md and "0.4 % / 0.070" in md


def test_dr_grading_budget_counts_referable_flips_not_grades():
    """DR 5-grade: the budget counts the referable decision (the larger of its two readings' flip rates), not
    the grade, and measures the referral logit's noise."""
    from edgeretina.converters.budget import budget_flips, decision_rule, screening_logit
    from edgeretina.tasks import Task, task_spec

    spec = task_spec(Task.DR)
    ref = np.array([[.7, .2, .05, .03, .02],     # grade 0, p(>=2) 0.10
                    [.1, .3, .4, .1, .1],        # grade 2 (E 1.8), p(>=2) 0.60
                    [.0, .0, .9, .1, .0],        # grade 2
                    [.0, .0, .0, .2, .8]])       # grade 4
    var = np.array([[.2, .7, .05, .03, .02],     # grade 1: a grade flip, not a referable one
                    [.1, .3, .4, .1, .1],
                    [.0, .0, .1, .9, .0],        # grade 3: a grade flip, still referable
                    [.0, .0, .0, .2, .8]])
    assert budget_flips(spec, var, ref, None) == 0.0
    both = var.copy()
    both[1] = [.25, .3, .25, .1, .1]            # p(>=2) 0.45 < 0.5 and E 1.5 -> grade 2: only the referral flips
    assert budget_flips(spec, both, ref, None) == 0.25
    assert screening_logit(spec, ref).shape == (4,)
    assert "DR referable" in decision_rule(spec)
