"""Optic-disc locator (issue 20): FOV-rim immunity, honest confidence, the pipeline's detection info, and
measured accuracy on the committed hand-checked disc positions (tests/fixtures/disc_positions.json)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeretina.data.synthetic import generate

def _android_core_tests():
    """tests/test_android_core.py as a module (pytest runs with --import-mode=importlib: no sys.path entry)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "_edgeretina_test_android_core"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_android_core.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


_ac = _android_core_tests()
kotlin = _ac.kotlin  # the android core build fixture (kotlinc once per source state, cached jar; skips without it)
from edgeretina.data import count_disc_flags
from edgeretina.preprocess import (DiscDetection, Pipeline, PipelineInfo, locate_disc,
                                   onh_crop, onh_crop_with_info)


@pytest.fixture(scope="module")
def syn():
    return generate(6, seed=3, size=256)


def test_apply_with_info_maps_the_detection_to_input_pixels(syn):
    p = Pipeline.default(96, onh=True)
    for img, inf in zip(syn[0], syn[2]):
        big = cv2.copyMakeBorder(img, 20, 20, 50, 50, cv2.BORDER_CONSTANT)  # fov_crop removes the border
        x, info = p.apply_with_info(big)
        np.testing.assert_array_equal(x, p.apply(big))
        assert isinstance(info, PipelineInfo) and isinstance(info.disc, DiscDetection)
        cx, cy = inf["disc_center"]
        assert np.hypot(info.disc.x - (cx + 50), info.disc.y - (cy + 20)) < 0.6 * inf["disc_radius"]
        assert p.detect_disc(big) == info.disc
        img_only, info2 = p.apply_image_with_info(big)
        np.testing.assert_array_equal(img_only, p.apply_image(big)) and info2 == info
    plain = Pipeline.default(96)
    assert plain.apply_with_info(syn[0][0])[1] == PipelineInfo(None) and not plain.uses_onh


def test_onh_crop_with_info_is_the_step(syn):
    img = syn[0][1]
    crop, det = onh_crop_with_info(img)
    np.testing.assert_array_equal(crop, onh_crop(img))
    assert det == locate_disc(img) and det.found and 0.5 <= det.confidence <= 1.0 and det.reason == ""


def test_bright_fov_rim_never_wins(syn):
    """Camera B: a bright yellow ring at the FOV edge. The disc is still found (or the step says it is not)."""
    for img, inf in zip(syn[0], syn[2]):
        ringed = img.copy()
        c = tuple(int(round(v)) for v in inf["fov_center"])
        cv2.circle(ringed, c, int(inf["fov_radius"] - 4), (255, 235, 90), 7)
        d = locate_disc(ringed)
        err = np.hypot(d.x - inf["disc_center"][0], d.y - inf["disc_center"][1]) / inf["disc_radius"]
        assert err <= 0.6 or not d.found, (d, inf["disc_center"])


def test_no_disc_is_flagged_with_a_reason():
    flat = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(flat, (100, 100), 90, (120, 60, 30), -1)
    d = locate_disc(flat)
    assert not d.found and d.flagged and d.fallback and d.reason == "no disc-like spot" and d.confidence == 0
    black = np.zeros((64, 64, 3), np.uint8)
    assert locate_disc(black).reason == "no field of view"


def test_two_equal_discs_are_ambiguous():
    img = np.zeros((256, 256, 3), np.uint8)
    cv2.circle(img, (128, 128), 120, (170, 80, 40), -1)
    for x in (80, 176):
        cv2.circle(img, (x, 128), 16, (240, 200, 150), -1)
    d = locate_disc(img)
    assert not d.found and d.reason == "ambiguous" and d.confidence < 0.5 and not d.fallback


def test_count_disc_flags(syn):
    from edgeretina.data.records import Record

    flat = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(flat, (100, 100), 90, (120, 60, 30), -1)
    recs = [Record(f"s{i}", f"mem#{i}", None, 0, image=im) for i, im in enumerate(list(syn[0][:3]) + [flat])]
    c = count_disc_flags(recs, Pipeline.default(96, onh=True), workers=1)
    assert c["n"] == 4 and c["flagged"] >= 1 and c["found"] == 4 - c["flagged"] and "s3" in c["flagged_keys"]
    assert c["reasons"].get("no disc-like spot") == 1 and c["fallback"] == 1
    assert count_disc_flags(recs, None, workers=1)["n"] == 4  # no onh_crop in the pipeline: default recipe's


# ------------------------------------------------------------------------------ measured accuracy (issue 20)
def _check_targets(stats):
    from edgeretina.benchmarks.disc_eval import TARGET_ERR, TARGET_OK

    assert stats["n"] >= 30
    # disc inside the crop on ≥ 97 %; a miss only counts as fine when the locator flagged it
    assert stats["ok_rate"] >= TARGET_OK, stats
    # centre within half a disc radius on ≥ 90 % (unflagged far-off centres count against it)
    assert stats["err_ok_rate"] >= TARGET_ERR, stats
    assert stats["no_disc_flagged"] == stats["no_disc"], stats  # photos without a visible disc are flagged


@pytest.mark.parametrize("source", ["synthetic_hard", "synthetic_hard_holdout"])
def test_disc_targets_on_hard_synthetic(source):
    """Always runs: FOV rims, camera-B rings, exudates, glare, 3:2 frames with known discs (seed 0 was
    looked at while tuning, seed 1 was not)."""
    from edgeretina.benchmarks.disc_eval import evaluate, load_fixture

    fx = load_fixture()
    out = evaluate(fx, sources=[source])
    _check_targets(out["sources"][source])
    # the committed truth is what the generator draws today (a generator change must update the fixture)
    for r in out["results"][source]:
        t = fx["sources"][source]["images"][r["image"]]
        assert r["truth"] == t, r["image"]


@pytest.mark.parametrize("source", ["odir", "aptos"])
def test_disc_targets_on_hand_checked_real_photos(shared, source):
    from edgeretina.benchmarks.disc_eval import evaluate, load_fixture

    out = evaluate(load_fixture(), shared, sources=[source])
    _check_targets(out["sources"][source])
    _check_targets_holdout = out["sources"][f"{source} (holdout only)"]  # labelled after tuning
    assert _check_targets_holdout["n"] >= 20 and _check_targets_holdout["ok_rate"] >= 0.97


def test_data_summary_and_preview_report_flagged_crops(tmp_path):
    from click.testing import CliRunner

    from edgeretina.cli import cli

    r = CliRunner().invoke(cli, ["data", "summary", "synthetic:n=16,size=128", "--onh"])
    assert r.exit_code == 0, r.output
    assert "onh crops 0 of 16 flagged" in r.output and "per split:" in r.output
    r = CliRunner().invoke(cli, ["data", "summary", "synthetic:n=16,size=128", "--onh", "--json"])
    import json

    s = json.loads(r.output)
    assert s["disc_flags"]["n"] == 16 and sum(s["disc_flags"]["per_split"].values()) == s["disc_flags"]["flagged"]
    r = CliRunner().invoke(cli, ["data", "summary", "synthetic:n=16,size=128"])
    assert "onh crops" not in r.output  # opt-in: the locator runs only with --onh / an ONH pipeline
    out = tmp_path / "p.png"
    r = CliRunner().invoke(cli, ["data", "preview", "synthetic:n=8,size=128", "-o", str(out), "-n", "4", "--json"])
    assert r.exit_code == 0, r.output
    p = json.loads(r.output)
    assert len(p["images"]) == 4 and all({"found", "confidence", "reason"} <= set(d["disc"]) for d in p["images"])
    assert p["discs_found"] + p["discs_flagged"] == 4


# ------------------------------------------------------------------------------ Android core parity (issue 20)
def test_kotlin_locator_matches_python_on_the_hand_checked_images(kotlin, tmp_path):
    """android_demo/core's DiscLocator (the onh_crop step of the app) against the Python locator on the
    committed set (the real photos only with ../shared): same centre within 1 px at the 192-px work
    resolution, same flag and reason. Also runs the locator's JUnit tests. Skips without kotlinc/JUnit."""
    import json

    from edgeretina.benchmarks.disc_eval import iter_source, load_fixture
    from edgeretina.paths import shared_dir

    p = kotlin("org.junit.runner.JUnitCore", "org.edgeretina.core.DiscLocatorTest")
    assert "OK (" in p.stdout, p.stdout
    fx = load_fixture()
    # real photos + the seed-0 hard synthetic set, without its 2,500 x 2,048 frames (15 MB each to hand over;
    # their only extra step, the INTER_AREA reduction, is bit-exact-tested in test_android_core)
    images = [(f"{name}/{k}", img) for name, spec in fx["sources"].items() if name != "synthetic_hard_holdout"
              for k, img, _ in iter_source(name, spec, shared_dir()) if img.shape[0] * img.shape[1] <= 1.5e6]
    pipe = Pipeline.default(224, onh=True)
    jobs = []
    for i, (_, img) in enumerate(images):
        f = tmp_path / f"{i}.rgb"
        f.write_bytes(np.ascontiguousarray(img).tobytes())
        jobs.append({"rgb": str(f), "width": int(img.shape[1]), "height": int(img.shape[0])})
    (tmp_path / "pipeline.json").write_text(json.dumps(pipe.to_json()))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    got = json.loads(kotlin(_ac.TOOL, "locate", tmp_path / "pipeline.json", tmp_path / "jobs.json").stdout)
    assert len(got) == len(images) >= 96
    for (name, img), k in zip(images, got):
        d = pipe.detect_disc(img)
        s = 192 / max(img.shape[:2])
        assert s * np.hypot(d.x - k["x"], d.y - k["y"]) <= 1.0, (name, d, k)
        assert (d.found, d.reason) == (k["found"], k["reason"]), (name, d, k)
