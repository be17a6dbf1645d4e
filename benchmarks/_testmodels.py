"""A small *real* model and its exported variants, for the benchmark's tests and pytest-benchmark suites.

:func:`export_variants` exports a run dir (``model.keras`` + ``config.json``) to .tflite variants with
their embedded metadata; :func:`glaucoma_variants` first trains the same small model as the test suite's
``small_run`` fixture (MobileNetV2 with ImageNet weights at 96 px, GAP+softmax head warmed up on cached
features of a patient-level ODIR glaucoma sample; test AUROC about 0.8) through ``edgeretina.train``.
Results are memoised per process.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

_CACHE: dict[tuple, dict] = {}

DEFAULT_VARIANTS = ("float32", "fp16", "int8")


def _tempdir() -> Path:
    import atexit
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="edgeretina-bench-models-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return Path(root)


def _has_exporter() -> bool:
    import importlib.util

    return importlib.util.find_spec("edgeretina.converters.export") is not None


def _export_recipe(run: Path, out_dir: Path, variants, n_calib: int = 64, seed: int = 0) -> dict[str, Path]:
    """The exporter's recipe without its verification pass: one SavedModel, one TFLiteConverter run per
    variant (float32 / fp16 / dynamic / int8 with int8 interface tensors), metadata embedded."""
    import tempfile

    from edgeretina._keras import keras, tf
    from edgeretina.converters.metadata import SCHEMA, embed_metadata
    from edgeretina.converters.variants import Variant
    from edgeretina.data import load_arrays, open_dataset
    from edgeretina.io import write_bytes_atomic
    from edgeretina.preprocess import Pipeline
    from edgeretina.run import RunConfig

    cfg = RunConfig.load(run)
    model = keras.models.load_model(run / "model.keras", compile=False)
    calib = None
    if any(Variant(v).info.calibration for v in variants):
        ds = open_dataset(cfg.dataset["path"], cfg.task)
        from .harness import _split_args

        train = ds.split(**_split_args(cfg))["train"]
        pick = np.random.default_rng(seed).choice(len(train), size=min(n_calib, len(train)), replace=False)
        calib, _ = load_arrays([train[i] for i in sorted(pick)], Pipeline.from_json(cfg.preprocessing))
    paths = {}
    with tempfile.TemporaryDirectory(prefix="edgeretina-sm-") as sm:
        tf.saved_model.save(model, sm)
        for name in variants:
            info = Variant(name).info
            conv = tf.lite.TFLiteConverter.from_saved_model(sm)
            if info.weights == "float16":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.target_spec.supported_types = [tf.float16]
            elif info.weights == "int8" and not info.full_integer:
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
            elif info.full_integer:
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
            elif info.weights != "float32":
                raise ValueError(f"the test recipe does not build variant {name}")
            payload = cfg.to_dict()
            payload["export"] = {"schema": SCHEMA, "variant": name}
            path = out_dir / f"model_{info.suffix}.tflite"
            write_bytes_atomic(path, embed_metadata(bytes(conv.convert()), payload))
            paths[name] = path
    return paths


def export_variants(run: str | Path, out_dir: str | Path | None = None, variants=DEFAULT_VARIANTS,
                    use_exporter: bool | None = None) -> dict[str, Path]:
    """Export ``run`` to ``variants`` in ``out_dir`` (default ``run/export``) → ``{variant: path}``.

    ``use_exporter``: True → ``edgeretina.converters.export_model`` (with its verification); False → the
    same conversion recipe without verification (faster); None → False (tests keep to ≲ 2 minutes)."""
    run = Path(run)
    out = Path(out_dir) if out_dir else run / "export"
    key = (str(run.resolve()), str(out), tuple(variants))
    if key in _CACHE:
        return _CACHE[key]
    out.mkdir(parents=True, exist_ok=True)
    if use_exporter and _has_exporter():
        from edgeretina.converters import export_model

        export_model(run, list(variants), out)
        paths = {}
        from edgeretina.converters.metadata import read_metadata

        for f in sorted(out.glob("*.tflite")):
            v = (read_metadata(f).get("export") or {}).get("variant")
            if v in variants:
                paths[v] = f
    else:
        paths = _export_recipe(run, out, variants)
    _CACHE[key] = paths
    return paths


def train_small_run(out: str | Path | None = None) -> Path:
    """The test suite's ``small_run`` model (same call as ``tests/conftest.py``)."""
    from edgeretina.paths import shared_dir
    from edgeretina.train import TrainConfig, train_run

    key = ("run", str(out))
    if key in _CACHE:
        return _CACHE[key]
    out = Path(out) if out else _tempdir() / "run"
    cfg = TrainConfig(epochs_warmup=60, epochs_finetune=0, lr_warmup=1e-3, batch_size=16, patience=10)
    run = train_run(shared_dir() / "data" / "odir", "glaucoma", "mobilenetv2", out, weights="imagenet",
                    input_size=96, config=cfg, max_train=400, max_val=200, max_test=300, n_boot=200,
                    baseline=False)
    _CACHE[key] = Path(run)
    return Path(run)


def glaucoma_variants(run: str | Path | None = None, variants=DEFAULT_VARIANTS) -> dict:
    """``{"run", "model", "export", "tflite": {variant: path}, "data", "threshold"}`` for ``run`` (default:
    a freshly trained :func:`train_small_run`)."""
    from edgeretina.run import RunConfig

    run = Path(run) if run else train_small_run()
    tfl = export_variants(run, run.parent / f"{run.name}_export", variants)
    cfg = RunConfig.load(run)
    return {"run": run, "model": run / "model.keras", "export": next(iter(tfl.values())).parent, "tflite": tfl,
            "data": Path(cfg.dataset["path"]), "threshold": cfg.threshold}
