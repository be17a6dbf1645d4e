"""Shared fixtures. Real data comes from ``EDGERETINA_SHARED`` (default ``../shared``)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from edgeretina.paths import shared_dir  # noqa: E402

# test helpers (tests/helpers/: tiny models, fake datasets) import as ``helpers.*`` under --import-mode=importlib
TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


@pytest.fixture(scope="session")
def shared():
    d = shared_dir()
    if not (d / "data").is_dir():
        pytest.skip(f"real data not found at {d} (set EDGERETINA_SHARED)")
    return d


def pytest_collection_modifyitems(config, items):
    """Every test that needs the real datasets (the ``shared`` fixture, directly or through ``small_run``)
    carries the ``real_data`` marker: ``-m "not real_data"`` runs the self-contained rest."""
    for item in items:
        if "shared" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session", autouse=True)
def _synthetic_sets_rendered_once():
    """Every ``synthetic:...`` data set is rendered once per test session. The generator is deterministic by
    seed (``edgeretina.data.synthetic``), but its own cache keeps only the most recent set, so the suite's
    interleaved sets (the tiny_run model's 800 images, each test's small ones) were re-rendered at every
    ``open_dataset``, export calibration and bench: ~5 ms of CPU per 96-px image, tens of times. The sets
    memoised here are the generator's real output, handed out as copies like its own cache does. Tests that
    import ``generate`` at module level (test_synthetic.py, ...) still call the generator itself."""
    from edgeretina.data import synthetic

    real, sets = synthetic.generate, {}

    def generate(n: int, seed: int = 0, size: int = 256, glaucoma_fraction: float = 0.5):
        key = (int(n), int(seed), int(size), float(glaucoma_fraction))
        if key not in sets:
            images, labels, info = real(n, seed, size, glaucoma_fraction)
            if images.nbytes > 64 << 20:  # a large set is not kept (the suite's are a few MB)
                return images, labels, info
            sets[key] = (images.copy(), labels.copy(), [dict(m) for m in info])
        images, labels, info = sets[key]
        return images.copy(), labels.copy(), [dict(m) for m in info]

    synthetic.generate = generate
    yield
    synthetic.generate = real


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run dir (``Path``: model.keras + config.json) of a MobileNetV2 trained from scratch for a few
    seconds on the embedded synthetic-fundus set (tests/helpers/tiny.py): no ../shared needed."""
    from helpers.tiny import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("tiny_run") / "run")


@pytest.fixture(scope="session")
def small_run(shared, tmp_path_factory):
    """A run dir (``Path``: model.keras + config.json + metrics.json ...) of a small model that really
    learned: MobileNetV2 1.0 with ImageNet weights at 96 px, GAP+softmax head warmed up on cached features
    of a patient-level sample of ODIR glaucoma (train 400 / val 200 / test 300; test AUROC ≈ 0.8).
    About 40 s on 2 CPU cores. Owned by issue 4 (edgeretina.train); the return value stays a run dir Path."""
    from edgeretina.train import TrainConfig, train_run

    out = tmp_path_factory.mktemp("small_run") / "run"
    cfg = TrainConfig(epochs_warmup=60, epochs_finetune=0, lr_warmup=1e-3, batch_size=16, patience=10)
    return train_run(shared / "data" / "odir", "glaucoma", "mobilenetv2", out, weights="imagenet",
                     input_size=96, config=cfg, max_train=400, max_val=200, max_test=300, n_boot=200,
                     baseline=False)


@pytest.fixture(scope="session")
def tiny_float_logits(tiny_run) -> bytes:
    """The ``tiny_run`` model's logits graph (``converters.tflite.logits_model``) as a float32 .tflite, converted
    once per session: the starting file of the ai-edge-quantizer tests (test_aeq.py, test_gptq.py,
    test_int8_budget.py), which each converted the same model to the same bytes before."""
    from edgeretina.converters.export import load_keras_model
    from edgeretina.converters.tflite import convert, logits_model
    from edgeretina.converters.variants import VARIANTS, Variant

    lm, _ = logits_model(load_keras_model(tiny_run / "model.keras"))
    return convert(lm, VARIANTS[Variant.FLOAT32])
