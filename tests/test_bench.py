"""`edgeretina bench` end to end on real exported variants of a real tiny model (conftest ``tiny_run``: a
MobileNetV2 1.0 trained from scratch at 48 px on the embedded synthetic-fundus set, no ../shared needed) and
its own synthetic test images; one ``real_data`` test runs the real-data ``small_run`` model on real ODIR
photos. The decision-stability floor is off here (its tests: test_bench_shift.py)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli

FIELDS = ["name", "file", "device", "threads", "params", "nonzero_params", "size_bytes", "gzip_bytes", "auroc",
          "auroc_ci95", "delta_auroc", "auroc_retention", "delong_p", "auroc_density", "sensitivity",
          "specificity", "flip_rate", "latency_ms", "images_per_s"]


MAX_IMAGES = 120  # of the tiny run's 160-image synthetic test split


@pytest.fixture(scope="session")
def bench_models(tiny_run):
    """The suite's tiny_run model and its float32 / fp16 / int8 .tflite exports (session-wide)."""
    from helpers.testmodels import glaucoma_variants

    return glaucoma_variants(tiny_run)


def _invoke(args, env=None):
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def _assert_png(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 200
    assert img.std() > 5  # not a blank canvas


def test_bench_real_variants_writes_every_field(bench_models, tmp_path):
    out = tmp_path / "report"
    res = _invoke(["bench", "--models", str(bench_models["run"]), str(bench_models["export"]),
                   "--data", str(bench_models["data"]), "--task", "glaucoma", "--device", "cpu", "--device", "gpu",
                   "--runs", "2", "--warmup", "1", "--timing-images", "5", "--max-images", str(MAX_IMAGES),
                   "--n-boot", "200", "--stability", "off", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "glaucoma"
    assert report["dataset"]["n_images"] == MAX_IMAGES
    assert sum(report["dataset"]["classes"].values()) == MAX_IMAGES and report["dataset"]["classes"]["glaucoma"] > 10
    assert report["machine"]["cpu_count"] >= 1
    rows = {(v["name"], v["device"]): v for v in report["variants"]}
    assert set(rows) == {("keras", "keras-cpu"), ("float32", "cpu"), ("fp16", "cpu"), ("int8", "cpu")}
    ref = rows[("keras", "keras-cpu")]
    assert ref["is_reference"] and report["reference"] == str(bench_models["model"])
    for v in report["variants"]:
        for f in FIELDS:
            assert v.get(f) is not None, (v["name"], f)
        assert Path(v["file"]).stat().st_size == v["size_bytes"]
        assert 0 < v["gzip_bytes"] < v["size_bytes"]
        assert v["depth"] == 53  # MobileNetV2's 52 convolutions + the dense head, Keras and .tflite alike
        assert 2.0e6 < v["params"] < 2.4e6 and 0 < v["nonzero_params"] <= v["params"]
        assert 0.65 < v["auroc"] <= 1.0  # the model really learned
        lo, hi = v["auroc_ci95"]
        assert lo < v["auroc"] < hi
        assert v["auroc_retention"] == pytest.approx(v["auroc"] / ref["auroc"])
        assert v["delta_auroc"] == pytest.approx(v["auroc"] - ref["auroc"])
        assert 0 <= v["delong_p"] <= 1 and 0 <= v["flip_rate"] <= 1
        assert v["delta_auroc_ci95"][0] <= v["delta_auroc"] <= v["delta_auroc_ci95"][1]
        assert v["auroc_density"] == pytest.approx(v["auroc"] / (v["params"] / 1e6))
        assert 0 <= v["sensitivity"] <= 1 and 0 <= v["specificity"] <= 1
        lat = v["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] and lat["mean"] > 0 and lat["n"] == 10
        assert v["images_per_s"] == pytest.approx(1000 / lat["mean"])
        assert v["threshold"] == pytest.approx(bench_models["threshold"])
    assert ref["flip_rate"] == 0 and ref["delta_auroc"] == 0 and ref["auroc_retention"] == 1
    f32, f16, i8 = rows[("float32", "cpu")], rows[("fp16", "cpu")], rows[("int8", "cpu")]
    assert abs(f32["delta_auroc"]) < 1e-3 and f32["flip_rate"] <= 0.01
    assert abs(f16["delta_auroc"]) < 0.01
    assert abs(i8["delta_auroc"]) < 0.05
    assert i8["size_bytes"] < f16["size_bytes"] < f32["size_bytes"]
    assert f32["params"] < ref["params"]  # BatchNorm folded by the converter
    assert f32["threads"] == rows[("int8", "cpu")]["threads"] >= 1
    # no GPU here: a clear skip for gpu, the cpu rows still ran
    from edgeretina.benchmarks.runners.keras import gpu_devices

    if not gpu_devices():
        assert any(s["device"] == "gpu" and "no GPU found" in s["reason"] for s in report["skipped"])
        assert "no GPU found" in res.stderr
    # files
    for name in ("report.md", "report.csv"):
        assert (out / name).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "| int8 | cpu×" in md and "edgeretina bench --models" in md
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("name,file,device")
    _assert_png(out / "roc.png")
    _assert_png(out / "ballchart.png")
    # the terminal summary
    assert "keras (ref)" in res.stdout and "int8" in res.stdout and "AUROC" in res.stdout


def test_reference_option_and_library_call(bench_models):
    from edgeretina.benchmarks.harness import run_bench
    from edgeretina.benchmarks.robustness import BenchOptions

    f32 = bench_models["tflite"]["float32"]
    rep = run_bench([bench_models["export"]], str(bench_models["data"]), reference=f32, runs=1, warmup=0,
                    timing_images=2, max_images=120, n_boot=0, options=BenchOptions.make(stability="off"))
    assert [v.name for v in rep.variants] == ["float32", "fp16", "int8"]
    assert rep.variants[0].is_reference and rep.reference == str(f32)
    assert rep.variants[0].flip_rate == 0.0 and rep.variants[0].auroc_ci95 is None


def test_android_without_adb_fails_cleanly(bench_models, tmp_path):
    res = _invoke(["bench", "--models", str(bench_models["tflite"]["int8"]), "--data", str(bench_models["data"]),
                   "--device", "android", "--out", str(tmp_path / "r")],
                  env={"EDGERETINA_ADB": str(tmp_path / "no-such-adb"), "PATH": str(tmp_path)})
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: android: adb not found"), res.output
    assert not (tmp_path / "r" / "report.json").exists()


def test_unknown_device_and_wrong_task(bench_models, tmp_path):
    res = _invoke(["bench", "--models", str(bench_models["tflite"]["int8"]), "--data", str(bench_models["data"]),
                   "--device", "gpux", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "unknown device 'gpux' (did you mean 'gpu'?)" in res.output
    res = _invoke(["bench", "--models", str(bench_models["tflite"]["int8"]), "--data", str(bench_models["data"]),
                   "--task", "dr", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "trained for task 'glaucoma', not 'dr'" in res.output
    res = _invoke(["bench", "--models", str(bench_models["tflite"]["int8"]), "--data", str(bench_models["data"]),
                   "--device", "keras-cpu", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "runs .keras models only" in res.output


def _strip_metadata(src: Path, dst: Path) -> Path:
    from ai_edge_litert.tools import flatbuffer_utils as fu

    m = fu.read_model(str(src))
    m.metadata = [md for md in (m.metadata or []) if (md.name.decode() if isinstance(md.name, bytes)
                                                      else md.name) != "edgeretina"]
    fu.write_model(m, str(dst))
    return dst


def test_model_without_metadata_is_refused(bench_models, tmp_path):
    bare = _strip_metadata(bench_models["tflite"]["float32"], tmp_path / "bare.tflite")
    res = _invoke(["bench", "--models", str(bare), "--data", str(bench_models["data"]), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert res.output.startswith(f"error: {bare}: no 'edgeretina' metadata") and "Traceback" not in res.output
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.keras").write_bytes(bench_models["model"].read_bytes())
    res = _invoke(["bench", "--models", str(lonely), "--data", str(bench_models["data"]), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no config.json" in res.output


def test_litert_runner_int8_interface_and_logits_metadata(bench_models, tmp_path):
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.benchmarks.runners.litert import LiteRTRunner
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.preprocess import Pipeline

    f32 = open_model(bench_models["tflite"]["float32"])
    i8 = open_model(bench_models["tflite"]["int8"])
    ds = open_dataset(bench_models["data"], "glaucoma")
    x, _ = load_arrays(ds.split()["val"][:24], Pipeline.from_json(f32.config.preprocessing))
    r8 = LiteRTRunner.from_model(i8)
    assert r8.input_dtype == np.int8  # int8 interface: the runner quantizes the input itself
    p32, p8 = LiteRTRunner.from_model(f32).predict(x), r8.predict(x)
    assert p8.shape == p32.shape == (24, 2)
    np.testing.assert_allclose(p8.sum(1), 1.0, atol=0.02)
    # int8 noise on this small 96-px model varies between (non-bit-reproducible) trainings: mean |Δ| was
    # 0.03–0.07. A broken (de)quantisation gives ~0.5 and scrambles the ranking, which is what this catches.
    assert np.abs(p8 - p32).mean() < 0.15
    from scipy.stats import spearmanr

    assert spearmanr(p8[:, 1], p32[:, 1]).statistic > 0.7
    # A model whose metadata says "logits" gets the activation applied by the runner.
    from edgeretina._keras import keras, tf
    from edgeretina.converters.metadata import embed_metadata

    inp = keras.Input((4,))
    logits_model = keras.Model(inp, keras.layers.Dense(2, name="logits")(inp))
    data = tf.lite.TFLiteConverter.from_keras_model(logits_model).convert()
    meta = dict(f32.meta, output={"kind": "logits", "activation": "softmax"})
    path = tmp_path / "logits.tflite"
    path.write_bytes(embed_metadata(bytes(data), meta))
    z = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    runner = LiteRTRunner.from_model(open_model(path))
    want = logits_model.predict(z, verbose=0)
    want = np.exp(want) / np.exp(want).sum(1, keepdims=True)
    np.testing.assert_allclose(runner.predict(z), want, atol=1e-5)


def test_nonzero_params_count_zeroed_weights(bench_models, tmp_path):
    """Pruning shows up as fewer non-zero parameters: zero half of the largest weight tensor by hand."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    from edgeretina.benchmarks.modelfile import tflite_param_counts

    src = bench_models["tflite"]["float32"]
    depth, params, nonzero = tflite_param_counts(src.read_bytes())
    m = fu.read_model(str(src))
    sg = m.subgraphs[0]
    big = max((t for t in sg.tensors if m.buffers[t.buffer].data is not None and t.type == 0),
              key=lambda t: len(m.buffers[t.buffer].data))
    w = np.frombuffer(bytes(m.buffers[big.buffer].data), dtype=np.float32).copy()
    half = w.size // 2
    expected = nonzero - int(np.count_nonzero(w[:half]))
    w[:half] = 0
    m.buffers[big.buffer].data = np.frombuffer(w.tobytes(), dtype=np.uint8)
    fu.write_model(m, str(tmp_path / "zeroed.tflite"))
    assert tflite_param_counts((tmp_path / "zeroed.tflite").read_bytes()) == (depth, params, expected)
    # int8: weights are compared with their zero point, so the count stays close to the float file's
    _, p8, nz8 = tflite_param_counts(bench_models["tflite"]["int8"].read_bytes())
    assert p8 == params and 0.97 * nonzero <= nz8 <= params


def test_bench_small_run_on_real_odir_photos(small_run):
    """Real data on top of the synthetic tests: the ``small_run`` model (ImageNet MobileNetV2, head fitted on
    ODIR eyes) and its float32 / fp16 / int8 exports keep their accuracy on 300 real ODIR test photos."""
    from helpers.testmodels import glaucoma_variants

    from edgeretina.benchmarks.harness import run_bench
    from edgeretina.benchmarks.robustness import BenchOptions

    m = glaucoma_variants(small_run)
    rep = run_bench([m["run"], m["export"]], m["data"], runs=1, warmup=0, timing_images=2, max_images=300,
                    n_boot=200, options=BenchOptions.make(stability="off"))
    assert rep.dataset["n_images"] == 300 and rep.dataset["classes"]["glaucoma"] > 10
    rows = {v.name: v for v in rep.variants}
    assert list(rows) == ["keras", "float32", "fp16", "int8"]
    for v in rep.variants:
        assert 0.65 < v.auroc <= 1.0, (v.name, v.auroc)  # the model really learned, on real photos
        assert v.auroc_ci95[0] < v.auroc < v.auroc_ci95[1]
        assert v.threshold == pytest.approx(m["threshold"])
    assert abs(rows["float32"].delta_auroc) < 1e-3 and rows["float32"].flip_rate <= 0.01
    assert abs(rows["fp16"].delta_auroc) < 0.01
    assert abs(rows["int8"].delta_auroc) < 0.05


def test_cpu_builtin_device_scores_on_litert_builtin_kernels(bench_models, tmp_path):
    """``--device cpu:builtin``: the same .tflite files on LiteRT's built-in kernels (no XNNPACK) get their own
    rows, scores and device facts beside the XNNPACK rows; a wrong cpu option is a one-line error."""
    t = bench_models["tflite"]
    out = tmp_path / "rep"
    res = _invoke(["bench", "--models", str(t["float32"]), str(t["int8"]), "--reference", str(t["float32"]),
                   "--data", str(bench_models["data"]), "--task", "glaucoma", "--device", "cpu",
                   "--device", "cpu:builtin", "--runs", "1", "--warmup", "0", "--timing-images", "2",
                   "--max-images", "40", "--n-boot", "0", "--stability", "off", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    rows = {(v["name"], v["device"]): v for v in report["variants"]}
    assert set(rows) == {("float32", "cpu"), ("int8", "cpu"), ("float32", "cpu:builtin"), ("int8", "cpu:builtin")}
    assert rows[("int8", "cpu:builtin")]["device_info"]["delegate"] == "none (built-in kernels)"
    assert rows[("int8", "cpu")]["device_info"]["delegate"] == "xnnpack"
    # float32 on either kernel library: the same model to float rounding
    assert rows[("float32", "cpu:builtin")]["auroc"] == pytest.approx(rows[("float32", "cpu")]["auroc"], abs=1e-6)
    md = (out / "report.md").read_text()
    assert "cpu:builtin" in md and "Kernel-library parity" in md
    for name in ("float32", "int8"):  # each builtin row compared with the same file on XNNPACK, same images
        p = rows[(name, "cpu:builtin")]["device_info"]["vs_xnnpack"]
        assert p["n"] == 40 and 0 <= p["flips"] <= 40 and p["output"] in ("logits", "probabilities")
    assert rows[("float32", "cpu:builtin")]["device_info"]["vs_xnnpack"]["max_abs_diff"] < 1e-4
    assert "vs_xnnpack" not in rows[("int8", "cpu")]["device_info"]
    bad = CliRunner().invoke(cli, ["bench", "--models", str(t["int8"]), "--data", str(bench_models["data"]),
                                   "--task", "glaucoma", "--device", "cpu:fast", "--n-boot", "0",
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "cpu:builtin" in bad.output and "Traceback" not in bad.output
