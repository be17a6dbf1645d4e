"""The embedded synthetic-fundus generator: deterministic, both classes, looks like a fundus photograph."""
from __future__ import annotations

import numpy as np
import pytest

from edgeretina.data.synthetic import generate, render_fundus


@pytest.fixture(scope="module")
def batch():
    return generate(60, seed=3, size=128)


def test_shapes_and_types(batch):
    images, labels, info = batch
    assert images.shape == (60, 128, 128, 3) and images.dtype == np.uint8
    assert labels.shape == (60,) and set(labels.tolist()) == {0, 1}
    assert int(labels.sum()) == 30  # exactly round(n * glaucoma_fraction)
    assert len(info) == 60
    for meta, y in zip(info, labels):
        for key in ("cdr", "disc_center", "disc_radius", "macula_center"):
            assert key in meta
        assert meta["glaucoma"] == bool(y)


def test_deterministic_by_seed_and_independent_of_n():
    a, ya, ia = generate(6, seed=11, size=64)
    b, yb, ib = generate(6, seed=11, size=64)
    assert np.array_equal(a, b) and np.array_equal(ya, yb) and ia == ib
    c, _, _ = generate(6, seed=12, size=64)
    assert not np.array_equal(a, c)
    # image i of a seed is drawn from its own stream: rendering it alone gives the same pixels
    rng = np.random.default_rng([11, 4])
    one, meta = render_fundus(rng, bool(ya[4]), 64)
    assert np.array_equal(one, a[4]) and meta == ia[4]


def test_glaucoma_fraction():
    _, y, _ = generate(20, seed=0, size=64, glaucoma_fraction=0.25)
    assert int(y.sum()) == 5
    _, y, _ = generate(10, seed=0, size=64, glaucoma_fraction=0.0)
    assert int(y.sum()) == 0
    with pytest.raises(ValueError):
        generate(10, glaucoma_fraction=1.5)


def test_field_of_view_mask(batch):
    images = batch[0].astype(np.float64)
    s = images.shape[1]
    k = s // 10
    corners = np.concatenate([images[:, :k, :k], images[:, :k, -k:], images[:, -k:, :k], images[:, -k:, -k:]],
                             axis=1)
    assert corners.max() <= 12  # black outside the circular field (sensor noise only)
    centre = images[:, s // 2 - k:s // 2 + k, s // 2 - k:s // 2 + k]
    assert centre.mean(axis=(1, 2, 3)).min() > 40  # lit retina inside
    # orange-red fundus: red dominates green dominates blue
    m = centre.mean(axis=(0, 1, 2))
    assert m[0] > m[1] > m[2]


def test_disc_brighter_than_background_and_macula_darker(batch):
    images, _, info = batch
    for img, meta in zip(images, info):
        g = img.astype(np.float64).mean(axis=2)
        yy, xx = np.mgrid[:g.shape[0], :g.shape[1]]
        dx, dy = meta["disc_center"]
        r = meta["disc_radius"]
        d = np.hypot(xx - dx, yy - dy)
        disc = g[d < 0.8 * r].mean()
        ring = g[(d > 2.0 * r) & (d < 3.0 * r) & (g > 5)].mean()
        assert disc > 1.25 * ring, meta  # relative: illumination and vignetting vary
        fx, fy = meta["fov_center"]
        assert np.hypot(dx - fx, dy - fy) + r < meta["fov_radius"]  # the whole disc is in the picture
        mx, my = meta["macula_center"]
        dm = np.hypot(xx - mx, yy - my)
        around = g[(dm > 3.0 * r) & (dm < 4.0 * r) & (d > 2 * r) & (g > 5)].mean()
        assert g[dm < 0.9 * r].mean() < around  # the macula is darker than the retina around it
        # the macula sits about 2.3 disc diameters from the disc
        assert 2.0 <= np.hypot(mx - dx, my - dy) / (2 * meta["disc_radii"][0]) <= 2.7


def test_cup_to_disc_ratio_differs_by_class_with_overlap():
    _, y, info = generate(400, seed=0, size=32)
    cdr = np.array([m["cdr"] for m in info])
    normal, glaucoma = cdr[y == 0], cdr[y == 1]
    assert normal.mean() < 0.45 < 0.6 < glaucoma.mean()
    assert glaucoma.min() < normal.max()  # the classes overlap, so the task is not trivial
    from sklearn.metrics import roc_auc_score

    assert 0.95 < roc_auc_score(y, cdr) < 1.0
    # glaucomatous cups are taller than wide (thin superior/inferior rim)
    hv = np.array([m["hcdr"] / m["cdr"] for m in info])
    assert hv[y == 1].mean() < hv[y == 0].mean()


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate(-1)
    with pytest.raises(ValueError):
        generate(2, size=8)


def test_repeated_calls_return_independent_copies():
    a, ya, ia = generate(5, seed=21, size=48)
    a[:] = 0
    ia[0]["cdr"] = -1
    b, yb, ib = generate(5, seed=21, size=48)  # served from the in-process cache
    assert b.any() and ib[0]["cdr"] > 0
    fresh = render_fundus(np.random.default_rng([21, 0]), bool(yb[0]), 48)[0]
    assert np.array_equal(b[0], fresh)
