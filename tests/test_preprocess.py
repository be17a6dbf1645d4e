"""Preprocessing steps and Pipeline: JSON round-trip, robust decode, FOV/ONH crops, resize parity, scalings."""
from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

from edgeretina.data.synthetic import generate
from edgeretina.errors import DataError
from edgeretina.preprocess import (STEPS, Pipeline, Step, ben_graham, clahe, decode_image, fov_box, fov_crop,
                                   grey, locate_disc, onh_crop, resize, scale, standardize, stretch)


@pytest.fixture(scope="module")
def syn():
    return generate(12, seed=7, size=256)


# ------------------------------------------------------------------------------------------------ Pipeline
def test_default_pipeline_json_round_trip_and_output():
    p = Pipeline.default(96, "tf", onh=False, clahe=True)
    assert p.names() == ["fov_crop", "pad_square", "resize", "clahe", "scale"]
    assert p.input_size == 96 and p.scaling == "tf"
    d = json.loads(json.dumps(p.to_json()))
    assert d["steps"][2] == {"name": "resize", "params": {"size": 96, "interpolation": "area"}}
    q = Pipeline.from_json(d)
    assert q == p and Pipeline.from_json(json.dumps(d)) == p
    img = generate(1, seed=1, size=128)[0][0]
    x = p.apply(img)
    assert x.shape == (96, 96, 3) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(q.apply(img), x)


def test_every_step_has_explicit_params_in_json():
    p = Pipeline([Step(n) for n in STEPS if n not in ("scale", "standardize")] + [Step("scale", {"mode": "none"})])
    for s in p.to_json()["steps"]:
        assert set(s["params"]) == set(STEPS[s["name"]].defaults)


@pytest.mark.parametrize("bad, msg", [
    ({"steps": [{"name": "resize", "params": {"size": 8}}]}, "must end with a 'scale' step"),
    ({"steps": [{"name": "blur"}, {"name": "scale"}]}, "unknown preprocessing step 'blur'"),
    ({"steps": [{"name": "resize", "params": {"sz": 8}}, {"name": "scale"}]}, "unknown parameter(s) sz"),
    ({"steps": [{"name": "scale", "params": {"mode": "inception"}}]}, "unknown mode 'inception'"),
    ({"steps": [{"name": "standardize"}, {"name": "grey"}, {"name": "scale"}]}, "cannot follow"),
])
def test_invalid_pipelines_are_one_line_errors(bad, msg):
    with pytest.raises(DataError, match=None) as e:
        Pipeline.from_json(bad)
    assert msg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mode, pixel, expected", [
    ("tf", (0, 127.5, 255), (-1.0, 0.0, 1.0)),
    ("unit", (0, 51, 255), (0.0, 0.2, 1.0)),
    ("none", (1, 2, 3), (1.0, 2.0, 3.0)),
    ("torch", (124, 116, 104), ((124 / 255 - .485) / .229, (116 / 255 - .456) / .224, (104 / 255 - .406) / .225)),
    ("caffe", (10, 20, 30), (30 - 103.939, 20 - 116.779, 10 - 123.68)),
])
def test_scale_modes(mode, pixel, expected):
    x = scale(np.full((2, 2, 3), pixel, np.float32), mode)
    np.testing.assert_allclose(x[0, 0], expected, atol=1e-5)
    assert x.dtype == np.float32


# ------------------------------------------------------------------------------------------------ decoding
def _exif_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    b = buf.tobytes()
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + \
        struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    return b[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b[2:]


def test_decode_applies_exif_orientation(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = (255, 0, 0)  # left half red
    p = tmp_path / "rot.jpg"
    p.write_bytes(_exif_jpeg(img, 6))  # 6 = rotate 90° clockwise to display
    out = decode_image(p)
    assert out.shape == (80, 40, 3)
    assert out[5, 20, 0] > 200 and out[75, 20, 0] < 60  # red half now on top


def test_decode_grey_rgba_16bit(tmp_path):
    g = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    out = decode_image(tmp_path / "g.png")
    assert out.shape == (8, 8, 3) and (out[..., 0] == g).all() and (out[..., 2] == g).all()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    rgba[:, :4, 3] = 255
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    out = decode_image(tmp_path / "a.png")
    assert out.shape == (8, 8, 3) and out[0, 0, 0] == 200 and out[0, 7, 0] == 0  # composited on black
    w = np.full((8, 8, 3), 65535, np.uint16)
    w[0, 0] = (256 * 10, 256 * 20, 256 * 30)
    cv2.imwrite(str(tmp_path / "w.png"), w)
    out = decode_image(tmp_path / "w.png")
    assert out.dtype == np.uint8 and out[1, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [30, 20, 10]


def test_decode_errors_name_the_file(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not an image")
    ok, b = cv2.imencode(".jpg", np.full((32, 32, 3), 90, np.uint8))
    (tmp_path / "trunc.jpg").write_bytes(b.tobytes()[: len(b) // 2])
    bad = bytearray(b.tobytes())
    bad[4:200] = bytes((i * 37) % 256 for i in range(196))
    (tmp_path / "corrupt.jpg").write_bytes(bytes(bad))
    for name, msg in [("zero.jpg", "zero-byte file"), ("text.jpg", "not an image"),
                      ("trunc.jpg", "truncated JPEG"), ("corrupt.jpg", "corrupt JPEG")]:
        with pytest.raises(DataError) as e:
            decode_image(tmp_path / name)
        assert name in str(e.value) and msg in str(e.value)


# ------------------------------------------------------------------------------------------------ resize
def _area_reference(img: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Textbook area averaging (what docs/data.md specifies for the Kotlin port)."""
    def weights(n_in, n_out):
        s = n_in / n_out
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            a, b = i * s, (i + 1) * s
            for k in range(int(np.floor(a)), min(n_in, int(np.ceil(b)))):
                w[i, k] = max(0.0, min(b, k + 1) - max(a, k))
        return w / s
    wy, wx = weights(img.shape[0], oh), weights(img.shape[1], ow)
    out = np.stack([wy @ img[:, :, c].astype(np.float64) @ wx.T for c in range(img.shape[2])], axis=2)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("src, dst", [(320, 224), (320, 160), (300, 96), (97, 60)])
def test_resize_area_matches_reference_within_1_lsb(src, dst):
    img = np.random.default_rng(src).integers(0, 256, (src, src, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)  # realistic, not pure noise
    out = resize(img, dst, "area")
    ref = _area_reference(img, dst, dst)
    assert out.shape == (dst, dst, 3)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_resize_area_enlarging_is_bilinear():
    img = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize(img, 96, "area"), cv2.resize(img, (96, 96), interpolation=cv2.INTER_LINEAR))


# ------------------------------------------------------------------------------------------------ FOV / ONH
def test_fov_crop_removes_black_border(syn):
    img = syn[0][0]
    padded = cv2.copyMakeBorder(img, 30, 30, 60, 60, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    y0, y1, x0, x1 = fov_box(padded)
    fov = syn[2][0]
    cx, cy, r = fov["fov_center"][0] + 60, fov["fov_center"][1] + 30, fov["fov_radius"]
    assert abs((x0 + x1) / 2 - cx) < 4 and abs(x1 - x0 - min(2 * r, 256)) < 8
    assert fov_crop(np.zeros((50, 50, 3), np.uint8)).shape == (50, 50, 3)  # black image: fallback, whole


def test_onh_located_on_synthetic_with_known_disc(syn):
    images, _, info = syn
    for img, inf in zip(images, info):
        d = locate_disc(img)
        cx, cy = inf["disc_center"]
        assert d.found
        assert np.hypot(d.x - cx, d.y - cy) < 8, (d, inf["disc_center"])  # disc radius ≈ 15 px at 256
        crop = onh_crop(img)
        side = crop.shape[0]
        assert 1.5 * 2 * inf["disc_radius"] <= side <= 3 * 2 * inf["disc_radius"]


def test_onh_on_shifted_and_flipped_image(syn):
    img, inf = syn[0][1], syn[2][1]
    flipped = img[:, ::-1]
    d = locate_disc(np.ascontiguousarray(flipped))
    assert np.hypot(d.x - (255 - inf["disc_center"][0]), d.y - inf["disc_center"][1]) < 8


def test_onh_fallback_on_featureless_image():
    flat = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(flat, (100, 100), 90, (120, 60, 30), -1)
    d = locate_disc(flat)
    assert not d.found and abs(d.x - 100) < 3 and abs(d.y - 100) < 3
    assert onh_crop(flat).shape[:2] == (round(2 * d.diameter),) * 2


def test_onh_crop_on_real_odir_is_brighter_than_the_fundus(shared):
    from edgeretina.data import open_dataset
    from edgeretina.preprocess import fov_mask

    ds = open_dataset(shared / "data" / "odir", "glaucoma")
    rng = np.random.default_rng(0)
    sample = [ds.records[i] for i in rng.choice(len(ds.records), 60, replace=False)]
    brighter = 0
    for r in sample:
        img = fov_crop(decode_image(r.source))
        crop = onh_crop(img)
        brighter += crop.mean() > img[fov_mask(img)].mean()
    assert brighter >= 0.7 * len(sample)


# ------------------------------------------------------------------------------------------------ enhancements
def test_enhancement_steps(syn):
    img = resize(syn[0][2], 128)
    for fn in (ben_graham, clahe, grey, stretch):
        out = fn(img)
        assert out.shape == img.shape and out.dtype == np.uint8
    g = grey(img)
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    low = (img // 4 + 40).astype(np.uint8)
    s = stretch(low)
    assert s.min() == 0 and s.max() == 255
    bg = ben_graham(img)
    inner = bg[40:88, 40:88].astype(float)
    assert abs(inner.mean() - 128) < 25  # local mean removed, centred on 128
    z = standardize(img)
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3 and z.dtype == np.float32


def test_pipeline_standardize_then_scale_none():
    p = Pipeline.default(64, "none", standardize=True, ben_graham=True)
    assert p.names()[-2:] == ["standardize", "scale"] and [s.name for s in p.float_steps] == ["standardize", "scale"]
    x = p.apply(generate(1, seed=2, size=96)[0][0])
    assert x.shape == (64, 64, 3) and abs(float(x.mean())) < 1e-4


# Disc centres on real ODIR photos (after fov_crop, 320 px), each checked by eye on a contact sheet
# (`edgeretina data preview`): the point lies on the optic disc. Tolerance ≈ one disc radius.
ODIR_DISCS = {"4387_left": (96, 146), "1032_left": (100, 145), "3411_right": (253, 158), "2807_left": (85, 142),
              "2899_left": (65, 122), "4339_right": (216, 142), "1999_right": (264, 172), "3338_right": (225, 147),
              "2771_right": (250, 146), "3117_right": (254, 144), "1212_left": (104, 167), "1250_left": (88, 132),
              "1416_right": (225, 170), "1434_right": (220, 158)}


def test_onh_on_eye_checked_odir_discs(shared):
    for key, (x, y) in ODIR_DISCS.items():
        img = fov_crop(decode_image(shared / "data" / "odir" / "images" / f"{key}.jpg"))
        d = locate_disc(img)
        assert d.found and np.hypot(d.x - x, d.y - y) < 16, (key, d)
        crop = onh_crop(img)
        assert crop.mean() > img.mean()
