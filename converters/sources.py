"""What a run dir's model is, and how the exporter reads each kind (issue 19, ``edgeretina import``).

A run dir holds its model in one of three forms, with ``config.json`` beside it:

- ``model.keras`` — a Keras 2 (tf_keras) model: trained by ``edgeretina train`` or imported from a Keras 2
  ``.h5``/``.keras``. Every variant works, pruned and QAT ones included (tfmot needs Keras 2).
- ``saved_model/`` — a TensorFlow SavedModel written by ``edgeretina import`` (from a SavedModel or a
  Keras 3 ``.keras``): one ``serving_default`` signature, input ``input`` float32 ``(B, S, S, 3)``, output
  ``output`` ``(B, K)``. The TF converter reads it directly: float32, fp16, dynamic, int8, mixed, int8-guard.
- ``model.tflite`` — a float .tflite: float32 is the file itself, fp16 / dynamic / int8 come from
  ai-edge-quantizer (``converters/aeq.py`` for int8), int8-guard from those; mixed needs the TF converter's
  QuantizationDebugger and is refused.

The exporter (``converters/export.py``) treats the SavedModel and .tflite sources like a Keras model through
the few methods it calls: ``predict(X)`` → probabilities (the task's activation applied when the graph
outputs logits), :func:`input_shape`, :func:`logits_model` (the raw-logit view when the graph outputs logits)
and, for the .tflite, ``convert_variant`` (``tflite.convert`` calls it instead of the TF converter).
``config.json``'s ``output`` always says what the stored graph emits, so every variant's metadata is right.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io as _io
import warnings
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.errors import ExportError, ModelError
from edgeretina.run import MODEL_FILE, RunConfig, file_sha256, resolve_model_path
from edgeretina.runtime import LiteRTModel
from edgeretina.tasks import activate

from .variants import VariantInfo

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
SIGNATURE = "serving_default"
INPUT_NAME = "input"
OUTPUT_NAME = "output"


class SourceFormat(str, Enum):
    """What the user handed to ``edgeretina import`` (``config.json`` ``extra.import.source_format``)."""

    KERAS2 = "keras2"
    KERAS3 = "keras3"
    SAVED_MODEL = "savedmodel"
    TFLITE = "tflite"


GRAPH_ONLY = "float32, fp16, dynamic, int8, mixed, int8-guard"


def resolve_source(path: str | Path) -> tuple[Path, RunConfig]:
    """A run dir (``model.keras``, ``saved_model/`` or ``model.tflite`` + ``config.json``) or a ``.keras``
    file → (model path, its config). One-line ``ModelError`` otherwise."""
    p = Path(path)
    if p.is_dir() and not (p / MODEL_FILE).exists():
        for cand in (p / SAVED_MODEL_DIR, p / TFLITE_FILE):
            if cand.exists():
                return cand, RunConfig.load(p)
        if (p / "saved_model.pb").is_file():
            raise ModelError(f"{p}: a bare SavedModel, not a run dir; run `edgeretina import {p} --task …` first")
        raise ModelError(f"{p}: no {MODEL_FILE}, {SAVED_MODEL_DIR}/ or {TFLITE_FILE} in this run dir")
    if p.is_file() and p.suffix in (".h5", ".hdf5", ".tflite") and not (p.parent / "config.json").is_file():
        raise ModelError(f"{p}: not a run dir; run `edgeretina import {p} --task …` first")
    return resolve_model_path(p)


def import_info(cfg: RunConfig) -> dict[str, Any]:
    return dict((cfg.extra or {}).get("import") or {})


def source_sha256(path: str | Path) -> str:
    """sha256 of a model file, or of a SavedModel folder (every file's relative path and bytes, sorted)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def refusal(model_path: Path, cfg: RunConfig, infos: tuple[VariantInfo, ...]) -> str | None:
    """Why this run's source cannot build one of ``infos`` (one line), or None."""
    if model_path.name == MODEL_FILE or model_path.suffix == ".keras":
        return None
    fmt = import_info(cfg).get("source_format") or ("tflite" if model_path.suffix == ".tflite" else "savedmodel")
    what = {"keras3": "a Keras 3 model (kept as a SavedModel)", "savedmodel": "a TensorFlow SavedModel",
            "tflite": "a float .tflite"}.get(fmt, fmt)
    trains = [i.variant.value for i in infos if i.trains]
    if trains:
        return (f"{', '.join(trains)}: pruning and QAT fine-tune a Keras 2 (tf_keras) model, and this run was "
                f"imported from {what}; graph-only variants work: {GRAPH_ONLY}")
    if model_path.suffix == ".tflite":
        mixed = [i.variant.value for i in infos if i.mixed]
        if mixed:
            return (f"{', '.join(mixed)}: selective quantization needs the TF converter's graph, and this run "
                    "was imported from a float .tflite; use --int8, --int8-guard, --dynamic or --fp16")
    return None


def open_source(model_path: Path, cfg: RunConfig):
    """The exporter's view of a non-Keras run model (a SavedModel folder or a float .tflite)."""
    output = dict(cfg.output or {})
    if model_path.suffix == ".tflite":
        return TFLiteSource(model_path, output)
    return SavedModelSource(model_path, output)


def input_shape(model) -> tuple[int, int, int]:
    """(H, W, C) of a Keras model or a source."""
    shp = getattr(model, "input_hwc", None)
    if shp is not None:
        return tuple(shp)
    from .tflite import input_shape as keras_input_shape  # heavy: tflite.py imports TensorFlow

    return keras_input_shape(model)


def logits_model(model):
    """(logit model, activation) of a Keras model (``tflite.logits_model``) or a source: the raw view when
    the stored graph outputs logits, else ``(model, None)`` (no logit graph to export)."""
    if isinstance(model, _Source):
        return (model.raw_view(), model.activation) if model.activation else (model, None)
    from .tflite import logits_model as keras_logits_model  # heavy: tflite.py imports TensorFlow

    return keras_logits_model(model)


class _Source:
    """Common part: ``predict`` returns probabilities, or raw logits for the :meth:`raw_view`."""

    activation: str | None  # set when the stored graph outputs logits
    raw_logits: bool = False
    input_hwc: tuple[int, int, int]
    name: str

    def _raw(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        raw = self._raw(np.asarray(X, dtype=np.float32))
        if self.activation and not self.raw_logits:
            return activate(raw, self.activation).astype(np.float32)
        return raw.astype(np.float32)

    def raw_view(self) -> "_Source":
        v = copy.copy(self)
        v.raw_logits = True
        v.name = f"{self.name}_logits"
        return v


class SavedModelSource(_Source):
    """A SavedModel written by ``edgeretina import``; ``saved_model_dir`` is what the TF converter reads
    (``tflite.SavedModels.get`` passes it through)."""

    def __init__(self, path: Path, output: dict):
        from edgeretina._keras import tf

        self.saved_model_dir, self.name = str(path), Path(path).parent.name or "model"
        try:
            self._loaded = tf.saved_model.load(str(path))
            self._fn = self._loaded.signatures[SIGNATURE]
            spec = self._fn.structured_input_signature[1][INPUT_NAME]
        except (OSError, KeyError, ValueError) as e:
            raise ModelError(f"{path}: not a SavedModel written by edgeretina import ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:150] if str(e) else ''})") from None
        self.batch = spec.shape[0]
        self.input_hwc = tuple(int(d) for d in spec.shape[1:])
        self.activation = output.get("activation") if output.get("kind") == "logits" else None

    def _raw(self, X: np.ndarray) -> np.ndarray:
        from edgeretina._keras import tf

        bs = self.batch or 32
        outs = [self._fn(**{INPUT_NAME: tf.constant(X[i:i + bs])})[OUTPUT_NAME].numpy()
                for i in range(0, len(X), bs)]
        return np.concatenate(outs, axis=0).reshape(len(X), -1) if outs else np.zeros((0, 0), np.float32)


class TFLiteSource(_Source):
    """A float .tflite: predicts in LiteRT; ``convert_variant`` builds float32 / fp16 / dynamic without the TF
    converter (full-integer int8 goes through ``aeq.quantize`` in the exporter)."""

    def __init__(self, path: Path, output: dict):
        self.tflite_bytes = Path(path).read_bytes()
        self.name = Path(path).parent.name or "model"
        self._m = LiteRTModel(self.tflite_bytes, threads=2, name=str(path))
        self.input_hwc = self._m.input_shape
        self.activation = output.get("activation") if output.get("kind") == "logits" else None

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self._m.raw(X)

    def convert_variant(self, info: VariantInfo, **_ignored) -> bytes:
        if info.weights == "float32" and info.activations == "float32" and not info.trains:
            return self.tflite_bytes
        if info.weights == "float16":
            return quantize_weights(self.tflite_bytes, "fp16")
        if info.weights == "int8" and not info.full_integer:
            return quantize_weights(self.tflite_bytes, "dynamic")
        raise ExportError(f"{info.variant.value}: not available for a float .tflite source")


def quantize_weights(float_tflite: bytes, kind: str) -> bytes:
    """ai-edge-quantizer without calibration: ``fp16`` (float16 weights of conv / dense layers, float
    compute: the TF converter's fp16 recipe) or ``dynamic`` (``dynamic_wi8_afp32``: int8 weights, activations
    quantized on the fly)."""
    try:
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe, recipe_manager
    except ImportError as e:
        raise ExportError(f"a .tflite source needs the 'ai-edge-quantizer' package for {kind} ({e})") from None
    if kind == "dynamic":
        rcp = recipe.dynamic_wi8_afp32()
    else:
        rm = recipe_manager.RecipeManager()
        cfg = qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
        ops = qtyping.TFLOperationName
        for op in (ops.FULLY_CONNECTED, ops.CONV_2D, ops.DEPTHWISE_CONV_2D, ops.CONV_2D_TRANSPOSE):
            rm.add_quantization_config(".*", op, op_config=cfg, algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        rcp = rm.get_quantization_recipe()
    try:
        with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = quantizer.Quantizer(float_tflite, rcp).quantize(enable_progress_bar=False, enable_progress_report=False)
    except Exception as e:  # noqa: BLE001 - the quantizer raises ValueError/RuntimeError with long texts
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"{kind} from a float .tflite failed ({first[:300]})") from None
    return bytes(res.quantized_model)
