"""`edgeretina export`: every bad input is one `error:` line with exit code 2 (never a traceback); a good
run prints one Ultralytics-style line per variant. Tiny models keep this fast."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli
from edgeretina.converters import select_variants
from edgeretina.converters.calib import stratified_indices
from edgeretina.converters.variants import ALL, Variant, parse_variant, variants_markdown
from edgeretina.errors import ExportError



def tiny_run(run_dir: Path, size: int = 16, extra=None, dataset: dict | None = None) -> Path:
    """A tiny (untrained) conv model saved as a run dir — for CLI error paths and metadata, not accuracy.
    ``extra``: a Keras layer inserted after the conv (e.g. one with no int8 kernel)."""
    from edgeretina._keras import keras
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import MODEL_FILE, RunConfig
    from edgeretina.tasks import task_spec

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    if extra is not None:
        x = extra(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    x = keras.layers.Dense(2, name="head_logits")(x)
    out = keras.layers.Activation("softmax", name="head_probs")(x)
    model = keras.Model(inp, out)
    spec = task_spec("glaucoma")
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / MODEL_FILE)
    RunConfig(task="glaucoma", kind=spec.kind.value, labels=spec.labels,
              preprocessing=Pipeline.default(size, "unit", fov=False).to_json(), input_size=size,
              positive_index=1, threshold=0.5, dataset=dataset or {}).save(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture(scope="module")
def calib_npy(tmp_path_factory):
    p = tmp_path_factory.mktemp("cal") / "cal.npy"
    np.save(p, np.random.default_rng(0).random((20, 16, 16, 3)).astype(np.float32))
    return p


def _err(args) -> str:
    r = CliRunner().invoke(cli, ["export", *map(str, args)])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in r.output, r.output
    assert sum(ln.startswith("error:") for ln in lines) == 1
    return lines[-1]


def test_missing_path(tmp_path):
    assert "no such file" in _err([tmp_path / "nope"])


def test_not_a_model(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    assert "not a Keras model file" in _err([f])


def test_corrupt_keras_file(tmp_path, tiny):
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.keras").write_bytes(b"garbage")
    (d / "config.json").write_text((tiny / "config.json").read_text())
    assert "cannot load Keras model" in _err([d, "--float32"])


def test_model_without_config(tmp_path, tiny):
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.keras").write_bytes((tiny / "model.keras").read_bytes())
    assert "no config.json" in _err([d])


def test_unknown_preprocessing(tmp_path, tiny):
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.keras").write_bytes((tiny / "model.keras").read_bytes())
    cfg = json.loads((tiny / "config.json").read_text())
    cfg["preprocessing"] = {"steps": [{"name": "sharpen_magic", "params": {}}]}
    (d / "config.json").write_text(json.dumps(cfg))
    assert "preprocessing" in _err([d, "--float32"])


@pytest.mark.parametrize("s", ["0", "1", "1.5", "-0.2"])
def test_sparsity_out_of_range(tiny, s):
    assert "--sparsity must be in (0, 1)" in _err([tiny, "--pruned", "--sparsity", s])


@pytest.mark.parametrize("flags,needle", [
    (["--all", "--int8"], "--all conflicts with --int8"),
    (["--pruned", "--fp16"], "--pruned conflicts with --fp16"),
    (["--int8", "--sparsity", "0.5"], "--sparsity only applies"),
    (["--fp16", "--calib", "x"], "--calib only applies"),
    (["--float32", "--steps", "10"], "--steps only applies"),
])
def test_conflicting_flags(tiny, flags, needle):
    assert needle in _err([tiny, *flags])


def test_unwritable_output(tiny, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert "cannot create output directory" in _err([tiny, "--float32", "--out", f])
    assert "cannot create output directory" in _err([tiny, "--float32", "--out", f / "sub"])


def test_int8_without_dataset_or_calib(tiny, tmp_path):
    assert "--calib" in _err([tiny, "--int8", "--out", tmp_path])


def test_calib_too_few_images(tiny, tmp_path):
    import cv2

    d = tmp_path / "few"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.png"), np.full((32, 32, 3), 100, np.uint8))
    assert "need at least" in _err([tiny, "--int8", "--calib", d, "--out", tmp_path / "o"])


def test_calib_wrong_shape_and_dtype(tiny, tmp_path):
    p = tmp_path / "bad.npy"
    np.save(p, np.zeros((20, 32, 32, 3), np.float32))
    assert "shape" in _err([tiny, "--int8", "--calib", p, "--out", tmp_path / "o"])
    np.save(p, np.zeros((20, 16, 16, 3), np.uint8))
    assert "preprocessed float" in _err([tiny, "--int8", "--calib", p, "--out", tmp_path / "o"])
    t = tmp_path / "cal.txt"
    t.write_text("x")
    assert "folder of images" in _err([tiny, "--int8", "--calib", t, "--out", tmp_path / "o"])


def test_calib_folder_with_unreadable_image(tiny, tmp_path):
    import cv2

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(20):
        cv2.imwrite(str(d / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert "broken.jpg" in _err([tiny, "--int8", "--calib", d, "--out", tmp_path / "o"])


def test_op_without_int8_kernel(tmp_path, calib_npy):
    from edgeretina._keras import keras, tf

    @keras.saving.register_keras_serializable("edgeretina_tests")
    class Sin(keras.layers.Layer):
        def call(self, x):
            return tf.math.sin(x)

    run = tiny_run(tmp_path / "sin", extra=Sin())
    msg = _err([run, "--int8", "--calib", calib_npy, "--out", tmp_path / "o"])
    assert "SIN" in msg and "--allow-float-fallback" in msg
    assert not list((tmp_path / "o").glob("*.tflite"))
    r = CliRunner().invoke(cli, ["export", str(run), "--int8", "--calib", str(calib_npy), "--allow-float-fallback",
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["results"][0]["verification"]["float_ops"] == ["SIN"]


def test_good_run_prints_one_line_per_variant(tiny, calib_npy, tmp_path):
    r = CliRunner().invoke(cli, ["export", str(tiny), "--float32", "--fp16", "--dynamic", "--int8",
                                 "--calib", str(calib_npy), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "export success" in ln]
    assert [ln.split(":")[0] for ln in lines] == ["float32", "fp16", "dynamic", "int8"]
    assert all("MB" in ln and "s, saved as" in ln for ln in lines)
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == [
        "tiny_dynamic.tflite", "tiny_float32.tflite", "tiny_fp16.tflite", "tiny_int8.tflite"]
    assert "manifest:" in r.output


def test_variant_registry_and_flag_selection():
    assert select_variants() == (Variant.FLOAT32, Variant.INT8)
    assert select_variants(pruned=True) == (Variant.PRUNED,)
    assert select_variants(pruned=True, int8=True) == (Variant.PRUNED_INT8,)
    assert select_variants(pruned=True, qat=True, float32=True) == (Variant.FLOAT32, Variant.PRUNED, Variant.PQAT)
    assert select_variants(all_=True) == ALL
    assert parse_variant("pruned_int8") is Variant.PRUNED_INT8
    with pytest.raises(ExportError, match="did you mean 'int8'"):
        parse_variant("int9")
    table = variants_markdown()
    assert all(f"`{v.value}`" in table for v in Variant)


def test_stratified_calibration_keeps_every_class():
    y = [0] * 90 + [1] * 9 + [2] * 1
    idx = stratified_indices(y, 20, seed=0)
    got = [y[i] for i in idx]
    assert len(idx) == 20 and len(set(idx)) == 20
    assert got.count(2) == 1 and got.count(1) in (1, 2) and got.count(0) in (17, 18)
    ml = [(1.0, 0.0), (0.0, 1.0)] * 10
    assert len(stratified_indices(ml, 6)) == 6


def test_io_float_interface(tiny, calib_npy, tmp_path):
    from edgeretina.converters import export_model, read_metadata

    rep = export_model(tiny, ["int8"], tmp_path, calib=calib_npy, io="float", verify_n=16)
    r = rep["int8"]
    assert r.interface["input"]["dtype"] == "float32" and r.interface["output"]["dtype"] == "float32"
    assert read_metadata(r.path)["export"]["io"] == "float" and r.verification["float_ops"] == []


class _Interrupting(np.ndarray):
    """Calibration images that raise KeyboardInterrupt part-way through the converter's calibration."""

    def __iter__(self):
        for i, x in enumerate(np.asarray(self)):
            if i == 3:
                raise KeyboardInterrupt
            yield x


def test_interrupted_export_leaves_no_file(tiny, calib_npy, tmp_path, monkeypatch):
    """Ctrl-C inside the converter (during int8 calibration): the finished variant stays complete, the
    interrupted one leaves neither a .tflite nor a temp file, and no manifest claims it."""
    import edgeretina.converters.calib as calib
    from edgeretina.converters import export_model, read_metadata

    real = calib.from_path
    monkeypatch.setattr(calib, "from_path", lambda *a, **k: real(*a, **k).view(_Interrupting))
    with pytest.raises(KeyboardInterrupt):
        export_model(tiny, ["float32", "int8"], tmp_path, calib=calib_npy, verify_n=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_float32.tflite"]
    read_metadata(tmp_path / "tiny_float32.tflite")


def test_failing_converter_leaves_no_file(tiny, calib_npy, tmp_path, monkeypatch):
    """An exception raised by the TFLite converter itself becomes a one-line ExportError; nothing is written."""
    from tensorflow.lite.python import lite

    from edgeretina.converters import export_model

    def boom(self):
        raise RuntimeError("error: 'tfl.conv_2d' op simulated converter failure\nmore MLIR lines")

    monkeypatch.setattr(lite.TFLiteSavedModelConverterV2, "convert", boom)
    with pytest.raises(ExportError, match="int8 conversion failed: 'tfl.conv_2d' op simulated converter failure"):
        export_model(tiny, ["int8"], tmp_path, calib=calib_npy, verify_n=0)
    assert list(tmp_path.iterdir()) == []
