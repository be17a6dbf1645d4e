"""The two-view input (``train --crop two-view``): whole fundus | optic-nerve-head crop side by side in one
S × 2S image, one backbone pass, the two halves pooled apart. Each half is exactly what the single-view
pipelines produce; the exported .tflite runs through LiteRT with its preprocessing read from metadata."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeretina.errors import DataError, EdgeRetinaError, ModelError


def _photo(i=0):
    from edgeretina.data.synthetic import generate

    return generate(8, seed=3, size=320)[0][i]


def test_each_half_is_the_single_view_pipelines_image():
    from edgeretina.preprocess import Pipeline

    two = Pipeline.default(96, "tf", two_view=True)
    assert two.input_shape == (96, 192) and two.input_size == 96 and two.two_view and two.uses_onh
    assert Pipeline.from_json(json.loads(json.dumps(two.to_json()))) == two
    for i in range(3):
        img = _photo(i)
        out, info = two.apply_image_with_info(img)
        assert out.shape == (96, 192, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[:, :96], Pipeline.default(96, "tf").apply_image(img))
        onh, onh_info = Pipeline.default(96, "tf", onh=True).apply_image_with_info(img)
        np.testing.assert_array_equal(out[:, 96:], onh)
        assert info.disc == onh_info.disc  # the same detection, in input pixels
        assert two.detect_disc(img) == onh_info.disc


def test_two_branches_read_the_two_halves_like_the_single_view_model():
    """Each half goes through its own copy of the backbone (same ImageNet weights, the right one's layers
    prefixed ``onh_``; flat graph): the pooled features are exactly the single-view model's on each half."""
    from edgeretina._keras import keras
    from edgeretina.models import build_model
    from edgeretina.models.macs import count_macs

    m = build_model("mobilenetv2", "glaucoma", 64, "imagenet", two_view=True)
    single = build_model("mobilenetv2", "glaucoma", 64, "imagenet")
    assert m.input_shape == (None, 64, 128, 3) and m.get_layer("head_gap").output.shape[-1] == 2 * 1280
    assert not any(isinstance(l, keras.Model) for l in m.layers)  # flat (tfmot needs it)
    assert count_macs(m) == 2 * count_macs(single)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 128, 3)).astype(np.float32)
    feats = keras.Model(m.input, m.get_layer("head_gap").output).predict(x, verbose=0)
    fs = keras.Model(single.input, single.get_layer("head_gap").output)
    ref = np.concatenate([fs.predict(x[:, :, :64], verbose=0), fs.predict(x[:, :, 64:], verbose=0)], 1)
    np.testing.assert_allclose(feats, ref, atol=1e-5)


def test_what_two_view_cannot_do_is_refused_in_one_line():
    from edgeretina.models import build_model
    from edgeretina.preprocess import Pipeline, Step
    from edgeretina.train import TrainConfig, train_run
    from edgeretina.train.options import RunOptions

    with pytest.raises(ModelError, match="minimum"):
        build_model("mobilenetv2", "glaucoma", 16, None, two_view=True, alpha=0.35)
    with pytest.raises(DataError, match="Ben Graham"):
        Pipeline.default(96, two_view=True, ben_graham=True)
    with pytest.raises(DataError, match="two_view"):
        Step("two_view", {"size": 4000})
    with pytest.raises(EdgeRetinaError, match="--augment"):
        train_run("synthetic", "glaucoma", "mobilenetv2", "/tmp/never", options=RunOptions(
            weights=None, input_size=64, pipeline=Pipeline.default(64, two_view=True),
            config=TrainConfig(augment="light"), max_train=8, max_val=8, max_test=8))


def test_two_view_model_trains_exports_and_runs_in_litert(tmp_path):
    """Linear head (+ one raw-photo camera copy per eye) on the synthetic set → float32 + int8 .tflite with a (1, S, 2S, 3) input; predict reads
    the two-view preprocessing from the metadata and agrees with the Keras model."""
    from edgeretina.converters.export import export_model
    from edgeretina.preprocess import Pipeline
    from edgeretina.benchmarks.predict import predict_images
    from edgeretina.train import TrainConfig, train_run
    from edgeretina.train.options import RunOptions
    import cv2

    run = train_run("synthetic", "glaucoma", "mobilenetv2", tmp_path / "run", options=RunOptions(
        weights="imagenet", input_size=64, pipeline=Pipeline.default(64, "tf", two_view=True),
        config=TrainConfig(seed=0, augment="camera"), head_fit="linear", aug_copies=1, max_train=90, max_val=30,
        max_test=60, n_boot=50))
    m = json.loads((run / "metrics.json").read_text())
    assert m["linear_head"]["n"] == 2 * 90  # every training eye + one camera-shifted copy (raw photo → both views)
    assert m["test"]["auroc"] > 0.7  # it learned the synthetic glaucoma signal from the two views
    cfg = json.loads((run / "config.json").read_text())
    assert [s["name"] for s in cfg["preprocessing"]["steps"]][:2] == ["fov_crop", "two_view"]
    export_model(run, ["float32", "int8"], run / "export", calib_n=16, verify_n=8)
    photos = []
    for i in range(4):
        p = tmp_path / f"eye{i}.png"
        cv2.imwrite(str(p), _photo(i)[:, :, ::-1])
        photos.append(p)
    f32 = predict_images(run / "export" / "run_float32.tflite", photos)
    i8 = predict_images(run / "export" / "run_int8.tflite", photos)
    from edgeretina.converters.export import load_keras_model

    km = load_keras_model(run / "model.keras")
    pipe = Pipeline.from_json(cfg["preprocessing"])
    ref = km.predict(np.stack([pipe.load(p) for p in photos]), verbose=0)[:, 1]
    np.testing.assert_allclose([p.score for p in f32], ref, atol=1e-4)
    # int8 runs with the two-view input (its agreement is a real-data question: the int8 study / bench)
    assert all(0.0 <= p.score <= 1.0 for p in i8) and len(i8) == len(photos)
