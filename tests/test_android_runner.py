"""The adb path of ``edgeretina bench --device android`` (benchmarks/runners/android.py).

No phone here, so: "no adb" is tested for real (a PATH without adb, through the real CLI); the adb answers
come from a small executable ``adb`` on PATH that prints what real adb prints (``adb devices -l`` shapes for
no device / unauthorised / offline / no permissions / several phones) and, for the full flow, serves the
benchmark JSON that the app's own Kotlin serializer wrote (tests/fixtures/android/bench_result.json,
regenerated and compared byte for byte by test_android_core.py).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgeretina.benchmarks.runners import android
from edgeretina.benchmarks.runners.base import Timing
from edgeretina.errors import DeviceError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "android" / "bench_result.json"

DEVICES = {
    "none": "List of devices attached\n\n",
    "daemon-start-none": "* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
                         "List of devices attached\n\n",
    "one": "List of devices attached\n"
           "28011FDH2000B1         device usb:3-2 product:panther model:Pixel_7 device:panther transport_id:4\n\n",
    "unauthorized": "List of devices attached\n28011FDH2000B1         unauthorized usb:3-2 transport_id:5\n\n",
    "offline": "List of devices attached\nemulator-5554          offline transport_id:1\n\n",
    "no-permissions": "List of devices attached\n0123456789ABCDEF       no permissions (missing udev rules? user is "
                      "in the plugdev group); see [http://developer.android.com/tools/device.html] usb:1-1 "
                      "transport_id:1\n\n",
    "two": "List of devices attached\n"
           "28011FDH2000B1         device usb:3-2 product:panther model:Pixel_7 device:panther transport_id:4\n"
           "emulator-5554          device product:sdk_gphone64_x86_64 model:sdk_gphone64_x86_64 "
           "device:emu64xa transport_id:2\n\n",
}

FAKE_ADB = r'''#!__PYTHON__
"""Stand-in for adb: prints real adb output shapes; logs every call (one JSON list per line)."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
devices = __DEVICES__
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
if args[:1] == ["devices"]:
    sys.stdout.write(devices[os.environ.get("FAKE_ADB_DEVICES", "one")])
    sys.exit(0)
mode = os.environ.get("FAKE_ADB_MODE", "ok")
if args[:3] == ["shell", "pm", "path"]:
    if mode != "no-app":
        print("package:/data/app/~~x==/org.edgeretina.demo-y==/base.apk")
    sys.exit(0)
phone = os.environ.get("FAKE_PHONE_DIR")  # the phone's files: pushed paths kept under it

def on_phone(remote):
    return os.path.join(phone, remote.lstrip("/").replace("/", "__"))

if args[:1] == ["push"]:
    if phone:
        import shutil
        shutil.copyfile(args[1], on_phone(args[2]))
    print(f"{args[1]}: 1 file pushed, 0 skipped. 91.3 MB/s (123456 bytes in 0.001s)")
    sys.exit(0)
if args[:3] == ["shell", "am", "start"]:
    if mode == "no-activity":
        print("Starting: Intent { cmp=org.edgeretina.demo/.BenchmarkActivity (has extras) }")
        print("Error type 3")
        print("Error: Activity class {org.edgeretina.demo/org.edgeretina.demo.BenchmarkActivity} does not exist.")
        sys.exit(0)
    extras = {args[i + 1]: args[i + 2] for i in range(len(args) - 2) if args[i] in ("--es", "--ei")}
    if phone and "inputs" in extras and mode != "old-app":
        # the app's benchmark mode, played by LiteRT on this machine: each input quantised as the app does
        # (round half to even of x / scale + zero point), the raw output tensor returned per image
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter
        it = Interpreter(model_path=on_phone(extras["model"]), num_threads=1)
        it.allocate_tensors()
        i_d, o_d = it.get_input_details()[0], it.get_output_details()[0]
        x = np.load(on_phone(extras["inputs"]))
        raw = []
        for xi in x:
            feed = xi[None].astype(np.float32)
            if i_d["dtype"] != np.float32:
                sc, zp = i_d["quantization"]
                info = np.iinfo(i_d["dtype"])
                feed = np.clip(np.round(feed / sc + zp), info.min, info.max).astype(i_d["dtype"])
            it.set_tensor(i_d["index"], feed)
            it.invoke()
            raw.append(it.get_tensor(o_d["index"]).reshape(-1).tolist())
        if mode == "perturb":  # a phone whose kernels differ: the first image's outputs come out swapped
            raw[0] = raw[0][::-1]
        d = json.load(open(os.environ["FAKE_ADB_RESULT"]))
        sc, zp = o_d["quantization"]
        d["output"] = {"name": o_d["name"], "dtype": np.dtype(o_d["dtype"]).name,
                       "shape": [int(v) for v in o_d["shape"]], "scale": float(sc), "zero_point": int(zp)}
        d["outputs"] = {"inputs": extras["inputs"], "n": len(raw), "dtype": np.dtype(o_d["dtype"]).name,
                        "raw": raw, "probabilities": [], "decisions": [], "borderline": []}
        d["run_id"] = extras["run_id"]
        json.dump(d, open(on_phone("result-" + extras["run_id"]), "w"))
    print("Starting: Intent { cmp=org.edgeretina.demo/.BenchmarkActivity (has extras) }")
    print("Status: ok\nLaunchState: COLD\nActivity: org.edgeretina.demo/.BenchmarkActivity\nTotalTime: 412\nWaitTime: 415\nComplete")
    sys.exit(0)
if args[:2] == ["exec-out", "cat"] and "/sdcard/Android/data/" in args[2]:
    if mode == "never":
        sys.stderr.write(f"cat: {args[2]}: No such file or directory\n")
        sys.exit(1)
    run_id = os.path.basename(args[2])[:-len(".json")]
    scored = on_phone("result-" + run_id) if phone else ""
    text = open(scored if os.path.exists(scored) else os.environ["FAKE_ADB_RESULT"]).read()
    if mode == "old-app":  # an app from before issue 17: timing only, no per-image outputs
        d = json.loads(text)
        d.pop("outputs", None)
        text = json.dumps(d)
    sys.stdout.write(text)
    sys.exit(0)
if args[:1] == ["exec-out"]:
    sys.stderr.write("run-as: package not debuggable: org.edgeretina.demo\n")
    sys.exit(1)
if args[:1] == ["shell"]:
    sys.exit(0)
sys.stderr.write("adb: unknown command " + " ".join(args) + "\n")
sys.exit(1)
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """An executable named ``adb`` first on PATH; returns a function reading its call log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "adb"
    exe.write_text(FAKE_ADB.replace("__PYTHON__", sys.executable).replace("__DEVICES__", repr(DEVICES)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "adb.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_RESULT", str(FIXTURE))
    phone = tmp_path / "phone"
    phone.mkdir()
    monkeypatch.setenv("FAKE_PHONE_DIR", str(phone))
    monkeypatch.delenv("EDGERETINA_ADB", raising=False)
    monkeypatch.delenv("EDGERETINA_ANDROID_SCORES", raising=False)
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def no_adb_path(tmp_path, monkeypatch):
    """PATH holding only the Python interpreter's directory, checked to contain no adb."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("EDGERETINA_ADB", raising=False)
    return str(empty)


@pytest.fixture
def tflite(tmp_path):
    """A tiny .tflite file (contents do not matter to the adb flow; the phone never sees this test)."""
    p = tmp_path / "glaucoma_int8.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    return p


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and msg.startswith("android: "), msg
    return msg


# ------------------------------------------------------------------------------------------------ no adb
def test_no_adb_on_path(no_adb_path):
    with pytest.raises(DeviceError) as e:
        android.check()
    assert "adb not found on PATH" in _one_line(e.value)


def test_bad_adb_setting(no_adb_path, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGERETINA_ADB", str(tmp_path / "platform-tools" / "adb"))
    with pytest.raises(DeviceError) as e:
        android.check()
    assert "adb not found at" in _one_line(e.value)


# ---------------------------------------------------------------------------------- adb devices answers
@pytest.mark.parametrize("state,expect", [
    ("none", "no device attached"),
    ("daemon-start-none", "no device attached"),
    ("unauthorized", "is unauthorized: accept the 'Allow USB debugging?' prompt"),
    ("offline", "emulator-5554 is offline"),
    ("no-permissions", "0123456789ABCDEF is no permissions: add a udev rule"),
    ("two", "2 devices attached (28011FDH2000B1, emulator-5554); choose one with ANDROID_SERIAL"),
])
def test_device_problems_are_one_line_errors(fake_adb, monkeypatch, state, expect):
    monkeypatch.setenv("FAKE_ADB_DEVICES", state)
    with pytest.raises(DeviceError) as e:
        android.check()
    assert expect in _one_line(e.value)


def test_device_choice(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "two")
    android.check(serial="emulator-5554")
    monkeypatch.setenv("ANDROID_SERIAL", "28011FDH2000B1")
    android.check()
    with pytest.raises(DeviceError) as e:
        android.check(serial="R58M123ABC")
    assert "no device 'R58M123ABC' attached" in _one_line(e.value)
    devs = android.parse_devices(DEVICES["one"])
    assert devs == [android.AdbDevice("28011FDH2000B1", "device", {"usb": "3-2", "product": "panther",
                                                                   "model": "Pixel_7", "device": "panther",
                                                                   "transport_id": "4"})]


# ------------------------------------------------------------------------------------------- full flow
def test_full_flow_parses_the_apps_json(fake_adb, tflite):
    runner = android.load(tflite, meta={}, threads=2, delegate="cpu")
    assert runner.supports_predict is True and runner.device == "android"
    x = np.zeros((3, 224, 224, 3), np.float32)
    t = runner.time(x, runs=4, warmup=2)
    fixture = json.loads(FIXTURE.read_text())
    assert isinstance(t, Timing)
    assert t == Timing.from_samples(fixture["samples_ms"])
    assert (t.p50, t.p90, t.mean, t.n) == pytest.approx((fixture["p50_ms"], fixture["p90_ms"], fixture["mean_ms"], 20))
    facts = runner.facts
    assert facts["model"] == "Pixel 7" and facts["soc"] == "Google Tensor G2" and facts["android_version"] == "14"
    assert facts["delegate"] == "cpu" and facts["delegate_applied"] == "xnnpack"
    assert facts["label"] == "Google Pixel 7 · Google Tensor G2 · Android 14 · xnnpack×4"
    calls = fake_adb()
    start = next(c for c in calls if c[2:5] == ["shell", "am", "start"])
    assert start[:2] == ["-s", "28011FDH2000B1"]
    tail = start[start.index("--es"):]
    assert set(tail[0::3]) == {"--es", "--ei"}
    extras = dict(zip(tail[1::3], tail[2::3]))
    assert extras["runs"] == "12" and extras["warmup"] == "2" and extras["threads"] == "2"  # runs × images
    assert extras["delegate"] == "cpu" and extras["model"].startswith("/data/local/tmp/edgeretina/")
    assert extras["model"].endswith("-glaucoma_int8.tflite")
    push = next(c for c in calls if c[2:3] == ["push"])
    assert push[3] == str(tflite) and push[4] == extras["model"]
    assert any(c[2:4] == ["shell", "rm"] for c in calls)  # the pushed model is removed afterwards
    # the app's serializer's per-image outputs block (int8 output: dequantised with the output tensor's params)
    res = android.parse_result(FIXTURE.read_text())
    assert res.outputs["n"] == 3 and res.outputs["decisions"] == ["normal", "glaucoma", "normal"]
    assert res.outputs["borderline"] == [False, False, True]  # p = 0.488, within ±0.4 logit of 0.5
    np.testing.assert_allclose(res.raw_outputs(), (np.asarray(res.outputs["raw"]) + 128) * 0.00390625)
    np.testing.assert_allclose(res.raw_outputs(), res.outputs["probabilities"])
    host = android.AndroidRunner(tflite, scores="host")
    assert host.supports_predict is False and host.score_note == android.HOST_NOTE
    with pytest.raises(DeviceError, match="EDGERETINA_ANDROID_SCORES=host"):
        host.predict(x)


@pytest.mark.parametrize("mode,expect", [
    ("no-app", "the edgeretina demo app (org.edgeretina.demo) is not installed on 28011FDH2000B1"),
    ("no-activity", "cannot start the benchmark activity (Error type 3)"),
    ("never", "no benchmark result from 28011FDH2000B1 after 1 s"),
])
def test_flow_failures(fake_adb, monkeypatch, tflite, mode, expect):
    monkeypatch.setenv("FAKE_ADB_MODE", mode)
    runner = android.AndroidRunner(tflite, timeout_s=1)  # polls every 0.2 s
    with pytest.raises(DeviceError) as e:
        runner.time(None, runs=1, warmup=0)
    assert expect in _one_line(e.value)


def test_failed_run_on_phone_and_bad_json(tmp_path):
    d = json.loads(FIXTURE.read_text())
    d.update(status="error", error="GPU delegate: this model's ops are not supported by the GPU\nat ...",
             samples_ms=[], p50_ms=None)
    with pytest.raises(DeviceError) as e:
        android.parse_result(json.dumps(d))
    assert _one_line(e.value) == ("android: the benchmark failed on the phone: GPU delegate: this model's ops "
                                  "are not supported by the GPU")
    with pytest.raises(DeviceError) as e:
        android.parse_result("{\"schema\": \"something-else\"}", source="x.json")
    assert "x.json is not an edgeretina benchmark result" in _one_line(e.value)
    with pytest.raises(DeviceError) as e:
        android.parse_result("{ truncated", source="x.json")
    assert "x.json is not valid JSON" in _one_line(e.value)
    bad = json.loads(FIXTURE.read_text())
    bad["p50_ms"] = 99.0
    with pytest.raises(DeviceError, match="disagrees with its samples"):
        android.parse_result(json.dumps(bad))


def test_runner_argument_errors(fake_adb, tmp_path, tflite):
    with pytest.raises(DeviceError, match="no such model file"):
        android.AndroidRunner(tmp_path / "missing.tflite")
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK")
    with pytest.raises(DeviceError, match="runs .tflite models only"):
        android.AndroidRunner(keras_file)
    with pytest.raises(DeviceError, match="unknown delegate 'npu'"):
        android.AndroidRunner(tflite, delegate="npu")
    with pytest.raises(DeviceError, match="unknown scores source 'cloud'"):
        android.AndroidRunner(tflite, scores="cloud")


# -------------------------------------------------------------------------------- the phone's own outputs
def test_predict_returns_the_phones_outputs(fake_adb, real_tflite, monkeypatch):
    """predict(x) pushes the inputs, the (fake) phone runs the model on each and returns raw outputs; the
    runner turns them into probabilities like the host runner and compares with the same file on the host."""
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.benchmarks.runners.litert import LiteRTRunner

    mf = open_model(real_tflite)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    runner = android.load(real_tflite, meta=mf.meta)
    probs = runner.predict(x)
    host = LiteRTRunner.from_model(mf).predict(x)
    np.testing.assert_array_equal(probs, host)  # same kernels here: the very same numbers
    f = runner.facts if runner.result else {}
    assert runner.scored.outputs["n"] == 5
    assert runner.vs_host == {"n": 5, "max_abs_diff": 0.0, "identical": 5, "argmax_differs": 0}
    calls = fake_adb()
    start = next(c for c in calls if c[2:5] == ["shell", "am", "start"])
    assert "--es" in start and start[start.index("inputs") + 1].endswith("-inputs.npy")
    assert sum(1 for c in calls if c[2:4] == ["shell", "rm"]) == 2  # model and inputs removed
    assert f == {}
    monkeypatch.setenv("EDGERETINA_ANDROID_CHUNK", "2")  # 5 inputs in 3 phone runs: same numbers
    n_starts = sum(1 for c in fake_adb() if c[2:5] == ["shell", "am", "start"])
    np.testing.assert_array_equal(android.load(real_tflite, meta=mf.meta).predict(x), host)
    assert sum(1 for c in fake_adb() if c[2:5] == ["shell", "am", "start"]) == n_starts + 3
    monkeypatch.delenv("EDGERETINA_ANDROID_CHUNK")
    monkeypatch.setenv("FAKE_ADB_MODE", "perturb")
    swapped = android.load(real_tflite, meta=mf.meta).predict(x)
    np.testing.assert_array_equal(swapped[0], host[0][::-1])
    np.testing.assert_array_equal(swapped[1:], host[1:])


def test_an_app_without_outputs_is_a_one_line_error(fake_adb, real_tflite, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_MODE", "old-app")
    with pytest.raises(DeviceError) as e:
        android.load(real_tflite, meta={}).predict(np.zeros((2, 32, 32, 3), np.float32))
    assert "returned no per-image outputs" in _one_line(e.value) and "EDGERETINA_ANDROID_SCORES=host" in str(e.value)


def test_bench_android_scores_come_from_the_phone(fake_adb, real_tflite, tmp_path, monkeypatch):
    """edgeretina bench --device cpu --device android with the fake adb: the android row's AUROC and flips
    are computed from the phone's outputs (a phone that swaps one image's outputs shows that flip), the
    row says so, and EDGERETINA_ANDROID_SCORES=host gives the host's scores, labelled as the fallback."""
    from click.testing import CliRunner

    from edgeretina.cli import cli

    def bench(out):
        r = CliRunner().invoke(cli, ["bench", str(real_tflite), "--data", "synthetic:n=24,size=64", "--device", "cpu",
                                     "--device", "android", "--out", str(out), "--runs", "1", "--warmup", "0",
                                     "--stability", "off", "--n-boot", "0"])
        assert r.exit_code == 0, r.output
        rep = json.loads((out / "report.json").read_text())
        return {row["device"]: row for row in rep["variants"]}, rep["dataset"]["n_images"]

    monkeypatch.setenv("FAKE_ADB_MODE", "perturb")
    rows, n = bench(tmp_path / "phone")
    cpu, phone = rows["cpu"], rows["android"]
    assert phone["note"] == android.PHONE_NOTE and phone["device_info"]["scores"] == "phone"
    assert phone["device_info"]["vs_host"]["argmax_differs"] == 1
    assert cpu["flip_rate"] == 0 and phone["flip_rate"] == pytest.approx(1 / n)  # the one swapped image
    monkeypatch.setenv("EDGERETINA_ANDROID_SCORES", "host")
    rows, _ = bench(tmp_path / "host")
    assert rows["android"]["note"] == android.HOST_NOTE and rows["android"]["flip_rate"] == 0
    assert rows["android"]["device_info"]["scores"].startswith("host")


# ------------------------------------------------------------------------------------ through the CLI
@pytest.fixture(scope="module")
def real_tflite(tmp_path_factory):
    """A real .tflite with edgeretina metadata (tiny CNN), so the CLI gets as far as the device check."""
    from edgeretina._keras import keras, tf
    from edgeretina.converters.metadata import embed_metadata
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig

    inp = keras.Input((32, 32, 3))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(inp)))
    data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out)).convert()
    cfg = RunConfig(task="glaucoma", kind="binary", labels=("normal", "glaucoma"), positive_index=1,
                    preprocessing=Pipeline.default(32, "tf").to_json(), input_size=32, threshold=0.5)
    p = tmp_path_factory.mktemp("m") / "model_float32.tflite"
    p.write_bytes(embed_metadata(data, cfg.to_dict()))
    return p


@pytest.mark.parametrize("adb_state", ["missing", "unauthorized"])  # each case starts a CLI process
def test_cli_bench_android_one_line_error(real_tflite, tmp_path, adb_state, request):
    env = dict(os.environ)
    if adb_state == "missing":
        env["PATH"] = str(tmp_path / "empty")
        env.pop("EDGERETINA_ADB", None)
        expect = "adb not found on PATH"
    else:
        request.getfixturevalue("fake_adb")
        env = dict(os.environ)
        env["FAKE_ADB_DEVICES"] = adb_state
        expect = "is unauthorized"
    p = subprocess.run([sys.executable, "-m", "edgeretina", "bench", str(real_tflite), "--data", "synthetic",
                        "--device", "android", "--out", str(tmp_path / "report")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stdout + p.stderr
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: android: ") and expect in err[0], p.stderr
    assert "Traceback" not in p.stderr


# ------------------------------------------------------------------------------------------- real adb
@pytest.fixture
def real_adb(monkeypatch):
    """Debian's adb (apt-get install adb) with a private server port, killed afterwards."""
    import shutil

    exe = shutil.which("adb")
    if exe is None:
        pytest.skip("adb not installed (apt-get install adb)")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "15037")
    monkeypatch.delenv("EDGERETINA_ADB", raising=False)
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    yield exe
    subprocess.run([exe, "kill-server"], capture_output=True, timeout=30)


def test_real_adb_without_a_phone(real_adb):
    """The real adb (its server started on a private port): no phone here → the one-line error."""
    listing = subprocess.run([real_adb, "devices", "-l"], capture_output=True, text=True, timeout=60).stdout
    if android.parse_devices(listing):
        pytest.skip("a device is attached to this machine")
    assert listing.startswith("List of devices attached")
    with pytest.raises(DeviceError) as e:
        android.check()
    assert "no device attached" in _one_line(e.value)
