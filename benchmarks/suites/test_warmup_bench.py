"""Warm-up epoch time: head trained on cached backbone features vs through the frozen backbone.

Real ODIR glaucoma images (512 train / 64 val), MobileNetV2 1.0 ImageNet at 224 px, batch 8 (the real
recipe), three epochs each; the median of epochs 2-3 is the per-epoch time. The cached path's one-time cost (running the backbone once over the images) is measured separately
and reported in ``extra_info`` together with the per-epoch ratio. Run: ``python3 dev.py bench -k warmup``.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgeretina.data import load_arrays, open_dataset
from edgeretina.models import build_model
from edgeretina.paths import shared_dir
from edgeretina.preprocess import Pipeline
from edgeretina.train import Arrays, TrainConfig, Trainee, make_loss, warmup
from edgeretina.train import features as F
from edgeretina.train.run import subsample

N_TRAIN, N_VAL, SIZE, BATCH = 512, 64, 224, 8
_times: dict[str, float] = {}


@pytest.fixture(scope="module")
def shared():
    d = shared_dir()
    if not (d / "data" / "odir").is_dir():
        pytest.skip(f"real data not found at {d} (set EDGERETINA_SHARED)")
    return d


@pytest.fixture(scope="module")
def setup(shared):
    ds = open_dataset(shared / "data" / "odir", "glaucoma")
    parts = ds.split("70/10/20", seed=0)
    pipe = Pipeline.default(SIZE, "tf")
    tr = load_arrays(subsample(parts["train"], N_TRAIN, ds.spec), pipe, ds.spec)
    va = load_arrays(subsample(parts["val"], N_VAL, ds.spec), pipe, ds.spec)
    return ds.spec, Arrays(tr[0], tr[1], va[0], va[1]), make_loss("ce", ds.spec)[0]


def _model(spec):
    return build_model("mobilenetv2", spec, SIZE, "imagenet")


EPOCHS = 3


def _phase(model, spec, data, loss, cached, features=None):
    cfg = TrainConfig(epochs_warmup=EPOCHS, batch_size=BATCH, patience=50)
    return warmup(Trainee(model, spec, loss), data, cfg, cached=cached, features=features)


def _per_epoch(res) -> float:
    """Median epoch time after the first (which includes tracing)."""
    return float(np.median([r["seconds"] for r in res.history[1:]]))


def test_warmup_epoch_through_frozen_backbone(benchmark, setup):
    spec, data, loss = setup
    model = _model(spec)
    res = benchmark.pedantic(lambda: _phase(model, spec, data, loss, cached=False), rounds=1, iterations=1)
    _times["through"] = _per_epoch(res)
    benchmark.extra_info.update({"images": N_TRAIN, "input_size": SIZE, "epochs": EPOCHS,
                                 "seconds_per_epoch": round(_times["through"], 3)})


def test_warmup_epoch_on_cached_features(benchmark, setup):
    spec, data, loss = setup
    model = _model(spec)
    t0 = time.perf_counter()
    fm = F.pooled_feature_model(model)
    feats = (F.compute(fm, data.x_train), F.compute(fm, data.x_val))
    one_time = time.perf_counter() - t0
    res = benchmark.pedantic(lambda: _phase(model, spec, data, loss, cached=True, features=feats), rounds=1,
                             iterations=1)
    cached = max(_per_epoch(res), 1e-3)
    benchmark.extra_info.update({"images": N_TRAIN, "input_size": SIZE, "epochs": EPOCHS,
                                 "seconds_per_epoch": round(cached, 4),
                                 "feature_cache_seconds": round(one_time, 3)})
    if "through" in _times:
        ratio = _times["through"] / cached
        benchmark.extra_info["speedup_per_epoch"] = round(ratio, 1)
        # 120 warm-up epochs: cache once + 120 cached epochs vs 120 epochs through the backbone
        benchmark.extra_info["speedup_120_epochs"] = round(
            120 * _times["through"] / (one_time + 120 * cached), 1)
        print(f"\nwarm-up epoch: {_times['through']:.3f} s through the frozen backbone, {cached:.4f} s on "
              f"cached features ({ratio:.0f}x); feature cache {one_time:.2f} s once; 120 epochs "
              f"{benchmark.extra_info['speedup_120_epochs']}x faster")
        assert ratio > 3, f"cached warm-up epoch only {ratio:.1f}x faster"
