"""Grad-CAM: `edgeretina explain MODEL IMAGE --out heat.png` on the learned small_run model and a real image."""
from __future__ import annotations

import cv2
import numpy as np
from click.testing import CliRunner

from edgeretina.cli import cli


def test_explain_writes_heatmap_overlay(small_run, shared, tmp_path):
    image = shared / "data" / "odir" / "images" / "153_left.jpg"  # a glaucomatous eye
    out = tmp_path / "heat.png"
    res = CliRunner().invoke(cli, ["explain", str(small_run), str(image), "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "glaucoma: p = " in res.output
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] == img.shape[1] >= 224
    # the overlay is coloured (JET), unlike the fundus alone: strong blue or red somewhere
    b, r = img[..., 0].astype(int), img[..., 2].astype(int)
    assert (np.abs(b - r) > 60).mean() > 0.05


def test_gradcam_library(small_run, shared):
    from edgeretina._keras import keras
    from edgeretina.models.gradcam import gradcam
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import resolve_model_path

    path, cfg = resolve_model_path(small_run)
    model = keras.models.load_model(path, compile=False)
    x = Pipeline.from_json(cfg.preprocessing).load(shared / "data" / "odir" / "images" / "153_left.jpg")
    ex = gradcam(model, x, cfg.labels, default_index=cfg.positive_index)
    assert ex.class_name == "glaucoma" and ex.class_index == 1 and 0 <= ex.probability <= 1
    assert ex.heatmap.shape == (3, 3) and ex.heatmap.max() == 1.0 and ex.heatmap.min() >= 0
    normal = gradcam(model, x, cfg.labels, class_index=0)
    assert normal.class_name == "normal"
    np.testing.assert_allclose(normal.probability + ex.probability, 1.0, rtol=1e-5)


def test_explain_errors(small_run, tmp_path):
    r = CliRunner().invoke(cli, ["explain", str(small_run), str(tmp_path / "none.jpg"), "--out", str(tmp_path / "h.png")])
    assert r.exit_code == 2 and r.output.strip() == f"error: {tmp_path / 'none.jpg'}: no such image file"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    r = CliRunner().invoke(cli, ["explain", str(small_run), str(bad), "--out", str(tmp_path / "h.png")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["explain", str(tmp_path), str(bad), "--out", str(tmp_path / "h.png")])
    assert r.exit_code == 2 and "no model.keras" in r.output


def test_gradcam_ignores_a_shift_shared_by_the_softmax_logits(small_run, shared):
    """Softmax ignores whatever is added to every logit alike — here a vector added to every class's weights,
    which pushes every logit down by the same amount on every image; so must the heatmap (it reads the class's
    log-odds). With the raw glaucoma logit, every location's evidence would be negative and the map empty."""
    from edgeretina._keras import keras
    from edgeretina.models.gradcam import gradcam
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import resolve_model_path

    path, cfg = resolve_model_path(small_run)
    model = keras.models.load_model(path, compile=False)
    x = Pipeline.from_json(cfg.preprocessing).load(shared / "data" / "odir" / "images" / "153_left.jpg")
    before = gradcam(model, x, cfg.labels, default_index=cfg.positive_index)
    head = model.get_layer("head_logits")
    w, b = head.get_weights()
    head.set_weights([w - 1.0, b])  # the features entering the head are ReLU6 outputs (>= 0)
    after = gradcam(model, x, cfg.labels, default_index=cfg.positive_index)
    # float32: every logit moves by minus the sum of the features (tens to hundreds), so the softmax of the
    # shifted logits agrees to ~1e-4 relative, not bit for bit (thread scheduling changes the last digits)
    np.testing.assert_allclose(after.probability, before.probability, rtol=1e-3)
    np.testing.assert_allclose(after.heatmap, before.heatmap, atol=1e-4)
    assert after.heatmap.max() == 1.0
