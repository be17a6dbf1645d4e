"""Issue 18's ONH-view options of the two-view pipeline (``onh_blur``, ``subpixel``, ``diameters``) and test-time
averaging (``edgeretina.tta``): real ODIR photos through OpenCV, the JSON contract, the CLI refusals."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli
from edgeretina.errors import DataError, EdgeRetinaError
from edgeretina.preprocess import (Pipeline, crop_bilinear, decode_image, fov_crop, locate_disc, subpixel_peak,
                                   two_view_with_info)
from edgeretina.shifts import apply_benign
from edgeretina.tta import MOVES, averaged_scores, move

BASE = Pipeline.default(96, "tf", two_view=True)


@pytest.fixture(scope="module")
def photos(shared):
    files = sorted((shared / "data" / "odir" / "images").glob("*.jpg"))
    if len(files) < 100:
        pytest.skip("ODIR images not found")
    return [decode_image(files[i]) for i in (3, 211, 977, 1500, 2400, 3333)]


def test_optional_params_stay_out_of_the_json_unless_set():
    js = BASE.to_json()
    tv = next(s for s in js["steps"] if s["name"] == "two_view")["params"]
    assert "onh_blur" not in tv and "subpixel" not in tv  # older apps read a model trained without them
    p = BASE.with_onh_view(onh_blur=0.7, subpixel=True)
    tv = next(s for s in p.to_json()["steps"] if s["name"] == "two_view")["params"]
    assert tv["onh_blur"] == 0.7 and tv["subpixel"] is True
    assert Pipeline.from_json(p.to_json()) == p
    assert BASE.with_onh_view(onh_blur=0.0, subpixel=False) == BASE
    with pytest.raises(DataError, match="onh_blur"):
        BASE.with_onh_view(onh_blur=-1.0)
    with pytest.raises(DataError, match="two-view"):
        Pipeline.default(96, "tf").with_onh_view(onh_blur=1.0)


def test_crop_bilinear_is_a_copy_at_whole_pixels_and_interpolates_between():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert np.array_equal(crop_bilinear(img, 7.0, 5.0, 20), img[5:25, 7:27])
    assert np.array_equal(crop_bilinear(img, 7.01, 5.0, 20), img[5:25, 7:27])  # the 1/16-px grid
    half = crop_bilinear(img, 7.5, 5.0, 20).astype(int)
    want = (img[5:25, 7:27].astype(int) * 128 * 256 + img[5:25, 8:28].astype(int) * 128 * 256 + (1 << 15)) >> 16
    assert np.array_equal(half, want)
    edge = crop_bilinear(img, -3.0, -2.0, 10)  # zero outside the image
    assert edge[:2].max() == 0 and edge[:, :3].max() == 0 and np.array_equal(edge[2:, 3:], img[:8, :7])


def test_subpixel_peak_finds_the_vertex_of_a_parabola():
    yy, xx = np.mgrid[0:20, 0:30].astype(np.float32)
    m = -((xx - 12.3) ** 2) - 0.5 * (yy - 7.8) ** 2
    x, y = subpixel_peak(m, 12, 8)
    assert x == pytest.approx(12.3, abs=1e-3) and y == pytest.approx(7.8, abs=1e-3)
    assert subpixel_peak(m, 0, 8)[0] == 0.0  # at the map border: integer kept


def test_onh_blur_is_opencvs_gaussian_of_the_onh_view(photos):
    img = fov_crop(photos[0])
    plain, det0 = two_view_with_info(img, 96)
    blurred, det1 = two_view_with_info(img, 96, onh_blur=1.0)
    assert (det0.x, det0.y) == (det1.x, det1.y)
    assert np.array_equal(blurred[:, :96], plain[:, :96])  # the whole-fundus view is untouched
    assert np.array_equal(blurred[:, 96:], cv2.GaussianBlur(np.ascontiguousarray(plain[:, 96:]), (0, 0), 1.0))


def test_subpixel_window_follows_a_moved_eye(photos):
    """A 2-px move of the eye behind the fixed aperture: the sub-pixel window's ONH view changes less than the
    whole-pixel window's (which moves by 0 or ~2 px), and its centre moves by about the 2 px."""
    sub = BASE.with_onh_view(subpixel=True)
    d_pix, d_sub, moves = [], [], []
    for i, rgb in enumerate(photos):
        moved = apply_benign(rgb, "shift-2px", seed=[0, i])
        for pipe, acc in ((BASE, d_pix), (sub, d_sub)):
            a, b = pipe.apply_image(rgb), pipe.apply_image(moved)
            acc.append(np.abs(a[:, 96:].astype(int) - b[:, 96:]).mean())
        det0, det1 = sub.detect_disc(rgb), sub.detect_disc(moved)
        moves.append(np.hypot(det1.x - det0.x, det1.y - det0.y))
        assert det0.x != round(det0.x) or det0.y != round(det0.y) or det1.x != round(det1.x)
    assert np.median(d_sub) < 0.7 * np.median(d_pix), (d_sub, d_pix)
    assert 1.0 <= np.median(moves) <= 4.0, moves


def test_locator_subpixel_stays_within_half_a_work_pixel(photos):
    img = fov_crop(photos[1])
    a, b = locate_disc(img), locate_disc(img, subpixel=True)
    s = max(img.shape[:2]) / 192
    assert abs(a.x - b.x) <= 0.5 * s + 1e-9 and abs(a.y - b.y) <= 0.5 * s + 1e-9
    assert (a.found, a.reason, a.diameter) == (b.found, b.reason, b.diameter)


def test_tta_moves_each_view_on_its_own_and_averages_logits():
    x = np.arange(2 * 4 * 8 * 1, dtype=np.float32).reshape(2, 4, 8, 1)
    m = move(x, 1, 0, two_view=True)
    assert np.array_equal(m[:, :, 1:4], x[:, :, 0:3]) and np.array_equal(m[:, :, 0], x[:, :, 0])  # left view
    assert np.array_equal(m[:, :, 5:8], x[:, :, 4:7]) and np.array_equal(m[:, :, 4], x[:, :, 4])  # right view
    assert np.array_equal(move(x, 0, 0), x)

    def score(b):  # a "model" whose logit is the mean pixel
        return 1 / (1 + np.exp(-b.reshape(len(b), -1).mean(1) / 30))
    want = np.mean([b.reshape(2, -1).mean(1) / 30 for b in (move(x, dx, dy, True) for dx, dy in MOVES[:4])], 0)
    np.testing.assert_allclose(averaged_scores(score, x, 4, True), 1 / (1 + np.exp(-want)), rtol=1e-6)
    with pytest.raises(EdgeRetinaError, match="1 to"):
        averaged_scores(score, x, 0)


@pytest.mark.parametrize("args, msg", [
    (["--onh-blur", "1"], "need --crop two-view"),
    (["--crop", "two-view", "--cv-tta", "4"], "--cv-tta needs --cv"),
])
def test_train_refuses_misplaced_options(tmp_path, args, msg):
    r = CliRunner().invoke(cli, ["train", "--data", "synthetic:n=20,size=64", "--task", "glaucoma", "--arch",
                                 "mobilenetv2", "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 2 and msg in r.output, r.output
    assert not (tmp_path / "run").exists()


def test_stability_study_choice_and_page():
    """The study's choice: the fewest JPEG-95 / 2-px CV flips among levers within 0.003 pooled AUROC of base,
    one model run preferred at equal flips; the page names it and says the target is missed."""
    from edgeretina.benchmarks import stability_study as S

    def cv(auroc, j, s, C=3e-4):
        sh = {"jpeg-95": {"flip_rate": j, "logit_change_sd": 0.1, "benign": True},
              "shift-2px": {"flip_rate": s, "logit_change_sd": 0.2, "benign": True}}
        return {"seconds": 60.0, "cv": {"pooled": {"auroc": auroc, "auroc_ci_low": auroc - 0.03,
                                                   "auroc_ci_high": auroc + 0.03}, "mean": auroc, "sd": 0.03,
                                        "threshold": 0.4, "shifted": sh, "linear_head_C": [C] * 5,
                                        "threshold_margin": {"share_within": {"0.1": 0.05, "0.25": 0.12, "0.5": 0.25}}}}
    rows = [S.summarise(S.LEVERS["base"], cv(0.856, 0.026, 0.052)),
            S.summarise(S.LEVERS["subpixel_blur1"], cv(0.854, 0.024, 0.034)),
            S.summarise(S.LEVERS["tta4"], cv(0.858, 0.020, 0.037)),
            S.summarise(S.LEVERS["blur1"], cv(0.840, 0.01, 0.01))]  # steadiest, but costs AUROC
    pick, why = S.choose(rows)
    assert pick == "subpixel_blur1" and "fewest model runs" in why
    md = S.render(rows, pick, why, "test machine", 5, "plain")
    assert "**subpixel_blur1**" in md and "missed by every lever" in md and "4× the model latency" in md
