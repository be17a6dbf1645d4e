"""The ``aeq`` quantizer backend: full-integer int8 through ai-edge-quantizer (PyPI ``ai-edge-quantizer``).

``edgeretina export --int8 --quantizer aeq``: the Keras model (logits) is first converted to a *float32* .tflite
by the TF converter (``tflite.convert`` with the float32 recipe), then ai-edge-quantizer quantizes that file
with its ``static_wi8_ai8`` recipe (int8 weights per channel, int8 activations) on the same calibration images
the converter backend gets. The result has the same interface convention as the converter's int8 variants:
int8 input/output tensors (``--io int8``, the default) or float32 ones (``--io float``: the quantizer's
``INPUT``/``OUTPUT`` entries set to ``no_quantize``), logits out; bias correction, metadata and verification
run on it exactly as on the converter's bytes (``converters/export.py``).

Activation ranges (``ranges``): ai-edge-quantizer's own calibration keeps a 0.95 moving average of each
image's min/max (``ema``: the result depends on the order of the images and under-covers the early ones);
``minmax`` (the default here) keeps the global min/max over all calibration images, which is what the TF
converter's calibration does, so the two backends differ only in how they quantize, not in which ranges they
see. No TensorFlow import here; ai-edge-quantizer runs the float file in LiteRT itself.
"""
from __future__ import annotations

import contextlib
from io import StringIO
import warnings
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from edgeretina.errors import ExportError
from edgeretina.runtime import LiteRTModel

from .variants import IO

PACKAGE = "ai-edge-quantizer"
RECIPE = "static_wi8_ai8"
RANGES = ("minmax", "ema")
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class AeqInfo:
    """What the aeq backend did (``export.quantizer`` in the metadata and the manifest entry)."""

    backend: str
    version: str | None
    recipe: str
    ranges: str
    n_calibration: int
    float_io: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def available() -> str | None:
    """The installed ai-edge-quantizer version, or None."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def _modules():
    try:
        from ai_edge_quantizer import algorithm_manager, calibrator, qtyping, quantizer, recipe, recipe_manager
    except ImportError as e:
        raise ExportError(f"--quantizer aeq needs the '{PACKAGE}' package ({e}); install it with "
                          f"pip install {PACKAGE}") from None
    return algorithm_manager, calibrator, qtyping, quantizer, recipe, recipe_manager


def _global_minmax(old: dict, new: dict) -> dict:
    """QSV update: the running min of the mins and max of the maxes (the TF converter's calibration)."""
    if not old:
        return new
    return {**old, "min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def input_name(float_tflite: bytes) -> str:
    """The serving signature's (single) input name of a float .tflite."""
    sigs = LiteRTModel(float_tflite, name="float model").interpreter.get_signature_list()
    if SIGNATURE not in sigs or len(sigs[SIGNATURE].get("inputs", [])) != 1:
        raise ExportError(f"--quantizer aeq: the float model has no single-input '{SIGNATURE}' signature "
                          f"(signatures: {sorted(sigs)})")
    return sigs[SIGNATURE]["inputs"][0]


def recipe_for(io: IO) -> list[dict]:
    """The quantization recipe: ``static_wi8_ai8`` on every supported op; float interface tensors for
    ``io=float``."""
    algorithm_manager, _, qtyping, _, recipe, recipe_manager = _modules()
    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(recipe.static_wi8_ai8())
    if io is IO.FLOAT:
        for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            rm.add_quantization_config(".*", op, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    return rm.get_quantization_recipe()


def calibrate(float_tflite: bytes, X: np.ndarray, rcp: list[dict], ranges: str = "minmax",
              threads: int = 2) -> dict:
    """Per-tensor min/max of the float model on the calibration images ``X`` (float32, (N, H, W, C))."""
    if ranges not in RANGES:
        raise ExportError(f"unknown activation ranges '{ranges}' (choose {' or '.join(RANGES)})")
    _, calibrator, _, _, _, recipe_manager = _modules()
    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(rcp)
    name = input_name(float_tflite)
    kw = {"qsv_update_func": _global_minmax} if ranges == "minmax" else {}
    cal = calibrator.Calibrator(float_tflite, num_threads=threads, **kw)
    X = np.asarray(X, dtype=np.float32)
    cal.calibrate({SIGNATURE: [{name: X[i:i + 1]} for i in range(len(X))]}, rm)  # views, in order
    return cal.get_model_qsvs()


def quantize(float_tflite: bytes, X: np.ndarray, io: IO = IO.INT8, ranges: str = "minmax",
             threads: int = 2) -> tuple[bytes, AeqInfo]:
    """Full-integer int8 bytes of ``float_tflite`` calibrated on ``X``, and what was done."""
    if X is None or len(X) == 0:
        raise ExportError("--quantizer aeq needs calibration images")
    _, _, _, quantizer, _, _ = _modules()
    rcp = recipe_for(io)
    try:  # the quantizer's tqdm bars and debugging-mode warning stay out of the user's terminal
        with contextlib.redirect_stderr(StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qsvs = calibrate(float_tflite, X, rcp, ranges, threads)
            qt = quantizer.Quantizer(float_tflite, rcp)
            res = qt.quantize(qsvs, enable_progress_bar=False, enable_progress_report=False)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - the quantizer raises ValueError/RuntimeError with long texts
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"--quantizer aeq: quantization failed ({first[:300]})") from None
    info = AeqInfo("aeq", available(), RECIPE, ranges, int(len(X)), io is IO.FLOAT)
    return bytes(res.quantized_model), info
