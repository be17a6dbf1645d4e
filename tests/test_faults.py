"""Fault injection (issue 14): kills, interrupts, concurrent runs, a full disk, tampered artifacts, corrupt and
hostile images, symlink loops. Every case asserts the exit status, the one-line ``error:`` message and that
the output folder holds exactly the previous artifacts or exactly the new ones.

Faults are injected with the ``EDGERETINA_FAULT`` hook (``edgeretina.io.fault_point``: a signal or an
``OSError`` at a named point) into real runs of tiny real models (``test_export_cli.tiny_run``: a 16-px conv
net; the bench uses the embedded synthetic set), so the suite needs no ``../shared`` and runs in about a
minute and a half on 2 cores (most of it the four subprocesses that get killed)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli

sys.path.insert(0, str(Path(__file__).parent))
from test_export_cli import tiny_run  # noqa: E402 - the tiny run dir the export CLI tests use

SYNTH = "synthetic:n=48,size=64,seed=3"


def _snapshot(d: Path) -> dict[str, str]:
    """name → sha256 of every file in ``d`` (hidden ones too)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def _invoke(args, env: dict | None = None, monkeypatch=None):
    if env and monkeypatch is not None:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if env and monkeypatch is not None:
        for k in env:
            monkeypatch.delenv(k)
    return r


def _one_error(r, code: int = 2) -> str:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert "Traceback" not in r.output, r.output
    errs = [ln for ln in lines if ln.startswith("error:")]
    assert len(errs) == 1 and lines[-1] == errs[0], r.output
    return errs[0]


def _subprocess(args, fault: str | None, timeout: int = 240, tmpdir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if tmpdir is not None:  # the process's own temp directory (TMPDIR): what it leaves there is its own
        env["TMPDIR"] = str(tmpdir)
    if fault:
        env["EDGERETINA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "edgeretina", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _no_debris(out: Path) -> None:
    left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and not p.name.endswith(".lock")]
    assert left == [], left
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two different tiny run dirs (A, B) and a calibration array."""
    root = tmp_path_factory.mktemp("faults")
    a = tiny_run(root / "A", dataset={"path": SYNTH})
    from edgeretina._keras import keras

    keras.utils.set_random_seed(1)
    b = tiny_run(root / "B", dataset={"path": SYNTH})
    b_model = keras.models.load_model(b / "model.keras", compile=False)
    b_model.set_weights([w + 0.05 for w in b_model.get_weights()])
    b_model.save(b / "model.keras")
    cal = root / "cal.npy"
    np.save(cal, np.random.default_rng(0).random((20, 16, 16, 3)).astype(np.float32))
    return {"A": a, "B": b, "cal": cal, "root": root}


def _export(run: Path, out: Path, cal: Path, *extra):
    return ["export", run, "--float32", "--int8", "--calib", cal, "--verify-n", "8", "--out", out, "-q", *extra]


@pytest.fixture(scope="module")
def golden_a(models):
    """One good export of model A, made once; each test works on its own copy."""
    out = models["root"] / "golden"
    r = CliRunner().invoke(cli, [str(a) for a in _export(models["A"], out, models["cal"])])
    assert r.exit_code == 0, r.output
    assert sorted(_snapshot(out)) == ["A_float32.tflite", "A_int8.tflite", "manifest.json"]
    return out


@pytest.fixture()
def exported_a(golden_a, tmp_path):
    """A folder holding a good export of model A (the 'previous export' every fault must leave intact)."""
    import shutil

    out = tmp_path / "D"
    shutil.copytree(golden_a, out)
    return out


# ------------------------------------------------------------------------------------------ export


@pytest.mark.parametrize("fault,code", [
    ("export:int8: convert=sigkill", -signal.SIGKILL),          # after the first variant was written
    ("publish:D=sigkill", -signal.SIGKILL),                     # at the publish step itself
    ("export:int8: verify in LiteRT=sigterm", 143),             # SIGTERM: cleaned up like Ctrl-C
])
def test_killed_export_leaves_the_previous_export(models, exported_a, fault, code, tmp_path, monkeypatch):
    out = exported_a
    before = _snapshot(out)
    # a private temp directory for the killed run and the next export: another process's export on the same
    # machine (its live SavedModel folder in the shared /tmp) is not this run's debris
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = _subprocess(_export(models["B"], out, models["cal"]), fault, tmpdir=tmp)
    left_by_kill = set(tmp.glob("edgeretina-sm-*"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    if code == 143:
        assert r.stderr.strip().splitlines()[-1] == "error: terminated (SIGTERM)", r.stderr
    # the converter's own lines stay out of the user's terminal (issue 16)
    assert "fully_quantize" not in r.stderr + r.stdout and "inference_type" not in r.stderr + r.stdout
    assert _snapshot(out) == before  # exactly the old files, byte for byte
    # the next export (in-process) removes what the killed one left, and publishes B whole
    r2 = CliRunner().invoke(cli, [str(a) for a in _export(models["B"], out, models["cal"])])
    assert r2.exit_code == 0, r2.output
    after = _snapshot(out)
    assert sorted(after) == ["B_float32.tflite", "B_int8.tflite", "manifest.json"]  # A's files are gone
    m = json.loads((out / "manifest.json").read_text())
    assert {Path(e["path"]).name: e["sha256"] for e in m["results"]} == \
        {k: v for k, v in after.items() if k.endswith(".tflite")}
    _no_debris(out)
    assert not [p for p in left_by_kill if p.exists()]  # the killed run's SavedModel folder is removed


def test_ctrl_c_mid_export_leaves_the_previous_export(models, exported_a, monkeypatch):
    import signal

    # Ctrl-C must raise KeyboardInterrupt here even if a library imported by an earlier test in this process
    # replaced Python's default SIGINT handler (the suite saw the interrupt swallowed that way)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = _snapshot(exported_a)
        r = _invoke(_export(models["B"], exported_a, models["cal"]),
                    {"EDGERETINA_FAULT": "export:int8: convert=sigint"}, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, old)
    assert _one_error(r, 130) == "error: interrupted"
    assert _snapshot(exported_a) == before
    _no_debris(exported_a)


def test_failure_part_way_leaves_the_previous_export(models, exported_a, monkeypatch):
    """A failing later variant (here: the disk fills up while writing it) publishes nothing."""
    before = _snapshot(exported_a)
    r = _invoke(_export(models["B"], exported_a, models["cal"]), {"EDGERETINA_FAULT": "write:B_int8.tflite=enospc"},
                monkeypatch)
    msg = _one_error(r)
    assert "B_int8.tflite" in msg and "no space left" in msg, msg
    assert _snapshot(exported_a) == before
    _no_debris(exported_a)


@pytest.fixture()
def small_fs(tmp_path):
    """A real 256 KB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode(errors='replace').strip()[:80]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_disk_during_export_leaves_the_previous_export(models, small_fs):
    out = small_fs / "D"
    r = CliRunner().invoke(cli, [str(a) for a in _export(models["A"], out, models["cal"])])
    assert r.exit_code == 0, r.output
    before = _snapshot(out)
    st = os.statvfs(small_fs)
    (small_fs / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 6000))
    msg = _one_error(CliRunner().invoke(cli, [str(a) for a in _export(models["B"], out, models["cal"])]))
    assert "no space left on the device" in msg, msg
    assert _snapshot(out) == before
    _no_debris(out)


def test_concurrent_export_into_one_folder_is_refused(models, exported_a):
    from edgeretina.io import dir_lock

    before = _snapshot(exported_a)
    with dir_lock(exported_a, "edgeretina export"):  # another export holds the folder
        r = CliRunner().invoke(cli, [str(a) for a in _export(models["B"], exported_a, models["cal"])])
    msg = _one_error(r)
    assert "another edgeretina export is writing into this folder" in msg, msg
    assert _snapshot(exported_a) == before


def test_same_source_export_keeps_the_other_variants(models, exported_a):
    """Exporting fp16 of the same model adds it and keeps float32/int8 (unchanged files, still listed)."""
    before = _snapshot(exported_a)
    r = CliRunner().invoke(cli, ["export", str(models["A"]), "--fp16", "--verify-n", "0", "--out", str(exported_a),
                                 "-q"])
    assert r.exit_code == 0, r.output
    after = _snapshot(exported_a)
    assert sorted(after) == ["A_float32.tflite", "A_fp16.tflite", "A_int8.tflite", "manifest.json"]
    assert after["A_int8.tflite"] == before["A_int8.tflite"]
    m = json.loads((exported_a / "manifest.json").read_text())
    assert [e["variant"] for e in m["results"]] == ["float32", "fp16", "int8"]


def test_export_options_refuse_bad_combinations_in_the_python_api():
    from edgeretina.converters.export import ExportOptions
    from edgeretina.errors import ExportError

    with pytest.raises(ExportError, match="--sparsity only applies"):
        ExportOptions(variants=("int8",), sparsity=0.5)
    with pytest.raises(ExportError, match="--calib only applies"):
        ExportOptions(variants=("fp16",), calib="x")
    with pytest.raises(ExportError, match="--steps must be >= 1"):
        ExportOptions(variants=("qat",), steps=0)
    assert ExportOptions(variants=("pruned",)).sparsity == 0.5


# ------------------------------------------------------------------------------------------ bench


def _bench(models_dir: Path, out: Path, *extra):
    return ["bench", "--models", models_dir, "--data", SYNTH, "--split", "all", "--runs", "1", "--warmup", "0",
            "--timing-images", "2", "--n-boot", "0", "--stability", "off", "--out", out, *extra]


def test_bench_killed_while_writing_keeps_the_previous_report(exported_a, tmp_path):
    rep = tmp_path / "R"
    r = CliRunner().invoke(cli, [str(a) for a in _bench(exported_a, rep)])
    assert r.exit_code == 0, r.output
    before = _snapshot(rep)
    assert {"report.json", "report.md", "report.csv", "roc.png", "ballchart.png"} <= set(before)
    r = _subprocess(_bench(exported_a, rep), "write:roc.png=sigkill")
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert _snapshot(rep) == before


def test_bench_disk_full_is_one_line_and_keeps_the_previous_report(exported_a, tmp_path, monkeypatch):
    rep = tmp_path / "R"
    assert CliRunner().invoke(cli, [str(a) for a in _bench(exported_a, rep)]).exit_code == 0
    before = _snapshot(rep)
    r = _invoke(_bench(exported_a, rep), {"EDGERETINA_FAULT": "write:ballchart.png=enospc"}, monkeypatch)
    assert "ballchart.png: no space left on the device" in _one_error(r)
    assert _snapshot(rep) == before
    _no_debris(rep)


# ------------------------------------------------------------------------------------------ artifacts


def _image(tmp_path: Path, name: str = "eye.png", size: int = 96) -> Path:
    import cv2

    from edgeretina.data.synthetic import generate

    rgb = generate(n=1, size=size, seed=5)[0][0] if size >= 32 else np.full((size, size, 3), 90, np.uint8)
    p = tmp_path / name
    cv2.imwrite(str(p), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    return p


def _overwrite_weights(tflite: Path, run: Path) -> None:
    """Change the first conv kernel weight inside a float32 .tflite (found by its bytes, OHWI layout)."""
    from edgeretina._keras import keras

    k = keras.models.load_model(run / "model.keras", compile=False).layers[1].get_weights()[0]
    raw = np.ascontiguousarray(k.transpose(3, 0, 1, 2), dtype=np.float32).tobytes()
    data = bytearray(tflite.read_bytes())
    at = data.find(raw)
    assert at >= 0
    data[at:at + 4] = np.float32(k.transpose(3, 0, 1, 2).flat[0] + 0.5).tobytes()
    tflite.write_bytes(bytes(data))


def test_tampered_and_swapped_files_are_refused(models, exported_a, tmp_path):
    img = _image(tmp_path)
    f32, int8 = exported_a / "A_float32.tflite", exported_a / "A_int8.tflite"
    ok = CliRunner().invoke(cli, ["predict", str(f32), str(img)])
    assert ok.exit_code == 0, ok.output
    original = f32.read_bytes()
    _overwrite_weights(f32, models["A"])  # weights overwritten, metadata intact
    msg = _one_error(CliRunner().invoke(cli, ["predict", str(f32), str(img)]))
    assert "does not match manifest.json" in msg and "--no-verify-manifest" in msg, msg
    msg = _one_error(CliRunner().invoke(cli, [str(a) for a in _bench(exported_a, tmp_path / "R")]))
    assert "does not match manifest.json" in msg
    forced = CliRunner().invoke(cli, ["predict", "--no-verify-manifest", str(f32), str(img)])
    assert forced.exit_code == 0 and "warning: --no-verify-manifest" in forced.output, forced.output
    int8.write_bytes(original)  # the float32 file swapped in for int8
    assert "does not match manifest.json" in _one_error(CliRunner().invoke(cli, ["predict", str(int8), str(img)]))


def _with_metadata(src: Path, dst: Path, **changes) -> Path:
    from edgeretina.converters.metadata import embed_metadata, read_metadata

    meta = read_metadata(src)
    meta.update(changes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(embed_metadata(src.read_bytes(), meta))
    return dst


@pytest.mark.parametrize("changes,needle", [
    ({"task": "dr", "kind": "multiclass", "labels": ["0", "1", "2", "3", "4"], "positive_index": None},
     "metadata names 5 labels"),
    ({"threshold": "high"}, "threshold \"high\" is not a number in [0, 1]"),
    ({"threshold": float("nan")}, "is not a number in [0, 1]"),
    ({"preprocessing": {"steps": [{"name": "resize", "params": {"size": 20000}}, {"name": "scale"}]}},
     "between 8 and 1024 px"),
])
def test_metadata_that_does_not_fit_the_graph_is_refused(exported_a, tmp_path, changes, needle):
    bad = _with_metadata(exported_a / "A_float32.tflite", tmp_path / "loose" / "m.tflite", **changes)
    img = _image(tmp_path)
    msg = _one_error(CliRunner().invoke(cli, ["predict", str(bad), str(img)]))
    assert needle in msg, msg


def test_two_rows_with_one_variant_name_are_refused(models, exported_a, tmp_path):
    other = tmp_path / "E"
    r = CliRunner().invoke(cli, ["export", str(models["B"]), "--float32", "--verify-n", "0", "--out", str(other), "-q"])
    assert r.exit_code == 0, r.output
    msg = _one_error(CliRunner().invoke(cli, [str(a) for a in _bench(exported_a, tmp_path / "R", other)]))
    assert "two models are named 'float32'" in msg, msg


# ------------------------------------------------------------------------------------------ images


def _corrupt_jpeg(tmp_path: Path) -> tuple[Path, Path]:
    """A real 512-px JPEG and a copy with 8 KB of its scan data overwritten (markers intact)."""
    import cv2

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    img = np.stack([(xx / 2) % 255, (yy / 2) % 255, ((xx + yy) / 4) % 255], -1).astype(np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 0) + rng.integers(0, 24, img.shape, dtype=np.uint8)
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    b = bytearray(good.read_bytes())
    start = b.find(b"\xff\xda") + 2000
    junk = rng.integers(0, 255, 8192, dtype=np.uint8)
    junk[junk == 0xFF] = 0  # no new markers
    b[start:start + 8192] = junk.tobytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(b))
    return good, bad


def test_corrupt_jpeg_is_refused_or_skipped(exported_a, tmp_path):
    good, bad = _corrupt_jpeg(tmp_path)
    model = str(exported_a / "A_float32.tflite")
    msg = _one_error(CliRunner().invoke(cli, ["predict", model, str(good), str(bad)]))
    assert "bad.jpg: corrupt JPEG data" in msg, msg
    r = CliRunner().invoke(cli, ["predict", "--on-bad-image", "skip", model, str(good), str(bad)])
    assert r.exit_code == 0, r.output
    assert "good.jpg" in r.stdout and "bad.jpg" not in r.stdout
    assert "warning: skipped" in r.output and "bad.jpg" in r.output


def _image_folder_with_a_corrupt_jpeg(tmp_path: Path, per_class: int) -> Path:
    """An image-folder dataset (normal/, glaucoma/) of ``per_class`` good JPEGs each plus glaucoma/bad.jpg."""
    import shutil

    good, bad = _corrupt_jpeg(tmp_path)
    root = tmp_path / "set"
    for cls in ("normal", "glaucoma"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            shutil.copy(good, root / cls / f"{i}.jpg")
    shutil.copy(bad, root / "glaucoma" / "bad.jpg")
    return root


def test_data_summary_verify_full_reports_a_corrupt_jpeg(tmp_path):
    root = _image_folder_with_a_corrupt_jpeg(tmp_path, 3)
    msg = _one_error(CliRunner().invoke(cli, ["data", "summary", str(root), "--task", "glaucoma", "--verify", "full"]))
    assert "bad.jpg: corrupt JPEG data" in msg, msg
    r = CliRunner().invoke(cli, ["data", "summary", str(root), "--task", "glaucoma", "--verify", "full",
                                 "--on-bad-image", "skip"])
    assert r.exit_code == 0 and "bad.jpg" in r.output, r.output


def test_bench_refuses_a_corrupt_jpeg_in_the_dataset(exported_a, tmp_path):
    root = _image_folder_with_a_corrupt_jpeg(tmp_path, 4)
    args = [str(a) for a in _bench(exported_a, tmp_path / "R")]
    args[args.index(SYNTH)] = str(root)
    msg = _one_error(CliRunner().invoke(cli, args))
    assert "bad.jpg: corrupt JPEG data" in msg, msg
    assert not (tmp_path / "R").exists() or not any((tmp_path / "R").iterdir())


def _png_bomb(path: Path, side: int = 30000) -> Path:
    """A valid 1-bit greyscale PNG of side×side pixels (about 100 KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_and_tiny_images_are_refused_from_the_header(exported_a, tmp_path):
    bomb = _png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1_000_000
    model = str(exported_a / "A_float32.tflite")
    msg = _one_error(CliRunner().invoke(cli, ["predict", model, str(bomb)]))
    assert "30000×30000 image (900 MP) exceeds the 50 MP limit" in msg, msg
    tiny = _image(tmp_path, "tiny.png", size=1)
    msg = _one_error(CliRunner().invoke(cli, ["predict", model, str(tiny)]))
    assert "smaller than 64 px" in msg, msg


def test_symlink_loop_in_a_dataset_is_one_line(tmp_path):
    root = tmp_path / "set"
    for cls in ("normal", "glaucoma"):
        (root / cls).mkdir(parents=True)
        _image(root / cls, "0.png")
    os.symlink("loop.png", root / "normal" / "loop.png")  # points at itself
    msg = _one_error(CliRunner().invoke(cli, ["data", "summary", str(root), "--task", "glaucoma"]))
    assert "loop.png" in msg and "symbolic links" in msg, msg


# ------------------------------------------------------------------------------------------ arguments, OS errors


@pytest.mark.parametrize("args,needle", [
    (["--input-size", "0"], "--input-size must be between 32 and 1024"),
    (["--input-size", "10000"], "--input-size must be between 32 and 1024"),
    (["--epochs-warmup", "0", "--epochs-finetune", "0"], "--allow-untrained"),
])
def test_train_refuses_bad_arguments_before_any_work(tmp_path, args, needle):
    r = CliRunner().invoke(cli, ["train", "--data", SYNTH, "--task", "glaucoma", "--arch", "mobilenetv2",
                                 "--weights", "none", "--out", str(tmp_path / "run"), *args])
    assert needle in _one_error(r)
    assert not (tmp_path / "run").exists()


def test_explain_into_an_unwritable_place_is_one_line(models, tmp_path, monkeypatch):
    img = _image(tmp_path)
    r = _invoke(["explain", models["A"], img, "--out", tmp_path / "heat.png"],
                {"EDGERETINA_FAULT": "write:heat.png=eacces"}, monkeypatch)
    assert "heat.png: permission denied" in _one_error(r)
    assert not (tmp_path / "heat.png").exists()


def test_os_errors_map_to_one_line():
    import errno

    from edgeretina.cli import os_error_line

    assert os_error_line(OSError(errno.ENOSPC, "No space left on device", "/x/report.json")) == \
        "/x/report.json: no space left on the device (No space left on device)"
    assert "symbolic links" in os_error_line(OSError(errno.ELOOP, "Too many levels of symbolic links", "a"))
    assert os_error_line(OSError(errno.ECONNRESET, "reset")) is None


def test_publish_without_rename_exchange_and_rollback(tmp_path, monkeypatch):
    """Where the filesystem cannot exchange two folders, publish renames the old one aside first; a run
    killed between the two renames is rolled back by the next writer."""
    import edgeretina.io as eio

    out = tmp_path / "D"
    with eio.staged_dir(out) as s:
        (s / "a.txt").write_text("old")
    monkeypatch.setattr(eio, "_exchange", lambda a, b: False)
    with eio.staged_dir(out) as s:
        (s / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new"
    os.rename(out, tmp_path / ".D.old-dead")  # what a kill right after the first rename leaves
    with eio.staged_dir(out) as s:
        assert (s / "a.txt").read_text() == "new"  # restored, then carried into the new staging folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [".D.lock", "D"]
