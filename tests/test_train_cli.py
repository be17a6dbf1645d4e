"""`edgeretina train` on real data, and its one-line errors for bad arguments."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeretina.cli import cli


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = [l for l in res.output.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.output  # progress lines may precede it
    for n in needles:
        assert n in errors[0], errors[0]
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def odir(shared):
    return str(shared / "data" / "odir")


def test_unknown_arch(odir, tmp_path):
    _one_line_error(_run(["train", "--data", odir, "--task", "glaucoma", "--arch", "resnet9000",
                          "--out", str(tmp_path / "r")]), "unknown architecture 'resnet9000'")


def test_unknown_task(odir, tmp_path):
    _one_line_error(_run(["train", "--data", odir, "--task", "cataract", "--arch", "mobilenetv2",
                          "--out", str(tmp_path / "r")]), "unknown task 'cataract'")


def test_task_not_served_by_dataset(odir, tmp_path):
    _one_line_error(_run(["train", "--data", odir, "--task", "dr", "--arch", "mobilenetv2",
                          "--out", str(tmp_path / "r")]), "odir dataset does not serve task 'dr'", "glaucoma")


def test_input_size_below_minimum(odir, tmp_path):
    _one_line_error(_run(["train", "--data", odir, "--task", "glaucoma", "--arch", "inceptionv3",
                          "--input-size", "64", "--out", str(tmp_path / "r")]),
                    "input size 64 is below InceptionV3's minimum of 75")


def test_weights_file_of_wrong_architecture(shared, tmp_path):
    from edgeretina.models import build_backbone

    w = tmp_path / "resnet_like.h5"
    build_backbone("mobilenet", 32, None, alpha=0.25).save_weights(str(w))
    res = _run(["train", "--data", str(shared / "data" / "retinamnist" / "retinamnist.npz"), "--task", "dr",
                "--arch", "mobilenetv2", "--alpha", "0.35", "--input-size", "32", "--weights", str(w),
                "--out", str(tmp_path / "r")])
    _one_line_error(res, "resnet_like.h5", "not MobileNetV2 (no-top) weights")
    _one_line_error(_run(["train", "--data", "synthetic", "--task", "glaucoma", "--arch", "mobilenetv2",
                          "--weights", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "r")]),
                    "nope.h5: weights file not found")


def test_bad_policy_loss_and_numbers(odir, tmp_path):
    base = ["train", "--data", odir, "--task", "glaucoma", "--arch", "mobilenetv2", "--out", str(tmp_path / "r")]
    _one_line_error(_run(base + ["--freeze", "half"]), "unknown freezing policy 'half'")
    _one_line_error(_run(base + ["--loss", "focal"]), "unknown loss 'focal'")
    _one_line_error(_run(base + ["--grid-lr", "fast"]), "--grid-lr")
    _one_line_error(_run(base + ["--head", "mlp:3"]), "unknown head")


def test_train_cli_tiny_real_run(shared, tmp_path):
    out = tmp_path / "run"
    res = _run(["train", "--data", str(shared / "data" / "retinamnist" / "retinamnist.npz"), "--task",
                "referable-dr", "--arch", "mobilenetv2", "--alpha", "0.35", "--weights", "none",
                "--input-size", "32", "--epochs-warmup", "2", "--epochs-finetune", "1", "--max-train", "200",
                "--max-test", "100", "--bootstrap", "50", "--freeze", "partial:0.2", "--head", "fc:16",
                "--strategy", "mirrored", "--augment", "mvoulana",
                "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "[warmup] epoch 1/2" in res.output and "[finetune] epoch 1/1" in res.output
    assert "test AUROC" in res.output and "run dir:" in res.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["head"]["type"] == "fc" and cfg["head"]["units"] == [16]
    assert cfg["extra"]["train"]["freeze"] == "partial:0.2" and cfg["extra"]["arch_options"] == {"alpha": 0.35}
    assert cfg["extra"]["strategy"] == "mirrored"
    assert cfg["preprocessing"]["steps"][-1] == {"name": "scale", "params": {"mode": "tf"}}


def test_train_enhance_ben_graham_travels_in_the_preprocessing(shared, tmp_path):
    """--enhance ben-graham (the DR study's Gaussian filter) is a pipeline step of the run, applied to real
    APTOS photos, so export/predict/the app prepare images the same way."""
    out = tmp_path / "run"
    res = _run(["train", "--data", str(shared / "data" / "aptos"), "--task", "dr", "--arch", "mobilenetv2",
                "--alpha", "0.35", "--weights", "none", "--input-size", "32", "--head-fit", "linear",
                "--enhance", "ben-graham", "--max-train", "150", "--max-val", "30", "--max-test", "20",
                "--bootstrap", "20", "-q", "--out", str(out)])
    assert res.exit_code == 0, res.output
    steps = [s["name"] for s in json.loads((out / "config.json").read_text())["preprocessing"]["steps"]]
    assert steps == ["fov_crop", "pad_square", "resize", "ben_graham", "scale"]


def test_enhance_refused_with_two_view(odir, tmp_path):
    res = _run(["train", "--data", odir, "--task", "glaucoma", "--arch", "mobilenetv2", "--crop", "two-view",
                "--enhance", "ben-graham", "--out", str(tmp_path / "r")])
    _one_line_error(res, "two-view", "Ben Graham")
    assert not (tmp_path / "r").exists()


def test_importing_keras_prints_no_tensorflow_noise():
    """TensorFlow's absl lines at import (oneDNN, no CUDA drivers, cuInit) stay out of the user's terminal."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "import edgeretina._keras"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
