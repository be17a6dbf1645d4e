"""Camera shifts and benign re-acquisition perturbations (edgeretina.shifts) and the ``camera`` augmentation
policy, on real synthetic-fundus images through OpenCV."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeretina import shifts
from edgeretina.augment import POLICIES, augment_batch, get_policy
from edgeretina.data.synthetic import generate
from edgeretina.errors import EdgeRetinaError
from edgeretina.preprocess import Pipeline
from edgeretina.shifts import BENIGN, SHIFTS, Benign, Level, Shift


@pytest.fixture(scope="module")
def photos():
    return generate(3, seed=7, size=192)[0]


@pytest.fixture(scope="module")
def model_view():
    """What a model sees: the default Pipeline's image steps (FOV crop, pad, resize to 96)."""
    return Pipeline.default(96, "unit").apply_image


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_registries_cover_the_issue():
    assert len(SHIFTS) == len(Shift) == 14 and len(BENIGN) == len(Benign) == 7
    for d in SHIFTS.values():
        assert d.amount(0.0) == d.identity and d.amount("mild") == d.mild and d.amount(Level.SEVERE) == d.severe
        assert abs(d.mild - d.identity) < abs(d.severe - d.identity)
    assert SHIFTS[Shift.JPEG].mild == 70 and SHIFTS[Shift.JPEG].severe == 30
    assert SHIFTS[Shift.RESOLUTION].mild == 0.5 and SHIFTS[Shift.RESOLUTION].severe == 0.25
    assert shifts.parse_shifts("all") == tuple(SHIFTS)
    assert shifts.parse_shifts("jpeg, defocus") == (Shift.DEFOCUS, Shift.JPEG)  # registry order
    with pytest.raises(EdgeRetinaError, match="unknown shift 'jpg' \\(did you mean 'jpeg'\\?\\)"):
        shifts.parse_shifts("jpg")
    with pytest.raises(EdgeRetinaError, match="mild or severe"):
        shifts.apply_shift(np.zeros((8, 8, 3), np.uint8), "jpeg", "extreme")
    with pytest.raises(EdgeRetinaError, match="RGB uint8"):
        shifts.apply_shift(np.zeros((8, 8), np.float32), "jpeg")


@pytest.mark.parametrize("name", list(Shift), ids=str)
def test_shift_deterministic_and_mild_below_severe(photos, model_view, name):
    img = photos[0]
    a = shifts.apply_shift(img, name, "mild", seed=[3, 0])
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    if not SHIFTS[name].reshapes:
        assert a.shape == img.shape
    np.testing.assert_array_equal(a, shifts.apply_shift(img, name, "mild", seed=[3, 0]))
    np.testing.assert_array_equal(shifts.apply_shift(img, name, 0.0, seed=1), img)  # strength 0 = unchanged
    # the distance in what the model sees grows from none to mild to severe (mean over images and seeds)
    mild = np.mean([_rmse(model_view(p), model_view(shifts.apply_shift(p, name, "mild", [s, i])))
                    for i, p in enumerate(photos) for s in range(2)])
    severe = np.mean([_rmse(model_view(p), model_view(shifts.apply_shift(p, name, "severe", [s, i])))
                      for i, p in enumerate(photos) for s in range(2)])
    assert 0 < mild < severe, (name, mild, severe)


def test_random_parts_follow_the_seed(photos):
    img = photos[1]
    for name in (Shift.COLOUR_CAST, Shift.ILLUMINATION, Shift.MOTION_BLUR, Shift.ROTATE_SCALE):
        outs = {shifts.apply_shift(img, name, "severe", [0, i]).tobytes() for i in range(4)}
        assert len(outs) >= 3, name


def test_jpeg_shift_really_reencodes(photos):
    img = photos[0]
    out = shifts.apply_shift(img, "jpeg", "severe", 0)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 30])
    want = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(out, want)  # bit-identical to a real quality-30 JPEG round trip
    # 8×8 block artefacts: more energy at block edges than inside blocks
    g = out.astype(np.float64).mean(axis=2)
    dx = np.abs(np.diff(g, axis=1))
    edge = dx[:, 7::8].mean()
    inner = np.delete(dx, np.s_[7::8], axis=1).mean()
    assert edge > inner
    mild, severe = (_rmse(img, shifts.apply_shift(img, "jpeg", lv, 0)) for lv in ("mild", "severe"))
    assert 0 < mild < severe


def test_fov_shapes(photos):
    img = photos[0]
    cut = shifts.apply_shift(img, "fov-cut", "severe", 0)
    assert cut[:10].max() == 0 and cut[-10:].max() == 0 and cut[img.shape[0] // 2].max() > 0
    for name, aspect in (("frame-4x3", 4 / 3), ("frame-3x2", 3 / 2)):
        f = shifts.apply_shift(img, name, "severe", 0)
        assert f.shape[1] / f.shape[0] == pytest.approx(aspect, abs=0.02)
        assert f.shape[0] < img.shape[0]  # the frame cuts the circle top and bottom
    small = shifts.apply_shift(img, "fov-small", "severe", 0)
    assert (small.max(axis=2) > 10).sum() < 0.7 * (img.max(axis=2) > 10).sum()


def test_benign_perturbations_are_small_and_seeded(photos, model_view):
    img = photos[2]
    dists = {}
    for b in Benign:
        out = shifts.apply_benign(img, b, seed=[0, 2])
        assert out.shape == img.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, shifts.apply_benign(img, b, seed=[0, 2]))
        dists[b] = _rmse(model_view(img), model_view(out))
        assert 0 < dists[b] < 10, (b, dists[b])
    np.testing.assert_array_equal(shifts.apply_benign(img, "jpeg-95"), shifts.jpeg(img, 95))
    # the 2-px move survives the pipeline's FOV crop (it is not a whole-photo translation)
    assert dists[Benign.SHIFT_2PX] > dists[Benign.SHIFT_1PX] > 0
    bright = shifts.apply_benign(img, "brightness+3%")
    m = img > 100
    assert np.mean(bright[m].astype(float) / img[m]) == pytest.approx(1.03, abs=0.005)
    # benign is smaller than any severe camera shift
    assert max(dists.values()) < min(_rmse(model_view(img), model_view(shifts.apply_shift(img, s, "severe", 0)))
                                     for s in (Shift.GAMMA, Shift.CONTRAST, Shift.COLOUR_CAST))


def test_camera_policy_changes_images_seeded_keeps_dtype_shape(photos, model_view):
    p = get_policy("camera")
    assert p is POLICIES["camera"] or p == POLICIES["camera"]
    assert not p.is_identity and p.camera == 2
    img = model_view(photos[0])  # augmentation runs after the pipeline's image steps
    outs = [p.apply(img, s) for s in range(12)]
    for o in outs:
        assert o.shape == img.shape and o.dtype == np.uint8
    np.testing.assert_array_equal(p.apply(img, 5), outs[5])
    assert sum(not np.array_equal(o, img) for o in outs) >= 10
    assert len({o.tobytes() for o in outs}) == 12
    stack = np.stack([img] * 4)
    a, b = augment_batch(stack, "camera", seed=1), augment_batch(stack, "camera", seed=1)
    np.testing.assert_array_equal(a, b)
    assert get_policy("camera+minority-only").minority_only


def test_camera_policy_keeps_shape_whatever_is_drawn():
    img = Pipeline.default(64, "unit").apply_image(generate(1, seed=3, size=96)[0][0])
    for kind in (Shift.FRAME_3X2, Shift.FRAME_4X3, Shift.RESOLUTION):  # canvas-changing kinds are re-fitted
        out = shifts.random_camera(img, np.random.default_rng(0), n=1, kinds=[kind])
        assert out.dtype == np.uint8
    for s in range(40):
        assert get_policy("camera").apply(img, s).shape == img.shape


def test_camera_policy_in_the_tf_data_pipeline():
    """``edgeretina train --augment camera`` goes through make_tf_dataset: same shapes, changed, seeded."""
    from edgeretina.data import make_tf_dataset, open_dataset

    ds = open_dataset("synthetic:n=12,size=96,seed=2")
    pipe = Pipeline.default(48, "unit")

    def epoch(**kw):
        return np.concatenate([x.numpy() for x, _ in make_tf_dataset(ds.records, pipe, batch_size=12,
                                                                      spec=ds.spec, **kw)])

    plain, a, b = epoch(), epoch(augment="camera", seed=1), epoch(augment="camera", seed=1)
    assert a.shape == plain.shape == (12, 48, 48, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert sum(not np.allclose(x, y) for x, y in zip(a, plain)) >= 10
