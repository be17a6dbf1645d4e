"""The ``small_run`` fixture (used by export and bench tests) is a real, learned run dir."""
from __future__ import annotations

import csv
import json

import numpy as np

from edgeretina._keras import keras
from edgeretina.preprocess import Pipeline
from edgeretina.run import RunConfig, resolve_model_path


def test_small_run_dir_is_complete_and_learned(small_run):
    for name in ("model.keras", "config.json", "history.csv", "metrics.json", "roc.png"):
        assert (small_run / name).is_file(), name
    model_path, cfg = resolve_model_path(small_run)
    assert cfg.task == "glaucoma" and cfg.kind == "binary" and cfg.positive_index == 1
    assert cfg.arch == "mobilenetv2" and cfg.input_size == 96 and cfg.weights == "imagenet"
    assert 0.0 < cfg.threshold < 1.0
    m = json.loads((small_run / "metrics.json").read_text())
    assert m["test"]["auroc"] > 0.7, m["test"]
    assert m["test"]["auroc_ci_low"] < m["test"]["auroc"] < m["test"]["auroc_ci_high"]
    assert m["threshold"]["value"] == cfg.threshold
    rows = list(csv.DictReader(open(small_run / "history.csv")))
    assert rows and rows[0]["phase"] == "warmup"
    # the saved model loads without edgeretina's custom objects and matches its preprocessing
    model = keras.models.load_model(model_path)
    pipe = Pipeline.from_json(cfg.preprocessing)
    assert pipe.input_size == 96 and pipe.scaling == "tf"
    x = np.zeros((1, 96, 96, 3), np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (1, 2) and abs(float(p.sum()) - 1.0) < 1e-5
    assert RunConfig.load(small_run).output == {"activation": "softmax", "kind": "probabilities"}
