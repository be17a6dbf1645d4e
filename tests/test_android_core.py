"""android_demo/core (plain Kotlin, no Android dependency) built with kotlinc and tested on the JVM.

One compile per source state (cached under android_demo/core/build/jvm/<hash>/), then:
- the module's JUnit tests;
- preprocessing parity: the same decoded real ODIR fundus pixels through the Kotlin Pipeline and through
  ``edgeretina.preprocess.Pipeline`` (image steps within 1 LSB, float steps to float precision);
- the app's whole model path on real .tflite files (float32 and full-int8) carrying edgeretina metadata:
  flatbuffer reading vs LiteRT's own tensor details, the input tensor the app would feed (int8 within
  1 LSB of the Python runner's quantisation), and post-processing vs LiteRT + the Python runner;
- refusal of a model without metadata and of a pipeline with a step the app lacks;
- the two-view input (whole fundus | ONH crop, S x 2S): bit-identical images and the same disc detection on
  real photos, and a real two-view .tflite fed exactly Python's tensor;
- the committed benchmark-result fixture is exactly what the Kotlin serializer writes.

Skips (with the reason) when kotlinc or JUnit is not installed: ``apt-get install kotlin junit4``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeretina.preprocess import Pipeline, decode_image

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "android_demo" / "core"
FIXTURE = REPO / "tests" / "fixtures" / "android" / "bench_result.json"
JUNIT_CLASSES = ["JsonTest", "PostprocessTest", "PreprocessTest", "BenchmarkTest", "EnhanceTest"]
TOOL = "org.edgeretina.core.tools.CoreTool"


# ------------------------------------------------------------------------------------------- toolchain
def _find_jar(names, env=None):
    if env and os.environ.get(env):
        return os.environ[env]
    for n in names:
        p = Path("/usr/share/java") / n
        if p.is_file():
            return str(p)
    return None


def _toolchain():
    kotlinc = shutil.which("kotlinc")
    java = shutil.which("java")
    if not kotlinc or not java:
        return None, "kotlinc/java not installed (apt-get install kotlin junit4)"
    lib = Path(kotlinc).resolve().parent.parent / "lib"
    stdlib = next((str(p) for p in (lib / "kotlin-stdlib.jar", Path("/usr/share/java/kotlin-stdlib.jar"))
                   if p.is_file()), None)
    junit = _find_jar(["junit4.jar", "junit.jar"], "EDGERETINA_JUNIT_JAR")
    hamcrest = _find_jar(["hamcrest-core.jar", "hamcrest.jar", "hamcrest-all.jar"], "EDGERETINA_HAMCREST_JAR")
    if not stdlib:
        return None, f"kotlin-stdlib.jar not found next to {kotlinc}"
    if not junit or not hamcrest:
        return None, "JUnit 4 / hamcrest jars not found (apt-get install junit4)"
    return {"kotlinc": kotlinc, "java": java, "stdlib": stdlib, "junit": junit, "hamcrest": hamcrest}, ""


@pytest.fixture(scope="session")
def kotlin():
    tc, why = _toolchain()
    if tc is None:
        pytest.skip(why)
    sources = sorted((CORE / "src").rglob("*.kt"))
    h = hashlib.sha256()
    for s in sources:
        h.update(str(s.relative_to(CORE)).encode() + b"\0" + s.read_bytes())
    h.update(tc["kotlinc"].encode())
    out_dir = CORE / "build" / "jvm" / h.hexdigest()[:16]
    jar = out_dir / "core-with-tests.jar"
    if not jar.is_file():
        for old in (CORE / "build" / "jvm").glob("*"):  # builds of earlier source states
            if old.is_dir() and old != out_dir:
                shutil.rmtree(old, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".build-{os.getpid()}.jar"
        cp = os.pathsep.join([tc["junit"], tc["hamcrest"]])
        p = subprocess.run([tc["kotlinc"], str(CORE / "src" / "main" / "kotlin"), str(CORE / "src" / "test" / "kotlin"),
                            "-cp", cp, "-d", str(tmp), "-nowarn"],
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            pytest.fail("kotlinc failed:\n" + p.stdout[-4000:] + p.stderr[-4000:])
        os.replace(tmp, jar)
    classpath = os.pathsep.join([str(jar), tc["stdlib"], tc["junit"], tc["hamcrest"]])

    def run(*args, check=True, timeout=300):
        p = subprocess.run([tc["java"], "-Xss8m", "-cp", classpath, *map(str, args)], capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"java {' '.join(map(str, args[:2]))} failed ({p.returncode}):\n"
                                 f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    return run


# ---------------------------------------------------------------------------------------------- JUnit
def test_kotlin_junit_suite(kotlin):
    p = kotlin("org.junit.runner.JUnitCore", *[f"org.edgeretina.core.{c}" for c in JUNIT_CLASSES])
    assert "OK (" in p.stdout, p.stdout


# ---------------------------------------------------------------------------------------- real images
@pytest.fixture(scope="session")
def fundus(shared):
    """Six real ODIR photos, decoded once by OpenCV (the bytes both sides receive)."""
    files = sorted((shared / "data" / "odir" / "images").glob("*.jpg"))
    if len(files) < 100:
        pytest.skip("ODIR images not found")
    picks = [files[i] for i in (0, 97, 811, 1666, 2503, 4021)]
    return [(f.name, decode_image(f)) for f in picks]


PIPELINES = {
    "default-224-tf": Pipeline.default(224, "tf"),
    "default-96-torch-linear": Pipeline.default(96, "torch", interpolation="linear"),
    "default-384-caffe-upscale": Pipeline.default(384, "caffe"),  # area → linear when growing
    "grey-stretch-standardize-nearest": Pipeline.default(128, "unit", grey=True, stretch=True, standardize=True,
                                                         interpolation="nearest"),
    "no-fov-stretch-per-channel": Pipeline.from_json({"steps": [
        {"name": "pad_square", "params": {"value": 7}}, {"name": "stretch", "params": {"per_channel": True}},
        {"name": "resize", "params": {"size": [150, 170]}}, {"name": "scale", "params": {"mode": "none"}}]}),
    "fov-margin-299": Pipeline.from_json({"steps": [
        {"name": "fov_crop", "params": {"threshold": 20, "min_fraction": 0.05, "margin": 6}},
        {"name": "pad_square"}, {"name": "resize", "params": {"size": 299}}, {"name": "scale"}]}),
    # the steps issue 17 added to the app: required bit-identical (EXACT below)
    "clahe-224": Pipeline.default(224, "tf", clahe=True),
    "ben-graham-224": Pipeline.default(224, "tf", ben_graham=True),
    "clahe-ben-graham-299": Pipeline.default(299, "torch", clahe=True, ben_graham=True),
    "onh-160": Pipeline.default(160, "tf", onh=True),  # the glaucoma recipe's ONH crop (#9)
    # whole fundus | ONH crop side by side (S x 2S); at 384 the ONH view is upscaled (area -> linear), + CLAHE
    "two-view-128": Pipeline.default(128, "tf", two_view=True),
    "two-view-384-linear-clahe": Pipeline.default(384, "torch", two_view=True, clahe=True, interpolation="linear"),
    # issue 18: the ONH view Gaussian-blurred after its resize (OpenCV's 8-bit kernel at σ 0.5 → 5 taps, 1.0 → 7)
    "two-view-96-onh-blur-1": Pipeline.default(96, "tf", two_view=True).with_onh_view(onh_blur=1.0),
    "two-view-96-onh-blur-0.5-diam-3": Pipeline.default(96, "tf", two_view=True).with_onh_view(onh_blur=0.5, diameters=3.0),
    # issue 18: the ONH window at the sub-pixel disc centre (parabolic peak, 8-bit bilinear cut)
    "two-view-96-subpixel": Pipeline.default(96, "tf", two_view=True).with_onh_view(subpixel=True),
    "two-view-128-subpixel-blur-0.7": Pipeline.default(128, "tf", two_view=True).with_onh_view(subpixel=True, onh_blur=0.7),
    "enhance-non-square-params": Pipeline.from_json({"steps": [
        {"name": "resize", "params": {"size": [150, 170]}}, {"name": "clahe", "params": {"clip_limit": 3.0, "tile": 7}},
        {"name": "ben_graham", "params": {"sigma_frac": 0.03, "mask_radius": 0.9}}, {"name": "scale"}]}),
}
EXACT = {"clahe-224", "ben-graham-224", "clahe-ben-graham-299", "onh-160", "enhance-non-square-params", "two-view-128",
         "two-view-384-linear-clahe", "two-view-96-onh-blur-1", "two-view-96-onh-blur-0.5-diam-3", "two-view-96-subpixel",
         "two-view-128-subpixel-blur-0.7"}


def _write_rgb(path: Path, img: np.ndarray) -> None:
    path.write_bytes(np.ascontiguousarray(img, dtype=np.uint8).tobytes())


def _jobs(tmp: Path, images):
    jobs = []
    for name, img in images:
        raw = tmp / f"{name}.rgb"
        _write_rgb(raw, img)
        jobs.append({"rgb": str(raw), "width": int(img.shape[1]), "height": int(img.shape[0]),
                     "out": str(tmp / f"out-{name}"), "image": img})
    return jobs


def _kotlin_preprocess(kotlin, tmp: Path, pipeline: Pipeline, jobs):
    pj = tmp / "pipeline.json"
    pj.write_text(json.dumps(pipeline.to_json()))
    jj = tmp / "jobs.json"
    jj.write_text(json.dumps([{k: v for k, v in j.items() if k != "image"} for j in jobs]))
    kotlin(TOOL, "preprocess", pj, jj)
    out = []
    for j in jobs:
        meta = json.loads(Path(j["out"] + ".json").read_text())
        h, w = meta["height"], meta["width"]
        img = np.frombuffer(Path(j["out"] + ".rgb").read_bytes(), np.uint8).reshape(h, w, 3)
        x = np.frombuffer(Path(j["out"] + ".f32").read_bytes(), "<f4").reshape(h, w, 3)
        out.append((img, x))
    return out


@pytest.mark.parametrize("name", list(PIPELINES))
def test_preprocessing_parity_on_real_fundus(kotlin, fundus, tmp_path, name):
    pipeline = PIPELINES[name]
    images = list(fundus)
    # an exact 2x/4x area reduction (OpenCV's fast integer path) on a real 320 px crop
    if name == "default-224-tf":
        n, img = fundus[0]
        c = img[:320, :320]
        images.append((n + "-crop320", c))
    jobs = _jobs(tmp_path, images)
    got = _kotlin_preprocess(kotlin, tmp_path, pipeline, jobs)
    for (img_name, rgb), (k_img, k_x) in zip(images, got):
        py_img = pipeline.apply_image(rgb)
        assert k_img.shape == py_img.shape, (img_name, k_img.shape, py_img.shape)
        d = np.abs(k_img.astype(np.int16) - py_img.astype(np.int16))
        assert d.max() <= 1, f"{name} {img_name}: image steps differ by {d.max()} LSB ({(d > 0).mean():.2%} of values)"
        if name in EXACT:
            assert d.max() == 0, f"{name} {img_name}: {(d > 0).sum()} values differ (bit-identical expected)"
        # float steps: exactly Python's, applied to the Kotlin image
        ref = pipeline.apply_float(k_img)
        np.testing.assert_allclose(k_x, ref, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
        # and the whole tensor within one input LSB of the Python pipeline
        lsb = np.abs(pipeline.apply_float(np.clip(py_img.astype(np.int16) + 1, 0, 255).astype(np.uint8))
                     - pipeline.apply_float(py_img)).max()
        full = np.abs(k_x - pipeline.apply(rgb)).max()
        assert full <= lsb * 1.01 + 1e-5, f"{name} {img_name}: tensor differs by {full} (1 LSB = {lsb})"
    if pipeline.uses_onh:  # the optic-disc detection the app reports (input pixels) is Python's
        for (img_name, rgb), job in zip(images, jobs):
            k = json.loads(Path(job["out"] + ".json").read_text())["disc"]
            _assert_same_disc(pipeline.apply_image_with_info(rgb)[1].disc, k, f"{name} {img_name}")
            _assert_same_disc(pipeline.detect_disc(rgb), k, f"{name} {img_name} (detect_disc)")


def _assert_same_disc(d, k: dict, where: str) -> None:
    """Same flag and reason, the same disc (centre and diameter: the crop window) to double precision, and
    the scores it was judged by to 1e-4 (the locator scores candidates on float32 maps; a ratio of two close
    float32 scores, the confidence of an ambiguous disc, differs by up to ~2e-5 relative)."""
    assert (d.found, d.reason) == (k["found"], k["reason"]), (where, d, k)
    for f in ("x", "y", "diameter"):
        # a sub-pixel centre (issue 18) is read off the float32 map, whose last bits differ: ~1e-4 px, which
        # the window's 1/16-px grid absorbs (the images above are bit-identical)
        tol = 1e-3 if "subpixel" in where and f != "diameter" else 1e-9
        assert k[f] == pytest.approx(getattr(d, f), rel=tol, abs=tol), (where, f, d, k)
    for f in ("confidence", "score", "margin", "roundness"):
        assert k[f] == pytest.approx(getattr(d, f), rel=1e-4, abs=1e-5), (where, f, d, k)


def test_area_resize_2x_is_bit_exact(kotlin, fundus, tmp_path):
    """OpenCV's integer-factor INTER_AREA (the 2x/4x fast path) is reproduced exactly."""
    _, img = fundus[1]
    crop = img[:320, :320]
    for size in (160, 80):
        p = Pipeline.from_json({"steps": [{"name": "resize", "params": {"size": size}}, {"name": "scale"}]})
        (k_img, _), = _kotlin_preprocess(kotlin, tmp_path, p, _jobs(tmp_path, [(f"c{size}", crop)]))
        assert np.array_equal(k_img, p.apply_image(crop))


# ------------------------------------------------------------------------------------------ real models
IMG = 64


def _tiny_model():
    from edgeretina._keras import keras, tf

    tf.random.set_seed(0)
    inp = keras.Input((IMG, IMG, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2)(x)  # logits: the metadata says so
    return keras.Model(inp, out)


def _payload(pipeline: Pipeline, **over) -> dict:
    from edgeretina.run import RunConfig

    cfg = RunConfig(task="glaucoma", kind="binary", labels=("normal", "glaucoma"),
                    preprocessing=pipeline.to_json(), input_size=IMG, positive_index=1, threshold=0.47,
                    output={"kind": "logits", "activation": "softmax"}, edgeretina_version="0.1.0")
    d = cfg.to_dict()
    d.update(over)
    return d


@pytest.fixture(scope="module")
def models(fundus, tmp_path_factory):
    """float32 and full-int8 .tflite files of a tiny CNN, with edgeretina metadata embedded."""
    from edgeretina._keras import tf
    from edgeretina.converters.metadata import embed_metadata

    d = tmp_path_factory.mktemp("tflite")
    pipeline = Pipeline.default(IMG, "tf")
    model = _tiny_model()
    calib = np.stack([pipeline.apply(img) for _, img in fundus]).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    f32 = conv.convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    i8 = conv.convert()
    payload = _payload(pipeline)
    out = {"pipeline": pipeline, "payload": payload, "dir": d}
    for name, blob in (("float32", f32), ("int8", i8)):
        p = d / f"glaucoma_{name}.tflite"
        p.write_bytes(embed_metadata(blob, payload))
        out[name] = p
    bare = d / "no_metadata.tflite"
    bare.write_bytes(f32)
    out["bare"] = bare
    bg = d / "ben_graham.tflite"
    bg.write_bytes(embed_metadata(f32, _payload(Pipeline.default(IMG, "tf", ben_graham=True))))
    out["ben_graham"] = bg
    cubic = d / "cubic.tflite"
    cubic.write_bytes(embed_metadata(f32, _payload(Pipeline.default(IMG, "tf", interpolation="cubic"))))
    out["cubic"] = cubic
    return out


def _litert(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    return it


def score_through_app(kotlin, model, x, tmp_path):
    """LiteRT runs ``model`` on the inputs ``x`` here; the app's core (``CoreTool score``) quantises the same
    inputs and post-processes the interpreter's raw outputs. Asserts the app fed LiteRT the tensors Python
    would; returns (the app's JSON result, LiteRT's output details)."""
    from edgeretina.runtime.interpreter import quantize

    it = _litert(model)
    inp, outd = it.get_input_details()[0], it.get_output_details()[0]
    fed_py, outs = [], []
    for xi in x:
        q = quantize(xi[None], inp)
        fed_py.append(q.tobytes())
        it.set_tensor(inp["index"], q)
        it.invoke()
        outs.append(it.get_tensor(outd["index"]).tobytes())
    npy = tmp_path / "inputs.npy"
    np.save(npy, x)
    (tmp_path / "outputs.bin").write_bytes(b"".join(outs))
    res = json.loads(kotlin(TOOL, "score", model, npy, tmp_path / "outputs.bin", tmp_path / "fed.bin").stdout)
    assert (tmp_path / "fed.bin").read_bytes() == b"".join(fed_py), "the app fed other input tensors"
    return res, outd


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_inspect_reads_tensors_and_metadata_like_litert(kotlin, models, variant):
    p = models[variant]
    info = json.loads(kotlin(TOOL, "inspect", p).stdout)
    it = _litert(p)
    for mine, theirs in ((info["inputs"][0], it.get_input_details()[0]), (info["outputs"][0], it.get_output_details()[0])):
        assert mine["name"] == theirs["name"]
        assert mine["dtype"] == np.dtype(theirs["dtype"]).name
        assert mine["shape"] == [int(v) for v in theirs["shape"]]
        scale, zp = theirs["quantization"]
        assert mine["scale"] == pytest.approx(scale, rel=1e-7, abs=0) and mine["zero_point"] == zp
    assert info["metadata"] == json.loads(json.dumps(models["payload"]))
    assert "edgeretina" in info["metadata_names"]
    assert info["error"] is None
    cfg = info["config"]
    assert cfg["labels"] == ["normal", "glaucoma"] and cfg["positive_index"] == 1
    assert cfg["threshold"] == 0.47 and cfg["output_kind"] == "logits" and cfg["activation"] == "softmax"
    assert cfg["input_size"] == IMG and cfg["scaling"] == "tf"
    assert cfg["steps"] == ["fov_crop", "pad_square", "resize"]


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_app_input_and_prediction_match_python(kotlin, models, fundus, tmp_path, variant):
    """What the app feeds LiteRT and what it shows, vs the Python runner on the same real photo."""
    from edgeretina.benchmarks.runners.litert import LiteRTRunner

    path, pipeline = models[variant], models["pipeline"]
    it = _litert(path)
    inp, outd = it.get_input_details()[0], it.get_output_details()[0]
    runner = LiteRTRunner(path, logits=True, activation="softmax", threads=1)
    for name, rgb in fundus[:3]:
        raw = tmp_path / f"{name}.rgb"
        _write_rgb(raw, rgb)
        tensor_file = tmp_path / f"{name}.{variant}.in"
        kotlin(TOOL, "prepare", path, raw, rgb.shape[1], rgb.shape[0], tensor_file)
        x = pipeline.apply(rgb)[None]
        if variant == "int8":
            scale, zp = inp["quantization"]
            q_py = np.clip(np.round(x / scale + zp), -128, 127).astype(np.int8)
            q_kt = np.frombuffer(tensor_file.read_bytes(), np.int8).reshape(q_py.shape)
            d = np.abs(q_kt.astype(np.int16) - q_py.astype(np.int16))
            assert d.max() <= 1, f"{name}: int8 input differs by {d.max()} LSB"
            assert d.max() == 0, f"{name}: int8 input differs in {(d > 0).sum()} values (bit-exact expected here)"
            feed = q_kt
        else:
            x_kt = np.frombuffer(tensor_file.read_bytes(), "<f4").reshape(x.shape)
            assert np.abs(x_kt - x).max() <= 1 / 127.5 + 1e-6
            feed = x_kt
        it.set_tensor(inp["index"], feed)
        it.invoke()
        out = it.get_tensor(outd["index"])
        out_file = tmp_path / f"{name}.{variant}.out"
        out_file.write_bytes(out.tobytes())
        pred = json.loads(kotlin(TOOL, "postprocess", path, out_file).stdout)
        # Python's runner on the very same input tensor
        runner.interpreter.set_tensor(runner._in["index"], feed)
        runner.interpreter.invoke()
        from edgeretina.benchmarks.runners._common import to_probabilities

        probs = to_probabilities(runner._get(), True, "softmax")[0]
        np.testing.assert_allclose(pred["probabilities"], probs, rtol=1e-6, atol=1e-7)
        assert pred["score"] == pytest.approx(probs[1], abs=1e-7)
        assert pred["decision"] == ("glaucoma" if probs[1] >= 0.47 else "normal")
        assert pred["threshold"] == 0.47


@pytest.fixture(scope="module")
def two_view_models(fundus, tmp_path_factory):
    """A tiny CNN on the two-view input (1, 64, 128, 3), float32 and full-int8, with its metadata; and the
    square tiny model carrying the two-view preprocessing (a mismatch the app must refuse)."""
    from edgeretina._keras import keras, tf
    from edgeretina.converters.metadata import embed_metadata

    d = tmp_path_factory.mktemp("two_view")
    pipeline = Pipeline.default(IMG, "tf", two_view=True)
    tf.random.set_seed(0)
    inp = keras.Input((IMG, 2 * IMG, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    calib = np.stack([pipeline.apply(img) for _, img in fundus]).astype(np.float32)
    payload = _payload(pipeline)
    out = {"pipeline": pipeline}
    for name, int8 in (("float32", False), ("int8", True)):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        out[name] = d / f"two_view_{name}.tflite"
        out[name].write_bytes(embed_metadata(conv.convert(), payload))
    out["square"] = d / "square_with_two_view_metadata.tflite"
    out["square"].write_bytes(embed_metadata(tf.lite.TFLiteConverter.from_keras_model(_tiny_model()).convert(), payload))
    return out


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_two_view_model_opens_and_gets_pythons_input(kotlin, two_view_models, fundus, tmp_path, variant):
    """A two-view model (input S x 2S) opens in the app, and the tensor it feeds on real photos is exactly the
    Python pipeline's (int8: the same quantisation)."""
    from edgeretina.runtime.interpreter import quantize

    path, pipeline = two_view_models[variant], two_view_models["pipeline"]
    info = json.loads(kotlin(TOOL, "inspect", path).stdout)
    assert info["error"] is None, info["error"]
    assert info["inputs"][0]["shape"] == [1, IMG, 2 * IMG, 3]
    assert info["config"]["steps"] == ["fov_crop", "two_view"] and info["config"]["input_size"] == IMG
    inp = _litert(path).get_input_details()[0]
    for name, rgb in fundus[:3]:
        raw = tmp_path / f"{name}.rgb"
        _write_rgb(raw, rgb)
        tfile = tmp_path / f"{name}.in"
        kotlin(TOOL, "prepare", path, raw, rgb.shape[1], rgb.shape[0], tfile)
        want = quantize(pipeline.apply(rgb)[None].astype(np.float32), inp)
        got = np.frombuffer(tfile.read_bytes(), want.dtype.newbyteorder("<")).reshape(want.shape)
        assert np.array_equal(got, want), f"{name}: the app's two-view input differs from Python's"


def test_two_view_metadata_on_a_square_model_is_refused(kotlin, two_view_models):
    info = json.loads(kotlin(TOOL, "inspect", two_view_models["square"]).stdout)
    assert info["config"] is None
    assert f"preprocessing produces {IMG}x{2 * IMG} px images but the model input is {IMG}x{IMG}" in info["error"]


def test_model_without_metadata_is_refused(kotlin, models):
    p = kotlin(TOOL, "prepare", models["bare"], "x", 1, 1, "y", check=False)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert "no 'edgeretina' metadata" in p.stderr and str(models["bare"]) in p.stderr


def test_unsupported_step_is_refused_with_clear_message(kotlin, models):
    info = json.loads(kotlin(TOOL, "inspect", models["cubic"]).stdout)
    assert info["config"] is None
    assert "resize interpolation 'cubic' is not implemented by this app" in info["error"]
    assert "supported: area, linear, nearest" in info["error"]
    # ben_graham (and clahe) are implemented since issue 17: such a model opens
    info = json.loads(kotlin(TOOL, "inspect", models["ben_graham"]).stdout)
    assert info["error"] is None and info["config"]["steps"] == ["fov_crop", "pad_square", "resize", "ben_graham"]


def test_shipped_recipes_steps_are_all_implemented(kotlin, tmp_path):
    """Every preprocessing step edgeretina can put in a model's metadata is one the app implements (with
    every parameter the Python step has): a pipeline with all of them opens."""
    from edgeretina.preprocess import STEPS, Step

    steps = [Step("fov_crop"), Step("onh_crop"), Step("two_view", {"size": 32}), Step("pad_square"),
             Step("resize", {"size": 64}), Step("grey"),
             Step("clahe"), Step("ben_graham"), Step("stretch"), Step("standardize"), Step("scale", {"mode": "none"})]
    assert {s.name for s in steps} == set(STEPS)
    pj = tmp_path / "all.json"
    pj.write_text(json.dumps({"steps": [s.to_json() for s in steps]}))
    rgb = np.zeros((80, 90, 3), np.uint8)
    rgb[10:70, 10:80] = (160, 80, 40)
    jobs = _jobs(tmp_path, [("synthetic", rgb)])
    (k_img, _), = _kotlin_preprocess(kotlin, tmp_path, Pipeline.from_json(json.loads(pj.read_text())), jobs)
    assert k_img.shape == (64, 64, 3)


def test_lab_conversions_match_opencv_on_every_colour(kotlin, tmp_path):
    """CLAHE's colour conversions (OpenCV's 8-bit RGB→L*a*b* and back) on all 2^24 byte triples."""
    import cv2

    allc = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(allc >> 16) & 255, (allc >> 8) & 255, allc & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
    src = tmp_path / "all.rgb"
    src.write_bytes(rgb.tobytes())
    for cmd, code in (("lab", cv2.COLOR_RGB2LAB), ("lab2rgb", cv2.COLOR_LAB2RGB)):
        out = tmp_path / f"{cmd}.out"
        kotlin(TOOL, cmd, src, out)
        k = np.frombuffer(out.read_bytes(), np.uint8).reshape(rgb.shape)
        bad = int((k != cv2.cvtColor(rgb, code)).any(-1).sum())
        assert bad == 0, f"{cmd}: {bad} colours differ from OpenCV"


def test_not_a_tflite_is_refused(kotlin, tmp_path):
    junk = tmp_path / "photo.tflite"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not a model at all")
    p = kotlin(TOOL, "inspect", junk, check=False)
    assert p.returncode == 2 and "not a TFLite model" in p.stderr


# -------------------------------------------------------------------------------------------- fixture
def test_committed_bench_fixture_is_the_serializers_output(kotlin, tmp_path):
    """tests/fixtures/android/bench_result.json (used by test_android_runner.py) is regenerated here by
    the app's own serializer: it must stay byte-identical (regenerate with the command in its README)."""
    out = tmp_path / "bench_result.json"
    kotlin(TOOL, "bench-fixture", out)
    assert out.read_text() == FIXTURE.read_text(), (
        "the Kotlin serializer changed: copy its output over tests/fixtures/android/bench_result.json")


# ------------------------------------------------------------------------- the suite's real trained model
@pytest.mark.parametrize("variant", ["float32", "fp16", "int8"])
def test_real_exports_through_the_app_path(kotlin, small_run, fundus, tmp_path, variant):
    """The suite's trained MobileNetV2 (ODIR glaucoma) exports, as the app would run them: the Kotlin-prepared
    input tensor equals Python's (int8: within 1 LSB) and the app's probabilities/decision equal the Python
    LiteRT runner's on the same photos."""
    from helpers.testmodels import glaucoma_variants
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.benchmarks.runners.litert import LiteRTRunner

    path = glaucoma_variants(small_run)["tflite"][variant]
    mf = open_model(path)
    info = json.loads(kotlin(TOOL, "inspect", path).stdout)
    assert info["error"] is None, info["error"]
    assert info["config"]["labels"] == list(mf.config.labels)
    pipeline = Pipeline.from_json(mf.config.preprocessing)
    runner = LiteRTRunner.from_model(mf, threads=1)
    it = _litert(path)
    inp, outd = it.get_input_details()[0], it.get_output_details()[0]
    for name, rgb in fundus[:4]:
        raw = tmp_path / f"{name}.rgb"
        _write_rgb(raw, rgb)
        tfile = tmp_path / f"{name}.in"
        kotlin(TOOL, "prepare", path, raw, rgb.shape[1], rgb.shape[0], tfile)
        x = pipeline.apply(rgb)[None]
        dtype = np.dtype(inp["dtype"])
        feed = np.frombuffer(tfile.read_bytes(), dtype.newbyteorder("<")).reshape(x.shape).astype(dtype)
        if dtype.kind == "i":
            scale, zp = inp["quantization"]
            q = np.clip(np.round(x / scale + zp), -128, 127)  # what LiteRTRunner feeds
            assert np.abs(feed.astype(np.int16) - q).max() <= 1
            assert np.array_equal(feed, q.astype(np.int8)), "same pixels, same quantisation: expected identical"
        else:
            np.testing.assert_allclose(feed, x, atol=1e-6)
        it.set_tensor(inp["index"], feed)
        it.invoke()
        out_file = tmp_path / f"{name}.out"
        out_file.write_bytes(it.get_tensor(outd["index"]).tobytes())
        pred = json.loads(kotlin(TOOL, "postprocess", path, out_file).stdout)
        probs = runner.predict(x.astype(np.float32))[0]
        np.testing.assert_allclose(pred["probabilities"], probs, atol=1e-6)
        pos = mf.config.positive_index
        assert pred["decision"] == mf.config.labels[pos if probs[pos] >= mf.config.threshold else 1 - pos]


# ------------------------------------------------------ issue 18: borderline; issue 17: benchmark-mode scoring
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_app_borderline_and_scoring_match_python_predict(kotlin, small_run, shared, tmp_path, variant):
    """The app's benchmark-mode scoring (ImageOutputs.score: .npy inputs → the tensors fed → raw outputs →
    probabilities, decision, borderline flag) on 24 real ODIR photos with the suite's trained exports, the
    borderline band carried in the model's metadata: the fed tensors are the Python runner's, and every
    decision and borderline flag equals `edgeretina predict`'s (the band is chosen so both kinds occur)."""
    from helpers.testmodels import glaucoma_variants
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.benchmarks.predict import _logit, predict_images
    from edgeretina.runtime.metadata import embed_metadata

    path = glaucoma_variants(small_run)["tflite"][variant]
    mf = open_model(path)
    files = sorted((shared / "data" / "odir" / "images").glob("*.jpg"))[::250][:24]
    pipeline = Pipeline.from_json(mf.config.preprocessing)
    x = np.stack([pipeline.apply(decode_image(f)) for f in files]).astype(np.float32)
    # the band: between two of the middle half's distances to the threshold (in logits), at their widest gap,
    # so that about half the photos are borderline and none lies within float noise of the band's edge
    plain = predict_images(path, files, verify_manifest=False)
    dist = np.sort([abs(_logit(p.score) - _logit(p.threshold)) for p in plain])
    lo, hi = len(dist) // 4, 3 * len(dist) // 4
    k = lo + int(np.argmax(np.diff(dist[lo:hi + 1])))
    band = float((dist[k] + dist[k + 1]) / 2)
    model = tmp_path / f"banded_{variant}.tflite"
    model.write_bytes(embed_metadata(path.read_bytes(), {**mf.meta, "borderline_band": band}))
    preds = predict_images(model, files, verify_manifest=False)
    # the interpreter's part on this machine (LiteRT), the rest through the app's code
    res, outd = score_through_app(kotlin, model, x, tmp_path)
    assert res["n"] == len(files) and res["dtype"] == np.dtype(outd["dtype"]).name
    pos = mf.config.positive_index
    for i, p in enumerate(preds):
        np.testing.assert_allclose(res["probabilities"][i], list(p.probabilities.values()), atol=1e-6)
        assert (res["decisions"][i] == mf.config.labels[pos]) == (p.decision == "refer"), (files[i].name, p)
        assert res["borderline"][i] == p.borderline, (files[i].name, p.score, p.threshold, band)
    flags = [p.borderline for p in preds]
    assert 0 < sum(flags) < len(flags)
