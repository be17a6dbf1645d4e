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

Dead channels: a channel with (near-)zero weights and a bias (MobileNetV2's ImageNet ``Conv1`` has 7 of 32)
gets a weight scale of ``max |w| / 127`` ≈ 1e-11 from ai-edge-quantizer, so its int32 bias (step = input
scale × weight scale) overflows and is clamped: that channel's output is wrong on every image. Every
quantized file is therefore passed through ``runtime/flatbuffer.py:fit_int32_biases``, which grows such a
channel's weight scale until the bias fits (what the TF converter does), counted in
``bias_refit_channels``.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from io import StringIO
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Sequence

import numpy as np

from edgeretina.errors import ExportError
from edgeretina.runtime import LiteRTModel
from edgeretina.runtime.flatbuffer import fit_int32_biases, float_biases, op_names

from . import ranges as ranges_mod
from .variants import IO

PACKAGE = "ai-edge-quantizer"
RECIPE = "static_wi8_ai8"
RANGES = ("minmax", "ema", "percentile", "mse")
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
    range_edit: dict[str, Any] | None = None   # percentile / mse: tensors edited (converters/ranges.py)
    budget: dict[str, Any] | None = None       # --max-flips / --max-logit-noise: float layers (budget.py)
    bias_refit_channels: int = 0               # channels whose int32 bias did not fit (fit_int32_biases)

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


def recipe_for(io: IO, float_scopes: Sequence[str] = ()) -> list[dict]:
    """The quantization recipe: ``static_wi8_ai8`` on every supported op; float interface tensors for
    ``io=float``; the ops whose scope (``;``-joined output tensor names, :func:`op_table`) is in
    ``float_scopes`` kept float (``no_quantize``: the quantizer inserts dequantize/quantize around them)."""
    algorithm_manager, _, qtyping, _, recipe, recipe_manager = _modules()
    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(recipe.static_wi8_ai8())
    if io is IO.FLOAT:
        for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            rm.add_quantization_config(".*", op, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    for scope in float_scopes:  # the later, narrower entries win over ".*"
        rm.add_quantization_config("^" + re.escape(scope) + "$", qtyping.TFLOperationName.ALL_SUPPORTED,
                                   algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    return rm.get_quantization_recipe()


@dataclass(frozen=True)
class Op:
    """One operator of a float .tflite: its position, type, scope (what a recipe entry matches) and
    multiply-adds (convolutions and fully-connected layers; 0 for the rest)."""

    index: int
    type: str
    scope: str
    macs: int

    @property
    def layer(self) -> str:
        """A short layer name: the path part before the op of the scope's first tensor (``Conv1_relu`` →
        ``Conv1``; ``.../block_3_project/Conv2D`` → ``block_3_project``)."""
        parts = [p for p in self.scope.split(";")[0].split("/") if p]
        name = parts[-2] if len(parts) > 1 else (parts or [self.scope])[0]
        return re.sub(r"_(relu|BN|bn)$", "", name)


PASS_THROUGH = {"PAD", "RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE", "SOFTMAX", "LOGISTIC", "CONCATENATION"}


def op_table(float_tflite: bytes) -> list[Op]:
    """The float model's operators (first subgraph), with the scopes ai-edge-quantizer matches recipes on."""
    _modules()
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fu

    model = fu.read_model(float_tflite)
    sg, codes = model.subgraphs[0], model.operatorCodes
    names = op_names()
    ops = []
    for i, op in enumerate(sg.operators):
        code = codes[op.opcodeIndex]
        typ = names.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)), str(code.builtinCode))
        ops.append(Op(i, typ, fu.get_op_scope(op, sg.tensors), _macs(typ, op, sg.tensors)))
    return ops


def _macs(typ: str, op, tensors) -> int:
    out = [int(d) for d in tensors[op.outputs[0]].shape] if len(op.outputs) else []
    w = [int(d) for d in tensors[op.inputs[1]].shape] if len(op.inputs) > 1 else []
    if typ == "CONV_2D" and len(w) == 4 and len(out) == 4:
        return out[1] * out[2] * w[0] * w[1] * w[2] * w[3]
    if typ == "DEPTHWISE_CONV_2D" and len(w) == 4 and len(out) == 4:
        return out[1] * out[2] * w[3] * w[1] * w[2]
    if typ == "FULLY_CONNECTED" and len(w) == 2:
        return w[0] * w[1]
    return 0


def candidates(ops: Sequence[Op]) -> list[Op]:
    """The ops whose float fallback can matter (pass-through ops such as PAD/RESHAPE aside). The last op
    writes the model's output: it stays int8, so a budgeted model keeps the full-integer interface (a float
    output op made the exported file's output float32, which verification rightly refuses)."""
    return [o for o in ops[:-1] if o.type not in PASS_THROUGH]


def calibrate(float_tflite: bytes, X: np.ndarray, rcp: list[dict], ranges: str = "minmax",
              threads: int = 2) -> dict:
    """Per-tensor min/max of the float model on the calibration images ``X`` (float32, (N, H, W, C)); for
    ``percentile`` / ``mse`` ranges, edited from a histogram pass (``converters/ranges.py``)."""
    return _calibrate(float_tflite, X, rcp, ranges, threads)[0]


def cap_ranges(qsvs: dict, caps: dict[str, float] | None) -> dict:
    """``qsvs`` with the upper end of every tensor whose name contains a key of ``caps`` lowered to that cap
    (``--residual-weights``: values above it are clipped losslessly by the ReLU6 after the sum)."""
    if not caps:
        return qsvs
    out = dict(qsvs)
    for name, q in qsvs.items():
        for pattern, cap in caps.items():
            if pattern in name and "max" in q:
                out[name] = {**q, "max": np.minimum(np.asarray(q["max"], np.float32), np.float32(cap))}
    return out


def _calibrate(float_tflite: bytes, X: np.ndarray, rcp: list[dict], ranges: str, threads: int,
               caps: dict[str, float] | None = None) -> tuple[dict, dict | None]:
    if ranges not in RANGES:
        raise ExportError(f"unknown activation ranges '{ranges}' (choose {', '.join(RANGES)})")
    _, calibrator, _, _, _, recipe_manager = _modules()
    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(rcp)
    name = input_name(float_tflite)
    kw = {"qsv_update_func": _global_minmax} if ranges != "ema" else {}
    cal = calibrator.Calibrator(float_tflite, num_threads=threads, **kw)
    X = np.asarray(X, dtype=np.float32)
    cal.calibrate({SIGNATURE: [{name: X[i:i + 1]} for i in range(len(X))]}, rm)  # views, in order
    qsvs = cal.get_model_qsvs()
    if ranges in ranges_mod.RULES:
        qsvs, edit = ranges_mod.edit(qsvs, ranges_mod.histograms(float_tflite, X, qsvs, threads), ranges)
        return cap_ranges(qsvs, caps), edit
    return cap_ranges(qsvs, caps), None


class Quantization:
    """One calibration of a float .tflite, quantized as often as asked (each time with another set of float
    ops): ``Quantization(fb, X, io, ranges).quantize(float_scopes)`` → int8 bytes. Calibration is the slow
    part (the float model on every image); quantizing is a fraction of a second."""

    def __init__(self, float_tflite: bytes, X: np.ndarray, io: IO = IO.INT8, ranges: str = "minmax",
                 threads: int = 2, caps: dict[str, float] | None = None):
        if X is None or len(X) == 0:
            raise ExportError("--quantizer aeq needs calibration images")
        self.fb, self.io, self.ranges, self.n = float_tflite, io, ranges, int(len(X))
        self.biases, self.refit = float_biases(float_tflite), 0
        with _quiet():
            self.qsvs, self.range_edit = _calibrate(float_tflite, X, recipe_for(io), ranges, threads, caps)

    def quantize(self, float_scopes: Sequence[str] = ()) -> bytes:
        _, _, _, quantizer, _, _ = _modules()
        with _quiet():
            qt = quantizer.Quantizer(self.fb, recipe_for(self.io, float_scopes))
            res = qt.quantize(self.qsvs, enable_progress_bar=False, enable_progress_report=False)
        out, self.refit = fit_int32_biases(bytes(res.quantized_model), self.biases)  # dead channels' biases
        return out

    def info(self) -> AeqInfo:
        return AeqInfo("aeq", available(), RECIPE, self.ranges, self.n, self.io is IO.FLOAT, self.range_edit,
                       bias_refit_channels=self.refit)


@contextlib.contextmanager
def _quiet():
    """The quantizer's tqdm bars and debugging-mode warning stay out of the user's terminal; its errors
    become one-line ``ExportError``s."""
    try:
        with contextlib.redirect_stderr(StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - the quantizer raises ValueError/RuntimeError with long texts
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"--quantizer aeq: quantization failed ({first[:300]})") from None


def quantize(float_tflite: bytes, X: np.ndarray, io: IO = IO.INT8, ranges: str = "minmax",
             threads: int = 2, caps: dict[str, float] | None = None) -> tuple[bytes, AeqInfo]:
    """Full-integer int8 bytes of ``float_tflite`` calibrated on ``X`` (``caps``: see ``cap_ranges``), and what
    was done."""
    q = Quantization(float_tflite, X, io, ranges, threads, caps)
    return q.quantize(), q.info()
