"""int8-guard on a multi-class (DR 5-grade) model (converters/guard.py): the band on the top-1 − top-2 logit
margin and on the referral score p(grade ≥ 2); export, the cascade, predict, bench and the Android core.

The model is real and small: ImageNet MobileNetV2 at 96 px with the multinomial linear head of
``--head-fit linear`` fitted on a few dozen real APTOS photos, exported with ``--int8-guard`` (fp16 + int8 +
the guard). The Android core's cascade (``CoreTool guard``, on the JVM; skips without kotlinc / JUnit) gets the
raw outputs LiteRT gave here and must re-score the same photos and reach the same grades as ``predict``.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli
from edgeretina.converters.guard import GuardInfo, GuardRunner, in_band, margins
from edgeretina.preprocess import Pipeline, decode_image
from test_android_core import TOOL, _litert, kotlin  # noqa: F401  (kotlin: the session's compiled core)

VARIANTS = ("fp16", "int8", "int8-guard")


@pytest.fixture(scope="module")
def dr_guard(shared, tmp_path_factory):
    """(run dir, {variant: .tflite}, test inputs X (N, 96, 96, 3), their photo files) of the small DR grader."""
    from edgeretina.converters import calib, export_model, read_metadata
    from edgeretina.run import resolve_model_path
    from edgeretina.train import train_run

    d = tmp_path_factory.mktemp("dr_guard")
    run = train_run(shared / "data" / "aptos", "dr", "mobilenetv2", d / "run", weights="imagenet", input_size=96,
                    head="gap", head_fit="linear", max_train=64, max_val=32, max_test=32, n_boot=20,
                    baseline=False)
    export_model(run, ["int8-guard"], d / "export", calib_n=32, verify_n=16, borderline_band="off")
    paths = {read_metadata(f)["export"]["variant"]: f for f in (d / "export").glob("*.tflite")}
    _, cfg = resolve_model_path(run)
    recs = calib.dataset_splits(cfg, "config")["test"][:48]
    X, _ = calib.load_records(recs, calib.pipeline_of(cfg, "config"))
    return run, paths, X, [r.source for r in recs]


def _widest_gap_band(m):
    """A band between two of the middle half's margins, at their widest gap: about half the images inside
    and none within float noise of the edge."""
    dist = np.sort(m)
    lo, hi = len(dist) // 4, 3 * len(dist) // 4
    k = lo + int(np.argmax(np.diff(dist[lo:hi + 1])))
    return float((dist[k] + dist[k + 1]) / 2)


def test_export_writes_the_argmax_band(dr_guard):
    from edgeretina.converters import read_metadata

    _, paths, _, _ = dr_guard
    assert set(paths) == set(VARIANTS)
    meta = read_metadata(paths["int8-guard"])
    g = GuardInfo.from_meta(meta)
    assert meta["kind"] == "multiclass" and g.fallback == paths["fp16"].name
    assert g.rule.startswith("argmax margin log p1 - log p2") and "grade >= 2" in g.rule
    assert g.k == 3.0 and g.band == pytest.approx(3 * g.noise_rms) and g.band > 0 and g.n_images == 32
    assert 0 <= g.rescored_share <= 1 and g.check["n"] == 16 and 0 <= g.check["agreement"] <= 1


def test_cascade_takes_fp16_inside_the_band_and_int8_outside(dr_guard):
    from edgeretina.benchmarks.devices import DEVICES, Device
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.runtime.decisions import screening_threshold

    _, paths, X, _ = dr_guard
    cpu = DEVICES[Device.CPU]
    mg = open_model(paths["int8-guard"])
    runner = cpu.load(mg)
    assert isinstance(runner, GuardRunner)
    p8, p16 = cpu.load(open_model(paths["int8"])).predict(X), cpu.load(open_model(paths["fp16"])).predict(X)
    spec, thr = mg.config.spec, mg.config.threshold
    band = _widest_gap_band(margins(spec, p8, thr))
    r = GuardRunner(runner.primary, runner.fallback, spec, thr, replace(runner.info, band=band))
    pg = r.predict(X)
    inside = in_band(spec, p8, thr, band)
    assert 0 < inside.sum() < len(inside) and r.last_mask.tolist() == inside.tolist()
    t = screening_threshold(spec, thr)  # the referral score's threshold (0.5 when the run set none)
    grade, refer = pg.argmax(1), pg[:, 2:].sum(1) >= t
    assert (grade[inside] == p16.argmax(1)[inside]).all() and (grade[~inside] == p8.argmax(1)[~inside]).all()
    assert (refer[inside] == (p16[inside, 2:].sum(1) >= t)).all()
    assert (refer[~inside] == (p8[~inside, 2:].sum(1) >= t)).all()
    # outside the band int8's grade has a margin above the band: it is int8's own answer, not a near-tie
    lp = np.log(p8[~inside])
    top2 = np.sort(lp, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > band).all()
    # the metadata's band: the runner's mask is the band's, its facts count it
    pm = runner.predict(X)
    assert runner.last_mask.tolist() == in_band(spec, p8, thr, runner.info.band).tolist()
    assert runner.facts["guard"]["rescored"] == int(runner.last_mask.sum()) and pm.shape == p8.shape


def test_predict_and_bench_run_the_cascade(dr_guard, shared, tmp_path):
    run, paths, _, files = dr_guard
    res = CliRunner().invoke(cli, ["predict", str(paths["int8-guard"]), *files[:4], "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in res.output.splitlines() if ln.startswith("{")]
    assert len(rows) == 4 and all(isinstance(r["rescored"], bool) for r in rows)
    out = tmp_path / "bench"
    res = CliRunner().invoke(cli, ["bench", str(run), str(paths["int8-guard"].parent), "--data",
                                   str(shared / "data" / "aptos"), "--max-images", "24", "--n-boot", "0",
                                   "--stability", "off", "--runs", "1", "--warmup", "0", "--timing-images", "2",
                                   "--threads", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    rows = {v["name"]: v for v in rep["variants"]}
    g = rows["int8-guard"]
    assert g["grade_flip_rate"] is not None and g["referable_flip_rate"] is not None
    assert 0 <= g["device_info"]["guard"]["rescored_share"] <= 1 and g["latency_ms"]["mean"] > 0
    size = paths["int8-guard"].stat().st_size + paths["fp16"].stat().st_size
    assert g["size_bytes"] == size


def test_a_missing_fallback_is_refused_in_one_line(dr_guard, tmp_path):
    _, paths, _, files = dr_guard
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(paths["int8-guard"], alone / paths["int8-guard"].name)
    r = CliRunner().invoke(cli, ["predict", str(alone / paths["int8-guard"].name), files[0]])
    assert r.exit_code == 2 and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output


def test_app_cascade_matches_python_on_real_aptos_photos(kotlin, dr_guard, tmp_path):
    """The Android core's GuardedModel on real APTOS photos: the photos it re-scores, its grades and
    probabilities are `edgeretina predict`'s (band set at the widest gap of the margins, so both kinds occur)."""
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.inference.predict import predict_images
    from edgeretina.runtime.interpreter import quantize
    from edgeretina.runtime.metadata import embed_metadata

    _, paths, _, files = dr_guard
    files = files[:24]
    folder = tmp_path / "models"
    folder.mkdir()
    fb = shutil.copy(paths["fp16"], folder / paths["fp16"].name)
    mf = open_model(paths["int8-guard"])
    pipeline = Pipeline.from_json(mf.config.preprocessing)
    x = np.stack([pipeline.apply(decode_image(f)) for f in files]).astype(np.float32)
    outs = {}
    for v in ("int8-guard", "fp16"):
        it = _litert(paths[v])
        inp, outd = it.get_input_details()[0], it.get_output_details()[0]
        raw = []
        for xi in x:
            it.set_tensor(inp["index"], quantize(xi[None], inp))
            it.invoke()
            raw.append(it.get_tensor(outd["index"]).tobytes())
        outs[v] = tmp_path / f"{v}.bin"
        outs[v].write_bytes(b"".join(raw))
    plain = predict_images(paths["int8"], files, verify_manifest=False)
    p8 = np.array([list(p.probabilities.values()) for p in plain])
    band = _widest_gap_band(margins(mf.config.spec, p8, mf.config.threshold))
    meta = json.loads(json.dumps(mf.meta))
    meta["export"]["guard"]["band"] = band
    model = folder / paths["int8-guard"].name
    model.write_bytes(embed_metadata(paths["int8-guard"].read_bytes(), meta))
    preds = predict_images(model, files, verify_manifest=False)
    res = json.loads(kotlin(TOOL, "guard", model, fb, outs["int8-guard"], outs["fp16"]).stdout)
    assert res["band"] == pytest.approx(band)
    assert res["rescored"] == [p.rescored for p in preds]
    assert 0 < sum(res["rescored"]) < len(files)
    labels = list(mf.config.labels)
    for i, p in enumerate(preds):
        np.testing.assert_allclose(res["probabilities"][i], list(p.probabilities.values()), atol=1e-6)
        assert labels[res["top"][i]] == p.label and res["decisions"][i] == p.label, (files[i], p)
    # a fallback that is not the exported file is refused, one line
    bad = folder / "bad.tflite"
    shutil.copy(paths["int8"], bad)
    r = kotlin(TOOL, "guard", model, bad, outs["int8-guard"], outs["fp16"], check=False)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "sha256 differs" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_kotlin_guard_unit_tests(kotlin):
    p = kotlin("org.junit.runner.JUnitCore", "org.edgeretina.core.GuardTest")
    assert "OK (" in p.stdout, p.stdout


def test_screening_flips_of_dr_grading_reads_referable_both_ways():
    """--guard-max-flips on DR grading counts the referable decision as the bench reads it: the referral
    p(grade >= 2) >= threshold and the predicted (expected, rounded) grade >= 2, whichever flips more."""
    import numpy as np

    from edgeretina.converters.guard import screening_flips
    from edgeretina.tasks import task_spec

    spec = task_spec("dr")
    ref = np.array([[0.50, 0.10, 0.40, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0, 0.0]])
    # image 0: p(grade >= 2) stays 0.40 (no referral flip at 0.5) but the expected grade 0.9 -> 1.5 (grade 1 -> 2)
    new = np.array([[0.30, 0.10, 0.20, 0.40, 0.0], [0.9, 0.1, 0.0, 0.0, 0.0]])
    assert screening_flips(spec, new, ref, 0.7) == 0.5
    assert screening_flips(spec, ref, ref, 0.7) == 0.0
    # referral flips only (expected grades 1.2 -> 1.4, both round to 1): p(grade >= 2) 0.1 -> 0.6 at threshold 0.5
    a = np.array([[0.0, 0.9, 0.1, 0.0, 0.0]])
    b = np.array([[0.4, 0.0, 0.6, 0.0, 0.0]])
    assert screening_flips(spec, b, a, 0.5) == 1.0
