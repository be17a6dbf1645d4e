"""Augmentation policies and the tf.data input pipeline (deterministic under a seed, minority-only, cache)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeretina.augment import POLICIES, augment_batch, get_policy
from edgeretina.data import make_tf_dataset, open_dataset
from edgeretina.data.synthetic import generate
from edgeretina.errors import DataError
from edgeretina.preprocess import Pipeline


@pytest.fixture(scope="module")
def img():
    return generate(1, seed=4, size=96)[0][0]


def test_policies_deterministic_under_seed(img):
    for name in ("mvoulana", "odir"):
        p = get_policy(name)
        a, b, c = p.apply(img, 5), p.apply(img, 5), p.apply(img, 6)
        assert a.shape == img.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c) and not np.array_equal(a, img)


def test_policy_parameters_match_the_papers():
    m, o = POLICIES["mvoulana"], POLICIES["odir"]
    assert (m.rotation, m.zoom, m.shear, m.hflip, m.vflip) == (40.0, 0.2, 0.2, 0.5, 0.5)
    assert (o.rotation, o.noise_var, o.hflip, o.vflip) == (45.0, 0.01, 0.0, 0.0) and o.stretch_p > 0
    assert get_policy("odir+minority-only").minority_only and not get_policy("odir").minority_only
    with pytest.raises(DataError, match="unknown augmentation policy 'flip'"):
        get_policy("flip")


def test_odir_policy_never_flips(img):
    """Rotation only (no noise/stretch): the disc stays on its side of the image (left/right eye kept)."""
    from dataclasses import replace

    p = replace(POLICIES["odir"], noise_var=0.0, stretch_p=0.0)
    info = generate(1, seed=4, size=96)[2][0]
    from edgeretina.preprocess import locate_disc

    side = np.sign(info["disc_center"][0] - 48)
    for s in range(8):
        d = locate_disc(p.apply(img, s))
        assert np.sign(d.x - 48) == side


def test_odir_noise_variance(img):
    from dataclasses import replace

    p = replace(POLICIES["odir"], rotation=0.0, stretch_p=0.0)
    flat = np.full((64, 64, 3), 128, np.uint8)
    out = p.apply(flat, 0).astype(np.float32) / 255.0
    assert abs(out.var() - 0.01) < 0.002


def test_augment_batch_mask(img):
    stack = np.stack([img, img, img])
    out = augment_batch(stack, "mvoulana", seed=1, apply_mask=np.array([True, False, True]))
    np.testing.assert_array_equal(out[1], img)
    assert not np.array_equal(out[0], img) and not np.array_equal(out[0], out[2])


@pytest.fixture(scope="module")
def syn_ds():
    return open_dataset("synthetic:n=24,size=64,seed=2")


def _epoch(ds):
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_tf_dataset_shapes_determinism_and_epochs(syn_ds):
    pipe = Pipeline.default(48, "tf")
    kw = dict(batch_size=8, shuffle=True, augment="mvoulana", seed=3, spec=syn_ds.spec)
    d1 = make_tf_dataset(syn_ds.records, pipe, **kw)
    x1, y1 = _epoch(d1)
    assert x1.shape == (24, 48, 48, 3) and x1.dtype == np.float32 and y1.dtype == np.int64
    assert -1 <= x1.min() and x1.max() <= 1
    x2, _ = _epoch(make_tf_dataset(syn_ds.records, pipe, **kw))
    np.testing.assert_array_equal(x1, x2)  # same seed → same batches
    x1b, _ = _epoch(d1)
    assert not np.array_equal(x1, x1b)  # a new epoch reshuffles and re-augments
    plain = make_tf_dataset(syn_ds.records, pipe, batch_size=24, spec=syn_ds.spec)
    xp, yp = _epoch(plain)
    from edgeretina.data import load_arrays

    X, Y = load_arrays(syn_ds.records, pipe, syn_ds.spec)
    np.testing.assert_allclose(xp, X, atol=1e-6)  # same code path as load_arrays
    np.testing.assert_array_equal(yp, Y)


def test_tf_dataset_minority_only(syn_ds):
    pipe = Pipeline.default(48, "unit")
    ds = make_tf_dataset(syn_ds.records, pipe, batch_size=24, augment="mvoulana+minority-only", seed=0,
                         spec=syn_ds.spec)
    xa, ya = _epoch(ds)
    xp, _ = _epoch(make_tf_dataset(syn_ds.records, pipe, batch_size=24, spec=syn_ds.spec))
    changed = np.array([not np.allclose(a, b) for a, b in zip(xa, xp)])
    assert (changed == (ya == 1)).all()


def test_tf_dataset_multilabel_and_skip(tmp_path, syn_ds):
    import cv2

    from edgeretina.data.records import Record
    from edgeretina.tasks import task_spec

    imgs = generate(4, seed=9, size=64)[0]
    recs = []
    for i, im in enumerate(imgs):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), im[:, :, ::-1])
        recs.append(Record(str(i), str(p), None, (float(i % 2), 1.0)))
    (tmp_path / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40 + b"IEND")
    spec = task_spec("multitask")
    ds = make_tf_dataset(recs, Pipeline.default(32, "tf"), batch_size=4, spec=spec, on_bad_image="skip")
    x, y = _epoch(ds)
    assert x.shape == (3, 32, 32, 3) and y.shape == (3, 2) and y.dtype == np.float32
