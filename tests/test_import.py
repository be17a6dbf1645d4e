"""`edgeretina import` (issue 19): models made outside edgeretina's builders — a plain tf_keras VGG-style
CNN (tests/helpers/foreign.py) trained for a few seconds on the embedded synthetic-fundus set, saved as a Keras 2 .h5, a SavedModel, a
float .tflite and (when Keras 3 is installed) a Keras 3 .keras with the same weights — go import → export
--int8 → bench → predict with no hand-written file; the float32 .tflite reproduces the original framework's
output; bad models and options are refused in one line with nothing written. No ../shared needed."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli
from edgeretina.runtime import LiteRTModel

SIZE = 64
LABELLED = "synthetic:n=120,size=96,seed=12"   # the "site's" labelled set: threshold, calibration, bench
FORMATS = ("h5", "savedmodel", "tflite", "keras3")


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _one_error(res, msg: str) -> None:
    """Exit 2 and one line ``error: …`` naming the problem (progress lines before it aside), no traceback."""
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert lines[-1].startswith("error: ") and msg in lines[-1], res.output
    assert sum(line.startswith("error") for line in lines) == 1 and "Traceback" not in res.output


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """The foreign model in every format (tests/helpers/foreign.py), each framework's own output on test images
    of the labelled set, and two of its photos for predict."""
    from helpers.foreign import arrays, keras3, make_foreign_models

    from edgeretina.data import open_dataset
    from edgeretina.metrics import auroc

    d = tmp_path_factory.mktemp("foreign")
    paths = make_foreign_models(d)
    m = paths.pop("model")
    Xt, yt = arrays(LABELLED, 40)
    ref = {"h5": m.predict(Xt, verbose=0), "tflite": LiteRTModel(paths["tflite"]).raw(Xt)}
    assert auroc(yt, ref["h5"][:, 1]) > 0.7  # it learned something
    from edgeretina._keras import tf

    serve = tf.saved_model.load(str(paths["savedmodel"])).signatures["serving_default"]
    ref["savedmodel"] = next(iter(serve(image=tf.constant(Xt)).values())).numpy()
    if "keras3" in paths:
        k3 = keras3()
        ref["keras3"] = np.asarray(k3.saving.load_model(paths["keras3"]).predict(Xt, verbose=0))
    photos = d / "photos"
    photos.mkdir()
    for r in open_dataset(LABELLED, "glaucoma").records[:2]:
        assert cv2.imwrite(str(photos / f"{r.key}.png"), r.image[:, :, ::-1])
    return {"paths": paths, "X": Xt, "y": yt, "ref": ref, "photos": sorted(photos.glob("*.png"))}


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_export_int8_bench_predict(foreign, fmt, tmp_path):
    if fmt not in foreign["paths"]:
        pytest.skip("Keras 3 is not installed")
    run = tmp_path / f"run_{fmt}"
    thr = ["--threshold", "0.5"] if fmt in ("h5", "keras3") else ["--data", LABELLED, "--youden"]
    pre = "tf"
    if fmt == "savedmodel":  # the project's pipeline steps as a pipeline.json (here: the tf preset's steps)
        from edgeretina.preprocess import Pipeline

        pre = Pipeline.default(SIZE, "tf").save(tmp_path / "pipeline.json")
    res = _invoke(["import", foreign["paths"][fmt], "--task", "glaucoma", "--preprocess", "tf", *thr,
                   "--out", run])
    assert res.exit_code == 0, res.output
    assert "max |Δ score|" in res.output
    cfg = json.loads((run / "config.json").read_text())
    imp = cfg["extra"]["import"]
    assert imp["source_format"] == {"h5": "keras2", "savedmodel": "savedmodel", "tflite": "tflite",
                                    "keras3": "keras3"}[fmt]
    assert len(imp["source_sha256"]) == 64 and cfg["output"] == {"kind": "probabilities", "activation": "softmax"}
    assert cfg["labels"] == ["normal", "glaucoma"] and cfg["positive_index"] == 1
    if fmt in ("savedmodel", "tflite"):
        assert 0.0 < cfg["threshold"] < 1.0 and cfg["dataset"]["path"] == LABELLED
    # export float32 + int8 (calibrated on the labelled set or, without one, on --calib images)
    exp = tmp_path / f"export_{fmt}"
    calib = [] if cfg["dataset"] else ["--calib", _calib_npy(foreign, tmp_path)]
    res = _invoke(["export", run, "--float32", "--int8", "--calib-n", "32", "--verify-n", "16", "-q", *calib,
                   "--out", exp])
    assert res.exit_code == 0, res.output
    f32, i8 = next(exp.glob("*_float32.tflite")), next(exp.glob("*_int8.tflite"))
    # the imported model's LiteRT float32 output equals the original framework's
    got = LiteRTModel(f32).raw(foreign["X"])
    assert np.abs(got - foreign["ref"][fmt]).max() <= 1e-5
    m8 = LiteRTModel(i8)
    assert m8.io_details()["input"]["dtype"] == "int8" and m8.float_ops() == []
    # bench and predict use the exported files unchanged
    rep = tmp_path / f"bench_{fmt}"
    res = _invoke(["bench", "--models", exp, "--data", LABELLED, "--task", "glaucoma", "--split", "all",
                   "--max-images", "40", "--runs", "1", "--warmup", "0", "--timing-images", "2", "--n-boot", "0",
                   "--stability", "off", "--out", rep])
    assert res.exit_code == 0, res.output
    report = json.loads((rep / "report.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    assert rows["float32"]["auroc"] > 0.7 and abs(rows["int8"]["delta_auroc"]) < 0.1
    res = _invoke(["predict", i8, *foreign["photos"], "--json"])
    assert res.exit_code == 0, res.output
    preds = [json.loads(line) for line in res.output.strip().splitlines()]
    assert len(preds) == 2 and all(0.0 <= p["probability"] <= 1.0 for p in preds)


def _calib_npy(foreign, tmp_path) -> Path:
    p = tmp_path / "calib.npy"
    np.save(p, foreign["X"][:32])
    return p


def test_graph_only_variants_of_a_tflite_and_refusals(foreign, tmp_path):
    """A float .tflite: fp16 and dynamic through ai-edge-quantizer; pruned/QAT and mixed refused in one line
    before anything is written."""
    run = tmp_path / "run"
    res = _invoke(["import", foreign["paths"]["tflite"], "--task", "glaucoma", "--preprocess", "tf",
                   "--threshold", "0.5", "--out", run])
    assert res.exit_code == 0, res.output
    exp = tmp_path / "exp"
    res = _invoke(["export", run, "--fp16", "--dynamic", "-q", "--verify-n", "0", "--out", exp])
    assert res.exit_code == 0, res.output
    f16, dyn = LiteRTModel(next(exp.glob("*_fp16.tflite"))), LiteRTModel(next(exp.glob("*_dynamic.tflite")))
    assert np.abs(f16.raw(foreign["X"]) - foreign["ref"]["tflite"]).max() < 0.01
    assert np.abs(dyn.raw(foreign["X"]) - foreign["ref"]["tflite"]).max() < 0.1
    for flag, msg in (("--qat", "Keras 2 (tf_keras) model"), ("--mixed", "selective quantization")):
        out = tmp_path / f"x{flag}"
        _one_error(_invoke(["export", run, flag, "--out", out]), msg.split("|")[0])
        assert not out.exists()


def test_keras3_model_asked_for_qat_is_refused(foreign, tmp_path):
    if "keras3" not in foreign["paths"]:
        pytest.skip("Keras 3 is not installed")
    run = tmp_path / "run"
    assert _invoke(["import", foreign["paths"]["keras3"], "--task", "glaucoma", "--preprocess", "tf",
                    "--threshold", "0.5", "--out", run]).exit_code == 0
    out = tmp_path / "exp"
    res = _invoke(["export", run, "--qat", "--out", out])
    _one_error(res, "from a Keras 3 model")
    assert "need" in res.output or "Keras 2" in res.output
    assert not out.exists() and not list(tmp_path.glob(".exp*"))


def test_logit_output_sigmoid_column_and_reordered_labels(tmp_path):
    """A Keras 2 model whose head is one linear column (a sigmoid logit of p(normal): the columns named
    glaucoma,normal) is mapped to the project's convention: 2 softmax columns, score = p(glaucoma)."""
    from helpers.foreign import vggish

    from edgeretina._keras import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((SIZE, SIZE, 3))
    m = keras.Model(inp, vggish(keras.layers, inp, dense_act=None, width=1))
    m.save(tmp_path / "logit.h5")
    run = tmp_path / "run"
    res = _invoke(["import", tmp_path / "logit.h5", "--task", "glaucoma", "--labels", "glaucoma,normal",
                   "--preprocess", "tf", "--output", "logits", "--threshold", "0.3", "--out", run])
    assert res.exit_code == 0, res.output
    assert "lifted" in res.output and "reordered" in res.output
    from edgeretina.converters.export import load_keras_model

    X = np.random.default_rng(0).uniform(0, 1, (6, SIZE, SIZE, 3)).astype(np.float32)
    p_normal = 1 / (1 + np.exp(-m.predict(X, verbose=0)[:, 0]))
    got = load_keras_model(run / "model.keras").predict(X, verbose=0)
    assert got.shape == (6, 2) and np.abs(got[:, 1] - (1 - p_normal)).max() < 1e-5


def test_multiclass_savedmodel_with_logits(tmp_path):
    """A 5-grade DR SavedModel whose head outputs logits (detected from its outputs): stored as it is,
    config.json says logits + softmax, and the float32 export reproduces the softmax of the original logits."""
    from helpers.foreign import vggish

    from edgeretina._keras import keras, tf
    from edgeretina.tasks import activate

    keras.utils.set_random_seed(2)
    inp = keras.Input((SIZE, SIZE, 3))
    m = keras.Model(inp, vggish(keras.layers, inp, dense_act=None, width=5))
    tf.saved_model.save(m, str(tmp_path / "dr_sm"))
    run = tmp_path / "run"
    res = _invoke(["import", tmp_path / "dr_sm", "--task", "dr", "--preprocess", "torch", "--out", run])
    assert res.exit_code == 0, res.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["output"] == {"kind": "logits", "activation": "softmax"} and cfg["threshold"] is None
    assert cfg["preprocessing"]["scaling"] == "torch"
    exp = tmp_path / "exp"
    assert _invoke(["export", run, "--float32", "--verify-n", "0", "-q", "--out", exp]).exit_code == 0
    X = np.random.default_rng(0).normal(0, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    from edgeretina.converters import read_metadata

    f32 = next(exp.glob("*_float32.tflite"))
    meta = read_metadata(f32)
    p = LiteRTModel(f32).probabilities(X, meta["output"])
    assert np.abs(p - activate(m.predict(X, verbose=0), "softmax")).max() < 1e-5


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory) -> dict[str, Path]:
    from edgeretina._keras import keras, tf

    d = tmp_path_factory.mktemp("bad_models")
    a, b = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    two = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b])))
    keras.Model([a, b], two).save(d / "two_inputs.h5")
    nchw = keras.Input((3, SIZE, SIZE))
    keras.Model(nchw, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(nchw))).save(d / "nchw.h5")
    grey = keras.Input((SIZE, SIZE, 1))
    keras.Model(grey, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(grey))) \
        .save(d / "grey.h5")
    rgb = keras.Input((SIZE, SIZE, 3))
    keras.Model(rgb, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(rgb))) \
        .save(d / "three_cols.h5")
    one = keras.Input((SIZE, SIZE, 3))
    sig = keras.Model(one, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(one)))
    (d / "one_sigmoid.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(sig).convert())
    (d / "garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (d / "notes.tflite").write_text("not a model")
    return {p.stem: p for p in d.iterdir()} | {"missing": d / "missing.h5"}


GLAUCOMA = ["--task", "glaucoma", "--preprocess", "tf", "--threshold", "0.5"]


@pytest.mark.parametrize("case, args, msg", [
    ("two_inputs", GLAUCOMA, "has 2 inputs"),
    ("nchw", GLAUCOMA, "channels-first (NCHW"),
    ("grey", GLAUCOMA, "1 channel (grayscale"),
    ("three_cols", GLAUCOMA, "outputs 3 columns but task 'glaucoma' has 2 labels"),
    ("three_cols", ["--task", "dr", "--preprocess", "tf"], "outputs 3 columns but task 'dr' has 5 labels"),
    ("one_sigmoid", GLAUCOMA, "has 1 sigmoid column where"),
    ("garbage", GLAUCOMA, "cannot load"),
    ("notes", GLAUCOMA, "unreadable as a model"),
    ("missing", GLAUCOMA, "no such file"),
])
def test_bad_models_refused_in_one_line_nothing_written(bad_models, tmp_path, case, args, msg):
    out = tmp_path / "runs" / "imported"
    out.parent.mkdir()
    _one_error(_invoke(["import", bad_models[case], *args, "--out", out]), msg)
    assert list(out.parent.iterdir()) == []  # nothing written, not even a lock or staging folder


@pytest.mark.parametrize("args, msg", [
    (["--preprocess", "tf"], "no decision threshold: pass --threshold"),
    (["--threshold", "0.5"], "--preprocess is required"),
    (["--preprocess", "bgr", "--threshold", "0.5"], "neither a preset"),
    (["--preprocess", "tf", "--threshold", "0.5", "--data", LABELLED], "not both"),
    (["--preprocess", "tf", "--threshold", "1.5"], "probability in [0, 1]"),
    (["--preprocess", "tf", "--threshold", "0.5", "--labels", "healthy,glaucoma"], "are not the labels"),
    (["--preprocess", "tf", "--threshold", "0.5", "--output", "logits"], "last layer applies softmax"),
])
def test_bad_options_refused(foreign, tmp_path, args, msg):
    out = tmp_path / "run"
    _one_error(_invoke(["import", foreign["paths"]["h5"], "--task", "glaucoma", *args, "--out", out]), msg)
    assert not out.exists()
