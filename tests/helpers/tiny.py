"""A tiny real model that learned something, made without ``../shared``: a MobileNetV2 trained from scratch
for a few seconds on the embedded synthetic-fundus generator (``edgeretina.data.synthetic``), saved as a
run dir (``model.keras`` + ``config.json`` through ``RunConfig``, like ``edgeretina demo``). The export and
bench tests use it (``tiny_run`` fixture in tests/conftest.py)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

N_IMAGES = 800         # synthetic images (split 70/10/20 → 80 val, 160 test images)
IMAGE_SIZE = 96
INPUT_SIZE = 48
ALPHA = 1.0            # MobileNetV2 1.0: 53 weight layers, ~2.2 M parameters (the bench tests' size checks)
EPOCHS = 3
SEED = 0
DATASET = f"synthetic:n={N_IMAGES},size={IMAGE_SIZE},seed={SEED}"


def recalibrate_batchnorm(model, x) -> None:
    """Set every BatchNormalization layer's moving statistics to those of one training-mode pass over ``x``.
    After a few epochs from scratch the moving averages still lag the weights: the inference-mode model then
    scores every image about the same (p(glaucoma) 0.15–0.21 here, AUROC 0.94 only by tiny differences),
    which hides quantization effects; recalibrated, its scores span 0.01–1 (AUROC 0.95)."""
    from edgeretina._keras import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in bns]
    for layer in bns:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, m in zip(bns, momenta):
        layer.momentum = m


def train_tiny_run(out: str | Path, epochs: int = EPOCHS, alpha: float = ALPHA) -> Path:
    """Train and save the tiny run dir at ``out``; returns ``out``."""
    from edgeretina._keras import keras
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.io import write_json_atomic
    from edgeretina.metrics import auroc, youden_threshold
    from edgeretina.models import build_model
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig
    from edgeretina.train.run import save_clean_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    keras.utils.set_random_seed(SEED)
    ds = open_dataset(DATASET, "glaucoma")
    parts = ds.split("70/10/20", seed=SEED)
    spec = ds.spec
    pipeline = Pipeline.default(INPUT_SIZE, "tf", onh=True)
    X, y = load_arrays(parts["train"], pipeline)
    Xv, yv = load_arrays(parts["val"], pipeline)
    model = build_model("mobilenetv2", spec, input_size=INPUT_SIZE, weights=None, alpha=alpha)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9  # from-scratch BN statistics must follow a short training
    steps = int(np.ceil(len(X) / 32)) * epochs
    lr = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    model.fit(X, np.asarray(y), batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    recalibrate_batchnorm(model, X[:512])
    pv = model.predict(Xv, batch_size=64, verbose=0)[:, spec.positive_index]
    threshold = youden_threshold(np.asarray(yv), pv)
    cfg = RunConfig(task=spec.task.value, kind=spec.kind.value, labels=spec.labels,
                    preprocessing=pipeline.to_json(), arch="mobilenetv2", input_size=INPUT_SIZE, weights=None,
                    head={"type": "gap"}, positive_index=spec.positive_index, threshold=threshold,
                    dataset={"path": DATASET, "format": "synthetic", "split": {"scheme": "70/10/20", "seed": SEED}},
                    extra={"arch_options": {"alpha": alpha}, "bn_momentum": 0.9, "tiny_test_model": True})
    save_clean_model(model, out / "model.keras")
    cfg.save(out)
    write_json_atomic(out / "metrics.json", {"val_auroc": auroc(yv, pv), "threshold": threshold,
                                              "seconds": round(time.perf_counter() - t0, 1)})
    return out


if __name__ == "__main__":  # python tests/helpers/tiny.py OUT: train once and print what it learned
    import json
    import sys

    d = train_tiny_run(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny_run")
    print(json.dumps(json.loads((d / "metrics.json").read_text())))
