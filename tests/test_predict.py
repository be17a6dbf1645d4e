"""`edgeretina predict MODEL IMAGE...` on photo files with the model's own metadata: the self-contained
``tiny_run`` model (conftest) and its .tflite exports on JPEG files of its own synthetic test photos."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeretina.cli import cli


@pytest.fixture(scope="session")
def bench_models(tiny_run):
    from helpers.testmodels import glaucoma_variants

    return glaucoma_variants(tiny_run)


@pytest.fixture(scope="module")
def photos(bench_models, tmp_path_factory):
    """One glaucoma and two normal test photos of the model's synthetic set, saved as JPEG files."""
    import cv2

    from edgeretina.data import open_dataset

    test = open_dataset(bench_models["data"], "glaucoma").split()["test"]
    pos = [r for r in test if r.y == 1][:1]
    neg = [r for r in test if r.y == 0][:2]
    d = tmp_path_factory.mktemp("photos")
    paths = []
    for r in pos + neg:
        p = d / f"{r.key}.jpg"
        assert cv2.imwrite(str(p), r.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(str(p))
    return paths


def test_predict_prints_class_probability_decision(bench_models, photos):
    images = photos
    res = CliRunner().invoke(cli, ["predict", str(bench_models["tflite"]["int8"]), *images])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["image", "class", "probability", "decision"]
    assert len(lines) == 1 + len(images)
    for line, img in zip(lines[1:], images):
        assert line.startswith(img)
        assert ("glaucoma" in line or "normal" in line) and "p(glaucoma)=" in line
        assert "refer" in line and "threshold" in line


def test_predict_json_agrees_between_keras_and_tflite(bench_models, photos):
    from edgeretina.benchmarks.predict import predict_images

    images = photos
    res = CliRunner().invoke(cli, ["predict", str(bench_models["run"]), *images, "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["image"] for r in rows] == images
    for r in rows:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["probability"] == pytest.approx(r["probabilities"]["glaucoma"])
        assert r["decision"] == ("refer" if r["probability"] >= r["threshold"] else "no referral")
    f32 = predict_images(bench_models["tflite"]["float32"], images)
    for r, p in zip(rows, f32):
        assert p.probability == pytest.approx(r["probability"], abs=1e-4)
        assert p.decision == r["decision"]


def test_predict_bad_inputs_one_line_errors(bench_models, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not a jpeg at all")
    res = CliRunner().invoke(cli, ["predict", str(bench_models["tflite"]["int8"]), str(bad)])
    assert res.exit_code == 2 and res.output.startswith(f"error: {bad}") and len(res.output.splitlines()) == 1
    res = CliRunner().invoke(cli, ["predict", str(tmp_path / "none.tflite"), str(bad)])
    assert res.exit_code == 2 and "no such file" in res.output
    txt = tmp_path / "model.onnx"
    txt.write_text("x")
    res = CliRunner().invoke(cli, ["predict", str(txt), str(bad)])
    assert res.exit_code == 2 and "not a model file" in res.output


def test_predict_reports_per_image_disc_flags_for_onh_models(bench_models, photos, tmp_path):
    """The tiny model crops the optic-nerve head: every prediction says whether its disc crop is a
    low-confidence guess; a featureless field of view (no disc anywhere) is flagged with the reason."""
    import cv2
    import numpy as np

    blank = np.zeros((160, 160, 3), np.uint8)
    cv2.circle(blank, (80, 80), 70, (90, 40, 20), -1)  # a fundus-coloured field of view, no disc in it
    p = tmp_path / "no_disc.png"
    cv2.imwrite(str(p), blank)
    model = bench_models["tflite"]["float32"]
    r = CliRunner().invoke(cli, ["predict", str(model), *photos, str(p), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines() if line.strip().startswith("{")]
    assert len(rows) == len(photos) + 1
    assert all(isinstance(x["disc_flagged"], bool) for x in rows)
    assert rows[-1]["disc_flagged"] is True and rows[-1]["disc_reason"]
    text = CliRunner().invoke(cli, ["predict", str(model), str(p)]).output
    assert "retake advised" in text
