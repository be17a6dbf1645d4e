"""A tiny *real* model and its exported variants, for the benchmark's tests and pytest-benchmark suites.

MobileNetV2 (ImageNet weights from the seeded Keras cache) at 96 px with its GAP + softmax head fitted on
frozen features of a few hundred real ODIR training eyes (glaucoma vs normal; logistic regression on the
pooled features, written into the head's Dense layer). Saved as a run dir (``model.keras`` +
``config.json``) and exported to .tflite variants with their embedded metadata via
``edgeretina.converters``. It really learned (test AUROC well above 0.5), so AUROC comparisons mean
something. Building takes about a minute on 2 CPU cores; results are memoised per process.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

_CACHE: dict[tuple, dict] = {}


def _plain(o):
    """Keras wraps dicts/lists set on a model in trackable containers; make them plain again."""
    if hasattr(o, "items"):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)) or type(o).__name__ in ("ListWrapper", "_TupleWrapper"):
        return [_plain(v) for v in o]
    return o


def _balanced(records, n: int, seed: int):
    rng = np.random.default_rng(seed)
    pos = [r for r in records if int(r.y) == 1]
    neg = [r for r in records if int(r.y) == 0]
    k = min(len(pos), n // 2)
    pick_pos = [pos[i] for i in sorted(rng.choice(len(pos), size=k, replace=False))]
    pick_neg = [neg[i] for i in sorted(rng.choice(len(neg), size=min(len(neg), n - k), replace=False))]
    return pick_pos + pick_neg


def _export(model, cfg, out_dir: Path, variants, calib: np.ndarray) -> dict[str, Path]:
    """Export with the exporter's own recipe functions (convert + embed_metadata)."""
    from edgeretina.converters import tflite as conv
    from edgeretina.converters.metadata import SCHEMA, embed_metadata
    from edgeretina.converters.variants import Variant
    from edgeretina.io import write_bytes_atomic

    paths = {}
    for name in variants:
        info = Variant(name).info
        rep = (lambda: (calib[i:i + 1] for i in range(len(calib)))) if info.calibration else None
        data = conv.convert(model, info, representative=rep)
        payload = cfg.to_dict()
        payload["export"] = {"schema": SCHEMA, "variant": name}
        path = out_dir / f"model_{info.suffix}.tflite"
        write_bytes_atomic(path, embed_metadata(data, payload))
        paths[name] = path
    return paths


def glaucoma_variants(root: str | Path, variants=("float32", "fp16", "int8"), input_size: int = 96,
                      n_train: int = 240, seed: int = 0) -> dict:
    """Build (once per process) → ``{"run": run_dir, "model": model.keras, "tflite": {variant: path},
    "data": odir_path, "export": dir of the .tflite files}``."""
    key = (str(root), tuple(variants), input_size, n_train, seed)
    if key in _CACHE:
        return _CACHE[key]
    from sklearn.linear_model import LogisticRegression

    from edgeretina._keras import keras
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.models import build_model
    from edgeretina.paths import seed_keras_cache, shared_dir
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig

    keras.utils.set_random_seed(seed)
    seed_keras_cache()
    data = shared_dir() / "data" / "odir"
    ds = open_dataset(data, "glaucoma")
    split = {"scheme": "70/10/20", "seed": seed}
    parts = ds.split(**split)
    model = build_model("mobilenetv2", ds.spec, input_size=input_size, weights="imagenet")
    pipeline = Pipeline.default(input_size, model.edgeretina["scaling"])
    X, y = load_arrays(_balanced(parts["train"], n_train, seed), pipeline)
    features = keras.Model(model.input, model.get_layer("head_gap").output)
    F = features.predict(X, batch_size=32, verbose=0)
    clf = LogisticRegression(C=0.5, max_iter=2000).fit(F, y)
    w, b = clf.coef_[0], clf.intercept_[0]
    dense = model.get_layer("head_logits")
    # 2-way softmax of (-z/2, z/2) = sigmoid(z): the same decision function as the logistic regression
    dense.set_weights([np.stack([-w / 2, w / 2], axis=1).astype(np.float32),
                       np.array([-b / 2, b / 2], dtype=np.float32)])
    root = Path(root)
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    Xv, yv = load_arrays(_balanced(parts["val"], 120, seed), pipeline)
    from sklearn.metrics import roc_curve

    pv = model.predict(Xv, batch_size=32, verbose=0)[:, 1]
    fpr, tpr, thr = roc_curve(yv, pv)
    threshold = float(thr[np.argmax(tpr - fpr)]) if np.isfinite(thr[np.argmax(tpr - fpr)]) else 0.5
    meta = _plain(model.edgeretina)
    cfg = RunConfig(task=ds.spec.task.value, kind=ds.spec.kind.value, labels=ds.spec.labels,
                    preprocessing=pipeline.to_json(), arch=meta["arch"], input_size=input_size,
                    weights=meta["weights"], head=meta["head"], positive_index=ds.spec.positive_index,
                    threshold=threshold, dataset={"path": str(data), "format": ds.format, "split": split})
    cfg.save(run)
    export = root / "export"
    export.mkdir(exist_ok=True)
    calib = X[np.random.default_rng(seed).choice(len(X), size=min(64, len(X)), replace=False)]
    tfl = _export(model, cfg, export, variants, calib)
    out = {"run": run, "model": run / "model.keras", "tflite": tfl, "data": data, "export": export,
           "threshold": threshold}
    _CACHE[key] = out
    return out
