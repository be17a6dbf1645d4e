"""Adapters and splits on the real shared data (ODIR-5K, APTOS-2019, RetinaMNIST) and the synthetic set."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli
from edgeretina.data import class_weights, detect_format, load_arrays, open_dataset
from edgeretina.data.splits import groups_on_two_sides
from edgeretina.preprocess import Pipeline


@pytest.fixture(scope="module")
def odir(shared):
    return open_dataset(shared / "data" / "odir", "glaucoma")


def _summary(args):
    r = CliRunner().invoke(cli, ["data", "summary", *map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_odir_glaucoma_summary_counts(shared):
    s = _summary([shared / "data" / "odir", "--task", "glaucoma"])
    assert s["format"] == "odir" and s["task"] == "glaucoma"
    assert s["classes"] == {"normal": 2224, "glaucoma": 256}
    assert s["n_patients"] == 2661 and s["n_images"] == 5070
    assert s["n_task_images"] == 2480
    assert s["patients_on_two_sides"] == 0 and s["groups_on_two_sides"] == 0
    assert s["suspect"] == "include" and s["glaucoma_suspected_only"] == 37
    assert sum(sum(c.values()) for c in s["splits"].values()) == 2480
    assert set(s) >= {"format", "task", "n_images", "n_patients", "classes", "splits", "problems"}
    # 70/10/20 by patient, stratified: glaucoma share within 2 points of the whole in every split
    for name, frac in (("train", .7), ("val", .1), ("test", .2)):
        n = sum(s["splits"][name].values())
        assert abs(n / 2480 - frac) < 0.03
        assert abs(s["splits"][name]["glaucoma"] / n - 256 / 2480) < 0.02


def test_odir_split_by_patient_both_eyes_same_side(odir):
    parts = odir.split("70/10/20", seed=3)
    assert not groups_on_two_sides(parts, "patient")
    side = {}
    for name, recs in parts.items():
        for r in recs:
            side.setdefault(r.patient, set()).add(name)
    two_eyes = [p for p in side if sum(r.patient == p for r in odir.records) == 2]
    assert len(two_eyes) > 500 and all(len(side[p]) == 1 for p in two_eyes)
    again = odir.split("70/10/20", seed=3)
    assert [r.key for r in again["test"]] == [r.key for r in parts["test"]]  # deterministic
    other = odir.split("70/10/20", seed=4)
    assert [r.key for r in other["test"]] != [r.key for r in parts["test"]]


def test_odir_suspect_exclude_and_other_tasks(shared):
    ex = open_dataset(shared / "data" / "odir", "glaucoma", suspect="exclude")
    assert ex.class_counts() == {"normal": 2224, "glaucoma": 219}
    od = open_dataset(shared / "data" / "odir", "odir")
    c = od.class_counts()
    assert len(od.records) == 5070 and c["G"] == 256 and c["N"] >= 2224 and c["D"] > 1000
    mt = open_dataset(shared / "data" / "odir", "multitask")
    assert mt.spec.labels == ("glaucoma", "dr") and mt.class_counts()["glaucoma"] == 256
    assert not groups_on_two_sides(mt.split(), "patient")


def test_odir_kfold_and_90_10(odir):
    folds = odir.kfold(5, seed=0)
    tests = [set(r.key for r in f["test"]) for f in folds]
    assert sum(len(t) for t in tests) == len(odir.records) and len(set().union(*tests)) == len(odir.records)
    for f in folds:
        assert not groups_on_two_sides(f, "patient") and not f["val"]
        assert f["test"] and sum(r.y for r in f["test"]) > 40
    p = odir.split("90/10")
    assert not p["val"] and abs(len(p["test"]) / len(odir.records) - 0.1) < 0.02
    assert len(odir.split("all")["test"]) == len(odir.records)


def test_aptos_grades_duplicates_never_straddle(shared):
    s = _summary([shared / "data" / "aptos", "--task", "dr"])
    assert s["format"] == "aptos"
    assert list(s["classes"].values()) == [1452, 293, 776, 149, 242]
    assert s["duplicate_groups"] == 77 and s["duplicate_label_conflicts"] > 0
    assert any("label conflict" in p for p in s["problems"])
    ds = open_dataset(shared / "data" / "aptos", "referable-dr")
    assert ds.class_counts() == {"non-referable": 1452 + 293, "referable": 776 + 149 + 242}
    for seed in (0, 1):
        assert not groups_on_two_sides(ds.split(seed=seed), "group")


def test_retinamnist_keeps_its_splits(shared):
    path = shared / "data" / "retinamnist" / "retinamnist.npz"
    assert detect_format(path).value == "npz"
    ds = open_dataset(path, "dr")
    parts = ds.split()
    assert {k: len(v) for k, v in parts.items()} == {"train": 1080, "val": 120, "test": 400}
    assert all(r.split == "val" for r in parts["val"])
    raw = np.load(path)
    np.testing.assert_array_equal(parts["test"][5].image, raw["test_images"][5])
    assert parts["test"][5].y == int(raw["test_labels"][5][0])
    X, y = load_arrays(parts["val"], Pipeline.default(32, "unit", fov=False))
    assert X.shape == (120, 32, 32, 3) and y.shape == (120,) and 0 <= X.min() and X.max() <= 1


def test_synthetic_format_and_class_weights():
    ds = open_dataset("synthetic:n=40,size=64,seed=1")
    assert ds.format == "synthetic" and len(ds.records) == 40 and ds.class_counts() == {"normal": 20, "glaucoma": 20}
    parts = ds.split()
    assert sum(len(v) for v in parts.values()) == 40
    w = class_weights(parts["train"], ds.spec)
    assert w[0] == pytest.approx(1.0) and w[1] == pytest.approx(1.0)


def test_class_weights_imbalanced(odir):
    w = class_weights(odir.split()["train"], odir.spec)
    assert w[1] / w[0] == pytest.approx(2224 / 256, rel=0.05)


def test_load_arrays_real_odir(odir):
    recs = odir.split()["val"][:8]
    X, y = load_arrays(recs, Pipeline.default(96, "tf"))
    assert X.shape == (8, 96, 96, 3) and X.dtype == np.float32 and y.dtype == np.int64
    assert -1 <= X.min() < -0.9 and X.max() <= 1


def test_data_preview_writes_contact_sheet(tmp_path):
    import cv2

    out = tmp_path / "sheet.png"
    r = CliRunner().invoke(cli, ["data", "preview", "synthetic:n=12,size=96", "-o", str(out), "-n", "6"])
    assert r.exit_code == 0, r.output
    assert "optic disc found in 6" in r.output
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape == (2 * 160, 4 * 320, 3)
