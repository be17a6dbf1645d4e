"""``edgeretina calibrate``: site calibration of the operating point (issue 12, part 4).

A tiny CNN really trained on the synthetic glaucoma set (a few seconds) is exported to float32 .tflite with
a deliberately poor shipped threshold (0.999: it refers almost nobody, as the issue's other-camera table
shows); a differently seeded synthetic set is the "local site". Everything runs through LiteRT.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli

DEV = "synthetic:n=240,size=96,seed=3"
LOCAL = "synthetic:n=120,size=96,seed=11"
SHIPPED_THRESHOLD = 0.999
SIZE = 48


def _sha(p) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{"export": folder with tiny_float32.tflite + manifest.json, "loose": a copy in a folder without
    a manifest, "plain": the same graph without metadata}."""
    from edgeretina._keras import keras, tf
    from edgeretina.converters import export_model
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig

    root = tmp_path_factory.mktemp("calib")
    pipe = Pipeline.default(SIZE, "tf", onh=True)
    ds = open_dataset(DEV, "glaucoma")
    parts = ds.split("70/10/20", seed=0)
    X, y = load_arrays(parts["train"], pipe)
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h), name="tiny")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(X, y, epochs=30, batch_size=32, verbose=0)
    cfg = RunConfig(task="glaucoma", kind="binary", labels=("normal", "glaucoma"), positive_index=1,
                    preprocessing=pipe.to_json(), arch="tiny-cnn", input_size=SIZE, threshold=SHIPPED_THRESHOLD,
                    dataset={"path": DEV, "format": "synthetic", "split": {"scheme": "70/10/20", "seed": 0}})
    rep = export_model(model, ["float32"], root / "export", config=cfg, verify_n=16)
    f32 = Path(rep["float32"].path)
    loose = root / "loose"
    loose.mkdir()
    shutil.copy(f32, loose / "model.tflite")
    plain = root / "plain.tflite"
    plain.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return {"export": f32.parent, "f32": f32, "loose": loose / "model.tflite", "plain": plain, "root": root}


def _run(*args):
    return CliRunner().invoke(cli, ["calibrate", *map(str, args)])


def _local_scores(model_path):
    """p(glaucoma) of every LOCAL image through the bench's own LiteRT runner, and the labels."""
    from edgeretina.benchmarks.devices import DEVICES, Device
    from edgeretina.benchmarks.harness import load_images
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.data import open_dataset

    m = open_model(model_path)
    recs = open_dataset(LOCAL, "glaucoma").records
    p = DEVICES[Device.CPU].load(m, 1).predict(load_images(recs, m.config.preprocessing))
    return np.asarray(p)[:, 1], np.asarray([r.y for r in recs])


def _local_png(path: Path, i: int = 0) -> Path:
    import cv2

    from edgeretina.data import open_dataset

    rec = open_dataset(LOCAL, "glaucoma").records[int(i)]
    cv2.imwrite(str(path), cv2.cvtColor(rec.image, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------------------------------ happy paths


def test_sensitivity_target_sidecar_metadata_and_untouched_original(tiny, tmp_path):
    from edgeretina.benchmarks.calibrate import graph_sha256, verify_record
    from edgeretina.converters.metadata import read_metadata
    from edgeretina.run import RunConfig

    src = tiny["loose"]
    before = _sha(src)
    out = src.parent / "site.tflite"
    r = _run(src, "--data", LOCAL, "--sensitivity", "0.9", "--out", out, "--n-boot", "200")
    assert r.exit_code == 0, r.output
    assert "old (metadata)" in r.stdout and "new (sensitivity ≥ 0.9)" in r.stdout and "AUROC" in r.stdout
    assert _sha(src) == before  # original untouched
    meta, old_meta = read_metadata(out), read_metadata(src)
    thr = meta["threshold"]
    assert isinstance(thr, float) and thr < SHIPPED_THRESHOLD
    # the new threshold meets the target on the local set (scored independently here)
    s, y = _local_scores(out)
    assert (s[y == 1] >= thr).mean() >= 0.9
    assert (s[y == 1] >= SHIPPED_THRESHOLD).mean() < 0.9  # ...which the shipped one did not
    # where it came from
    cal = meta["calibration"]
    assert cal["dataset"]["path"] == LOCAL and cal["dataset"]["split"] == "all"
    assert (cal["n"], cal["n_pos"], cal["n_neg"]) == (120, 60, 60)
    assert cal["target"] == {"kind": "sensitivity", "value": 0.9}
    assert cal["old_threshold"] == SHIPPED_THRESHOLD and cal["threshold"] == thr
    assert cal["source_sha256"] == before
    assert dt.datetime.fromisoformat(cal["date"]).utcoffset() == dt.timedelta(0)
    assert cal["new"]["sensitivity"] >= 0.9 and "sensitivity ≥ 0.9" in meta["threshold_source"]
    # same schema keys as before (the Android core and RunConfig read task/labels/threshold/output)
    assert set(old_meta) <= set(meta)
    drop = ("threshold", "threshold_source", "calibration")
    assert {k: v for k, v in meta.items() if k not in drop} == {k: v for k, v in old_meta.items() if k not in drop}
    assert RunConfig.from_dict(meta).threshold == thr
    # graph identical apart from the metadata; LiteRT outputs equal
    assert graph_sha256(out.read_bytes()) == graph_sha256(src.read_bytes())
    s0, _ = _local_scores(src)
    np.testing.assert_array_equal(s, s0)
    # sidecar (no manifest.json in this folder) with the file's sha256
    side = out.parent / "site.tflite.calibration.json"
    rec = json.loads(side.read_text())
    assert rec["sha256"] == _sha(out) and rec["graph_sha256"] == graph_sha256(src.read_bytes())
    assert verify_record(out)["sha256"] == _sha(out)
    assert not (out.parent / "manifest.json").exists()
    # the same call again refuses to overwrite; --overwrite replaces it
    r = _run(src, "--data", LOCAL, "--sensitivity", "0.9", "--out", out, "--n-boot", "0")
    assert r.exit_code == 2 and "already exists" in r.output
    r = _run(src, "--data", LOCAL, "--youden", "--out", out, "--n-boot", "0", "--overwrite")
    assert r.exit_code == 0, r.output
    assert read_metadata(out)["calibration"]["target"] == {"kind": "youden"}
    assert json.loads(side.read_text())["sha256"] == _sha(out)


def test_export_folder_gets_a_manifest_entry(tiny):
    from edgeretina.benchmarks.calibrate import calibrate, verify_record
    from edgeretina.converters.metadata import read_metadata

    f32 = tiny["f32"]
    man_path = f32.parent / "manifest.json"
    results_before = json.loads(man_path.read_text())["results"]
    out = f32.parent / "tiny_float32_site.tflite"
    res = calibrate(f32, LOCAL, out, n_boot=100)
    assert res.record_kind == "manifest" and Path(res.record) == man_path
    assert res.target == {"kind": "youden"}  # the default target
    man = json.loads(man_path.read_text())
    assert man["results"][:-1] == results_before  # the export's own entries untouched
    entry = man["results"][-1]
    assert entry["file"] == out.name and entry["sha256"] == _sha(out) == res.sha256
    assert entry["threshold"] == read_metadata(out)["threshold"] == res.new.threshold
    assert entry["source_sha256"] == _sha(f32) and entry["variant"] == "float32-calibrated"
    assert not (f32.parent / (out.name + ".calibration.json")).exists()
    assert verify_record(out)["sha256"] == res.sha256
    # predict accepts the calibrated file inside the export folder (its manifest lists it)
    img = _local_png(f32.parent.parent / "eye0.png")
    r = CliRunner().invoke(cli, ["predict", str(out), str(img)])
    assert r.exit_code == 0 and f"threshold {res.new.threshold:.3f}" in r.output, r.output
    # re-calibrating the same output replaces its entry, never duplicates it
    res2 = calibrate(f32, LOCAL, out, sensitivity=0.95, overwrite=True, n_boot=0)
    results = json.loads(man_path.read_text())["results"]
    assert results[:-1] == results_before
    entry = results[-1]
    assert entry["sha256"] == res2.sha256 == _sha(out) and entry["calibration"]["target"]["value"] == 0.95
    # the result: in-sample figures, CIs around them, stability
    assert res.n == 120 and res.n_pos == 60 and 0.5 < res.auroc <= 1.0
    assert res.auroc_ci95[0] <= res.auroc <= res.auroc_ci95[1]
    assert res.old.threshold == SHIPPED_THRESHOLD
    for op in (res.old, res.new):
        assert op.sensitivity_ci95[0] <= op.sensitivity <= op.sensitivity_ci95[1]
        assert op.tp + op.fn == 60 and op.tn + op.fp == 60
    assert res.stability is not None and res.stability.threshold_ci95[0] <= res.stability.threshold_ci95[1]
    assert json.loads(json.dumps(res.to_dict()))["new"]["threshold"] == res.new.threshold


def test_predict_and_bench_use_the_calibrated_threshold(tiny, tmp_path):
    """An image scored between the new and the old threshold: 'no referral' with the shipped model,
    'refer' with the calibrated copy — predict reads the threshold from the metadata. bench likewise."""
    from edgeretina.benchmarks.calibrate import calibrate
    from edgeretina.benchmarks.harness import run_bench
    from edgeretina.benchmarks.predict import predict_images

    src = tiny["f32"]
    out = tmp_path / "site.tflite"
    res = calibrate(src, LOCAL, out, sensitivity=0.9, n_boot=0)
    new_t = res.new.threshold
    assert new_t < SHIPPED_THRESHOLD
    s, _ = _local_scores(src)
    between = [i for i in np.argsort(s) if new_t <= s[i] < SHIPPED_THRESHOLD]
    assert between, "no local image between the thresholds"
    img = _local_png(tmp_path / "eye.png", between[0])
    (old,), (new,) = predict_images(src, [img]), predict_images(out, [img])
    assert old.threshold == SHIPPED_THRESHOLD and new.threshold == new_t
    assert old.score == pytest.approx(new.score, abs=1e-6) and new_t <= new.score < SHIPPED_THRESHOLD
    assert (old.decision, new.decision) == ("no referral", "refer")
    r = CliRunner().invoke(cli, ["predict", str(out), str(img)])
    assert r.exit_code == 0 and "refer" in r.output and f"threshold {new_t:.3f}" in r.output
    from edgeretina.benchmarks.robustness import BenchOptions

    rep = run_bench([out], LOCAL, split="all", n_boot=0, runs=1, warmup=0, timing_images=1,
                    options=BenchOptions(stability=False))
    assert rep.to_dict()["settings"]["threshold"] == new_t


# ------------------------------------------------------------------------------------------ refusals


def _aptos(tmp_path) -> Path:
    d = tmp_path / "aptos"
    (d / "train_images").mkdir(parents=True)
    (d / "train.csv").write_text("id_code,diagnosis\n")
    return d


def _multilabel_model(tiny, tmp_path) -> Path:
    from edgeretina.converters.metadata import embed_metadata, read_metadata

    meta = dict(read_metadata(tiny["f32"]), task="multitask", kind="multilabel", labels=["glaucoma", "dr"],
                positive_index=None, threshold=[0.5, 0.5])
    p = tmp_path / "multi.tflite"
    p.write_bytes(embed_metadata(tiny["plain"].read_bytes(), meta))
    return p


REFUSALS = {
    # name: (model, data, extra args, words the one-line error must contain)
    "single-class": ("f32", "synthetic:n=30,size=96,seed=5,glaucoma_fraction=0", (), ["all 30", "both classes"]),
    "few-positives": ("f32", "synthetic:n=60,size=96,seed=5,glaucoma_fraction=0.2", (), ["only 12 positive", "at least 20"]),
    "few-negatives": ("f32", "synthetic:n=60,size=96,seed=5,glaucoma_fraction=0.8", (), ["only 12 negative", "at least 20"]),
    "other-task-set": ("f32", "APTOS", (), ["APTOS", "cannot serve task 'glaucoma'"]),
    "other-task-flag": ("f32", LOCAL, ("--task", "referable-dr"), ["trained for task 'glaucoma'", "referable-dr"]),
    "no-metadata": ("plain", LOCAL, (), ["no 'edgeretina' metadata"]),
    "multilabel": ("MULTI", LOCAL, (), ["supports binary screening tasks"]),
    "keras-run-dir": ("DIR", LOCAL, (), ["export the run first"]),
    "both-targets": ("f32", LOCAL, ("--youden", "--sensitivity", "0.9"), ["choose one target"]),
    "bad-sensitivity": ("f32", LOCAL, ("--sensitivity", "1.5"), ["between 0 and 1"]),
    "out-is-input": ("f32", LOCAL, ("OUT=INPUT",), ["is the input model"]),
    "out-under-a-file": ("f32", LOCAL, ("OUT=FILE",), ["not a directory"]),
    "out-not-tflite": ("f32", LOCAL, ("OUT=TXT",), ["must be a .tflite"]),
    "out-is-export-variant": ("loose", LOCAL, ("OUT=VARIANT", "--overwrite"), ["exported variant listed"]),
    "out-folder-bad-manifest": ("f32", LOCAL, ("OUT=BADMAN",), ["unreadable manifest"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_one_line_exit_2_nothing_written(tiny, tmp_path, case):
    model, data, extra, words = REFUSALS[case]
    model = {"f32": tiny["f32"], "loose": tiny["loose"], "plain": tiny["plain"],
             "DIR": tiny["root"]}.get(model) or \
        _multilabel_model(tiny, tmp_path)
    data = _aptos(tmp_path) if data == "APTOS" else data
    out = tmp_path / "new" / "site.tflite"
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    (tmp_path / "badman").mkdir()
    (tmp_path / "badman" / "manifest.json").write_text("{not json")
    outs = {"OUT=INPUT": model, "OUT=FILE": blocker / "site.tflite", "OUT=TXT": tmp_path / "site.txt",
            "OUT=VARIANT": tiny["export"] / "tiny_float32.tflite", "OUT=BADMAN": tmp_path / "badman" / "site.tflite"}
    args = [a for a in extra if a not in outs]
    out = next((outs[a] for a in extra if a in outs), out)
    export_before = {p.name: _sha(p) for p in tiny["export"].iterdir()}
    model_before = _sha(model) if Path(model).is_file() else None
    r = _run(model, "--data", data, "--out", out, *args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output
    assert not (tmp_path / "new").exists() and not (tmp_path / "site.txt").exists()
    assert [p.name for p in (tmp_path / "badman").iterdir()] == ["manifest.json"]
    assert not list(tmp_path.rglob("*.calibration.json"))
    assert {p.name: _sha(p) for p in tiny["export"].iterdir()} == export_before
    if model_before:
        assert _sha(model) == model_before
