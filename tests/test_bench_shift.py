"""``edgeretina bench --shift`` (camera-shift stress test), the decision-stability floor (``--stability``) and
``predict``'s borderline flag, end to end on a tiny REAL model: a 3-layer CNN trained for a few seconds on the
embedded synthetic fundus set (no ../shared needed), exported to float32 and int8 .tflite and run in LiteRT."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli

DATA = "synthetic:n=240,size=96,seed=5"
SHIFTS = ("jpeg", "defocus", "frame-3x2")  # given out of registry order on purpose


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Run dir (model.keras + config.json) of a tiny CNN on the ONH crop at 48 px (test AUROC ≈ 0.9) and its
    float32 / int8 exports. About 15 s on 2 cores."""
    from edgeretina._keras import keras
    from edgeretina.converters import export_model
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.metrics import youden_threshold
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig
    from edgeretina.train.run import save_clean_model

    ds = open_dataset(DATA, "glaucoma")
    parts = ds.split("70/10/20", seed=0)
    pipe = Pipeline.default(48, "tf", onh=True)
    x, y = load_arrays(parts["train"], pipe)
    xv, yv = load_arrays(parts["val"], pipe)
    keras.utils.set_random_seed(0)
    inp = keras.Input((48, 48, 3))
    h = inp
    for f in (8, 16, 32):
        h = keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")(h)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    pv = model.predict(xv, verbose=0)[:, 1]
    run = tmp_path_factory.mktemp("tiny") / "run"
    run.mkdir()
    cfg = RunConfig(task="glaucoma", kind="binary", labels=ds.spec.labels, preprocessing=pipe.to_json(),
                    arch="tiny-cnn", input_size=48, positive_index=1, threshold=float(youden_threshold(yv, pv)),
                    dataset={"path": DATA, "format": "synthetic", "split": {"scheme": "70/10/20", "seed": 0}})
    save_clean_model(model, run / "model.keras")
    cfg.save(run)
    export_model(run, ["float32", "int8"], run / "export", calib_n=32, verify_n=16,
                 borderline_band="off")  # no band in the metadata: predict's option is tested on its own
    return {"run": run, "export": run / "export", "threshold": cfg.threshold, "test": parts["test"]}


def _bench(tiny, out: Path, *extra):
    res = CliRunner().invoke(cli, ["bench", str(tiny["run"]), str(tiny["export"]), "--data", DATA, "--runs", "1",
                                   "--warmup", "0", "--timing-images", "2", "--n-boot", "0", "--out", str(out),
                                   *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res, json.loads((out / "report.json").read_text())


def _png(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 5


def _md_table(md: str, heading: str) -> list[list[str]]:
    """The first markdown table after ``heading`` (rows of cells, header first, separator dropped)."""
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        if not ln.startswith("|---"):
            rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def shifted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report"
    res, rep = _bench(tiny, out, "--shift", ",".join(SHIFTS))
    return out, res, rep


def test_shift_table_json_csv_plot(shifted):
    from edgeretina.benchmarks.report import SHIFT_COLUMNS

    out, res, rep = shifted
    n_models = len(rep["variants"])
    assert n_models == 3  # keras reference, float32, int8
    rows = rep["shifts"]
    assert len(rows) == n_models * (1 + 2 * len(SHIFTS))  # unshifted row + mild + severe per shift
    assert rep["settings"]["shift"] == ["frame-3x2", "defocus", "jpeg"]  # registry (acquisition) order
    keys = [c.key for c in SHIFT_COLUMNS]
    for r in rows:
        assert set(keys) <= set(r), set(keys) - set(r)
        assert r["level"] in ("mild", "severe", "none") and (r["level"] == "none") == (r["shift"] == "none")
        for k in ("auroc", "delta_auroc", "delta_auroc_self", "delta_auroc_vs_ref_shifted", "sensitivity",
                  "specificity", "flip_rate"):
            assert r[k] is not None and math.isfinite(r[k]), (r, k)
    by = {(r["name"], r["shift"], r["level"]): r for r in rows}
    ref_none = by[("keras", "none", "none")]
    assert ref_none["is_reference"] and ref_none["delta_auroc"] == 0 and ref_none["flip_rate"] == 0
    assert ref_none["auroc"] == pytest.approx(next(v for v in rep["variants"] if v["is_reference"])["auroc"])
    for (name, s, lv), r in by.items():
        own = by[(name, "none", "none")]
        ref = by[("keras", s, lv)]
        assert r["delta_auroc"] == pytest.approx(r["auroc"] - ref_none["auroc"])
        assert r["delta_auroc_self"] == pytest.approx(r["auroc"] - own["auroc"])
        assert r["delta_auroc_vs_ref_shifted"] == pytest.approx(r["auroc"] - ref["auroc"])
    # the float32 .tflite follows the Keras model under every shift
    for s in SHIFTS:
        for lv in ("mild", "severe"):
            assert abs(by[("float32", s, lv)]["delta_auroc_vs_ref_shifted"]) < 0.01
    # CSV: header = the column list, one line per row
    lines = (out / "shift.csv").read_text().splitlines()
    assert lines[0].split(",") == keys and len(lines) == 1 + len(rows)
    # markdown: the section and one table row per result
    md = (out / "report.md").read_text()
    table = _md_table(md, "## Camera-shift stress test")
    assert table[0] == [c.header for c in SHIFT_COLUMNS if c.header] and len(table) == 1 + len(rows)
    assert any(r[:3] == ["int8", "jpeg", "severe"] for r in table)
    _png(out / "shift.png")
    assert "shift.csv, shift.png" in res.stdout


def test_one_field_list_drives_json_md_csv(shifted):
    from edgeretina.benchmarks.report import VARIANT_COLUMNS, Report

    out, _, rep = shifted
    header = (out / "report.csv").read_text().splitlines()[0].split(",")
    assert header == [c.key for c in VARIANT_COLUMNS]
    for k in ("logit_shift", "logit_noise_sd", "near_threshold", "delta_auroc_ci_low", "grade_flip_rate",
              "flip_floor_ratio"):
        assert k in header
    for v in rep["variants"]:
        assert set(header) <= set(v), set(header) - set(v)
    report = Report.load(out)
    md = (out / "report.md").read_text()
    assert _md_table(md, "# edgeretina benchmark")[0] == [h for h, _ in report.columns()]
    assert "× floor" in [h for h, _ in report.columns()] and "κ" not in [h for h, _ in report.columns()]
    # the report reloads with its new sections intact
    assert len(report.shifts) == len(rep["shifts"]) and report.stability is not None
    assert Report.from_dict(report.to_dict()).to_dict() == report.to_dict()


def test_stability_floor_section(shifted):
    from edgeretina.benchmarks.report import STABILITY_COLUMNS
    from edgeretina.shifts import Benign

    out, res, rep = shifted
    st = rep["stability"]
    n = rep["dataset"]["n_images"]
    assert st["n_images"] == n and st["perturbations"] == [b.value for b in Benign]
    assert len(st["rows"]) == 3 * len(Benign)
    ref_rows = {r["perturbation"]: r for r in st["rows"] if r["is_reference"]}
    assert st["floor"] == ref_rows["jpeg-95"]["flip_rate"]
    assert st["floor_max"] == max(r["flip_rate"] for r in ref_rows.values())
    assert st["band"] == pytest.approx(1.96 * max(r["logit_change_sd"] for r in ref_rows.values()))
    assert st["band"] > 0 and 0 <= st["near_band"] <= 1
    for r in st["rows"]:
        assert 0 <= r["flip_rate"] <= 1 and r["logit_change_sd"] >= 0
        assert r["amplification"] is not None and math.isfinite(r["amplification"])
    for v in st["variants"]:
        for k in ("floor_ratio", "floor_max_ratio"):
            assert v[k] is not None and math.isfinite(v[k]), v
        assert v["floor_ratio"] == pytest.approx(v["flip_rate"] / max(st["floor"], 1 / n))
    for v in rep["variants"]:
        assert v["flip_floor_ratio"] is not None and math.isfinite(v["flip_floor_ratio"])
    # the float32 file flips what the Keras model flips under benign changes (same graph)
    f32 = {r["perturbation"]: r for r in st["rows"] if r["name"] == "float32"}
    for p, r in ref_rows.items():
        assert abs(f32[p]["flip_rate"] - r["flip_rate"]) <= 2 / n
    lines = (out / "stability.csv").read_text().splitlines()
    assert lines[0].split(",") == [c.key for c in STABILITY_COLUMNS] and len(lines) == 1 + len(st["rows"])
    md = (out / "report.md").read_text()
    assert "## Decision stability floor" in md and "JPEG-95 floor" in md
    table = _md_table(md, "## Decision stability floor")
    assert table[0][:3] == ["Variant", "Flips vs reference", "× JPEG-95 floor"] and len(table) == 4
    assert "stability: JPEG-95 floor" in res.stdout


def test_stability_off_and_no_shift(tiny, tmp_path):
    out = tmp_path / "r"
    res, rep = _bench(tiny, out, "--stability", "off")
    assert "stability" not in rep and "shifts" not in rep and rep["settings"]["stability"] is False
    assert not (out / "stability.csv").exists() and not (out / "shift.csv").exists()
    assert not (out / "shift.png").exists()
    md = (out / "report.md").read_text()
    assert "Decision stability floor" not in md and "× floor" not in md and "Camera-shift" not in md
    assert all(v["flip_floor_ratio"] is None for v in rep["variants"])
    assert "--stability off" in md  # the command line in the report


def test_library_options_are_deterministic(tiny):
    from edgeretina.benchmarks.harness import run_bench
    from edgeretina.benchmarks.robustness import BenchOptions

    opts = BenchOptions.make(shift="resolution", stability="off")
    kw = dict(runs=1, warmup=0, timing_images=1, n_boot=0, options=opts)
    a = run_bench([tiny["export"]], DATA, **kw)
    b = run_bench([tiny["export"]], DATA, **kw)
    assert a.stability is None and [r.to_dict() for r in a.shifts] == [r.to_dict() for r in b.shifts]
    assert {(r.shift, r.level) for r in a.shifts} == {("none", "none"), ("resolution", "mild"),
                                                      ("resolution", "severe")}


def test_unknown_shift_one_line_error(tiny, tmp_path):
    res = CliRunner().invoke(cli, ["bench", str(tiny["export"]), "--data", DATA, "--shift", "jpeg,blurr",
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown shift 'blurr'"), res.output
    assert not (tmp_path / "r" / "report.json").exists()


# ------------------------------------------------------------------------------------- predict borderline
@pytest.fixture(scope="module")
def photos(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    paths = []
    for i, r in enumerate(tiny["test"][:8]):
        p = d / f"eye{i}.png"
        cv2.imwrite(str(p), r.image[:, :, ::-1])
        paths.append(str(p))
    return paths


def test_predict_borderline_option(tiny, photos):
    from edgeretina.benchmarks.predict import _logit, predict_images

    model = str(tiny["export"] / "run_int8.tflite")
    plain = predict_images(model, photos)
    assert all(p.borderline is None and p.borderline_band is None for p in plain)  # no band: not judged
    dist = [abs(_logit(p.score) - _logit(p.threshold)) for p in plain]
    band = float(np.median(dist))
    marked = predict_images(model, photos, borderline=band)
    assert [p.borderline for p in marked] == [d <= band for d in dist]
    assert any(p.borderline for p in marked) and not all(p.borderline for p in marked)
    assert [p.decision for p in marked] == [p.decision for p in plain]  # the decision itself is unchanged
    res = CliRunner().invoke(cli, ["predict", model, *photos, "--borderline", str(band)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()[1:]
    assert ["borderline" in ln for ln in lines] == [p.borderline for p in marked]
    res = CliRunner().invoke(cli, ["predict", model, photos[0], "--borderline", str(band), "--json"])
    row = json.loads(res.stdout)
    assert row["borderline_band"] == pytest.approx(band) and isinstance(row["borderline"], bool)
    res = CliRunner().invoke(cli, ["predict", model, photos[0], "--borderline", "-1"])
    assert res.exit_code == 2


def test_predict_borderline_from_metadata(tiny, photos, tmp_path):
    import shutil

    from edgeretina.benchmarks.predict import predict_images

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run, ignore=shutil.ignore_patterns("export"))
    cfg = json.loads((run / "config.json").read_text())
    cfg["extra"] = dict(cfg.get("extra") or {}, borderline_band=100.0)  # everything is borderline
    (run / "config.json").write_text(json.dumps(cfg))
    preds = predict_images(run, photos[:3])
    assert all(p.borderline is True and p.borderline_band == 100.0 for p in preds)
    assert all(p.borderline is False for p in predict_images(run, photos[:3], borderline=0.0))  # option wins
    cfg["extra"]["borderline_band"] = "wide"
    (run / "config.json").write_text(json.dumps(cfg))
    res = CliRunner().invoke(cli, ["predict", str(run), photos[0]])
    assert res.exit_code == 2 and "borderline_band" in res.output and len(res.output.splitlines()) == 1


def test_mark_borderline_multilabel():
    from edgeretina.benchmarks.predict import Prediction, mark_borderline

    p = Prediction("x", "D", 0.6, "D", "refer", 0.6, [0.5, 0.5], {"N": 0.1, "D": 0.6})
    assert mark_borderline(p, 0.5).borderline is True  # D: |logit .6 − logit .5| = 0.405
    assert mark_borderline(p, 0.3).borderline is False
    assert mark_borderline(p, None).borderline is None
    q = Prediction("x", "c", 0.6, "c", "c", 0.6, None, {"a": 0.4, "c": 0.6})
    assert mark_borderline(q, 1.0).borderline is None  # no screening threshold
