"""ODIR 8-label (issue 15) on a small real model: per-label thresholds from validation in the run and in every
export's metadata, the Android core (android_demo/core, on the JVM) making the same per-label decisions as
Python on real ODIR photos, and the per-label Grad-CAM grid.

The model is real and small: ImageNet MobileNetV2 at 96 px with the linear head of ``--head-fit linear`` (one
L2 logistic regression per label, C by inner patient-grouped CV) fitted on a few dozen real ODIR eyes, its
per-label thresholds Youden's J on their validation eyes (config.json ``threshold``: a list of 8), exported by
``edgeretina.converters.export_model`` to float32 and full-int8 (``head_split=4``, logits output) with the
metadata the app reads. The app's benchmark-mode scoring (``CoreTool score``: .npy inputs → the tensors fed →
the raw outputs LiteRT gave here → probabilities and decision) must feed Python's tensors and reach, on every
photo, the probabilities and the set of labels at or over their thresholds that ``edgeretina predict`` reaches.
The compiled core and its runner are test_android_core.py's (``kotlin`` fixture; the JVM test skips without
kotlinc/JUnit).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeretina.preprocess import Pipeline, decode_image
from test_android_core import kotlin, score_through_app  # noqa: F401  (kotlin: the session's compiled core)

LABELS = ["N", "D", "G", "C", "A", "H", "M", "O"]


@pytest.fixture(scope="module")
def odir8(shared, tmp_path_factory):
    """(run dir, {variant: .tflite}) of the small 8-label model (about 40 s on 2 cores)."""
    from edgeretina.converters import export_model
    from edgeretina.converters.metadata import read_metadata
    from edgeretina.train import train_run

    d = tmp_path_factory.mktemp("odir8")
    run = train_run(shared / "data" / "odir", "odir", "mobilenetv2", d / "run", weights="imagenet", input_size=96,
                    head="gap", head_fit="linear", max_train=96, max_val=64, max_test=16, n_boot=20, baseline=False)
    export_model(run, ["float32", "int8"], d / "export", calib_n=32, verify_n=8, head_split=4)
    paths = {read_metadata(f)["export"]["variant"]: f for f in (d / "export").glob("*.tflite")}
    return run, paths


def test_thresholds_are_per_label_from_validation(odir8):
    from edgeretina.run import RunConfig

    run, paths = odir8
    cfg = RunConfig.load(run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert isinstance(cfg.threshold, list) and len(cfg.threshold) == len(LABELS)
    assert metrics["threshold"] == {"method": "per_label_youden_j_on_val", "value": cfg.threshold}
    assert len(set(cfg.threshold)) > 1, "per-label thresholds should differ"
    from edgeretina.converters.metadata import read_metadata

    for p in paths.values():  # every export carries the list the app reads
        assert read_metadata(p)["threshold"] == cfg.threshold


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_app_per_label_decisions_match_python_on_real_photos(kotlin, odir8, shared, tmp_path, variant):
    from edgeretina.benchmarks.modelfile import open_model
    from edgeretina.inference.predict import predict_images

    path = odir8[1][variant]
    mf = open_model(path)
    assert mf.config.kind == "multilabel" and list(mf.config.labels) == LABELS
    files = sorted((shared / "data" / "odir" / "images").glob("*.jpg"))[5::211][:24]
    pipeline = Pipeline.from_json(mf.config.preprocessing)
    x = np.stack([pipeline.apply(decode_image(f)) for f in files]).astype(np.float32)
    preds = predict_images(path, files, verify_manifest=False)
    res, _ = score_through_app(kotlin, path, x, tmp_path)
    assert res["n"] == len(files)
    thresholds = np.asarray(mf.config.threshold)
    on_counts = np.zeros(len(LABELS), int)
    for i, p in enumerate(preds):
        probs = np.asarray(list(p.probabilities.values()))
        np.testing.assert_allclose(res["probabilities"][i], probs, atol=1e-6)
        py_on = [lb for lb, v, t in zip(LABELS, probs, thresholds) if v >= t]
        assert p.label == ("+".join(py_on) if py_on else "none")
        kt_on = [] if res["decisions"][i] == "none" else res["decisions"][i].split(", ")
        assert kt_on == py_on, (files[i].name, probs.round(4).tolist(), thresholds.round(4).tolist())
        on_counts += probs >= thresholds
    # the photos exercise the per-label thresholds: several labels are called, none on every photo
    assert (on_counts > 0).sum() >= 3 and (on_counts < len(files)).all(), on_counts


def test_gradcam_grid_shows_one_test_positive_per_label(odir8, shared, tmp_path):
    """benchmarks/gradcam_grid.py on the 8-label model: a tile per label (a label without a test positive
    in this small split gets a grey one), each shown eye a test positive of its label."""
    import cv2

    from edgeretina.benchmarks.gradcam_grid import TILE, gradcam_grid
    from edgeretina.data import open_dataset
    from edgeretina.run import RunConfig

    run = odir8[0]
    out = tmp_path / "grid.png"
    shown = gradcam_grid(run, shared / "data" / "odir", out, candidates=4)
    assert [ex.label for ex in shown] == LABELS
    test = open_dataset(shared / "data" / "odir", "odir").split(**RunConfig.load(run).split_args())["test"]
    y = {r.key: r.y for r in test}
    for j, ex in enumerate(shown):
        assert (ex.key is None) == (ex.n_positives == 0)
        if ex.key is not None:
            assert y[ex.key][j] == 1.0 and 0.0 <= ex.probability <= 1.0
    img = cv2.imread(str(out))
    assert img.shape[1] == 2 * 2 * TILE and img.shape[0] > 4 * TILE  # 4 rows of 2 tiles (photo | overlay)
