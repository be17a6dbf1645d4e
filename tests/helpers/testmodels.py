"""A small *real* model and its exported variants, for the tests and the pytest-benchmark suites (a test
helper, not part of the installed package: tests import it as ``helpers.testmodels``, benchmarks/suites
through their conftest).

:func:`export_variants` exports a run dir (``model.keras`` + ``config.json``) to .tflite variants with
their embedded metadata; :func:`glaucoma_variants` does that for a given run dir (the tests pass the
self-contained ``tiny_run`` fixture, tests/helpers/tiny.py) or, without one, first trains the same small
model as the test suite's real-data ``small_run`` fixture (MobileNetV2 with ImageNet weights at 96 px,
GAP+softmax head warmed up on cached features of a patient-level ODIR glaucoma sample; test AUROC about
0.8; needs ../shared) through ``edgeretina.train``. Results are memoised per process.
"""
from __future__ import annotations

from pathlib import Path

_CACHE: dict[tuple, dict] = {}

DEFAULT_VARIANTS = ("float32", "fp16", "int8")


def _tempdir() -> Path:
    import atexit
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="edgeretina-bench-models-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return Path(root)


def export_variants(run: str | Path, out_dir: str | Path | None = None, variants=DEFAULT_VARIANTS,
                    calib_n: int = 64, verify_n: int = 32) -> dict[str, Path]:
    """Export ``run`` with ``edgeretina.converters.export_model`` (``out_dir`` default ``run/export``)
    → ``{variant: path}``. Fewer calibration/verification images than the CLI default keep tests short."""
    from edgeretina.converters import export_model
    from edgeretina.converters.metadata import read_metadata

    run = Path(run)
    out = Path(out_dir) if out_dir else run / "export"
    key = (str(run.resolve()), str(out), tuple(variants))
    if key in _CACHE:
        return _CACHE[key]
    export_model(run, list(variants), out, calib_n=calib_n, verify_n=verify_n)
    paths = {}
    for f in sorted(out.glob("*.tflite")):
        v = (read_metadata(f).get("export") or {}).get("variant")
        if v in variants:
            paths[v] = f
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
    a freshly trained :func:`train_small_run`). ``data`` is the run's dataset as ``--data`` takes it (a
    ``str``: a folder, or a ``synthetic:...`` spec)."""
    from edgeretina.run import RunConfig

    run = Path(run) if run else train_small_run()
    tfl = export_variants(run, run.parent / f"{run.name}_export", variants)
    cfg = RunConfig.load(run)
    return {"run": run, "model": run / "model.keras", "export": next(iter(tfl.values())).parent, "tflite": tfl,
            "data": str(cfg.dataset["path"]), "threshold": cfg.threshold}
