"""Keras → .tflite bytes. One function per recipe; everything goes through a SavedModel because
``TFLiteConverter.from_saved_model`` is about 2x faster than ``from_keras_model`` for tf_keras models.

Nothing here writes the final artifact: conversion returns bytes, ``export.py`` embeds metadata and writes
them atomically, so a failure anywhere in here leaves no .tflite behind.
"""
from __future__ import annotations

import re
import tempfile
from typing import Callable, Iterable

import numpy as np

from edgeretina._keras import keras, tf
from edgeretina.errors import ExportError
from edgeretina.runtime.flatbuffer import float32_small_constants

from .variants import IO, VariantInfo

FINAL_ACTIVATIONS = ("softmax", "sigmoid")


def _activation_name(layer) -> str | None:
    cls = type(layer).__name__
    if cls == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    name = getattr(act, "__name__", str(act))
    return name if name in FINAL_ACTIVATIONS else None


def final_activation(model) -> str | None:
    """``softmax``/``sigmoid`` if the model's (single) output layer applies it, else None."""
    if len(model.outputs) != 1:
        return None
    last = model.outputs[0]._keras_history.layer  # noqa: SLF001 - Keras 2 public-ish history
    return _activation_name(last)


def logits_model(model):
    """A copy of ``model`` whose final softmax/sigmoid is removed (same weights) → (model, activation).

    Returns ``(model, None)`` unchanged when the model has no final activation to drop. The exported
    graph then outputs logits; the metadata records the activation so runners apply it in float.
    """
    act = final_activation(model)
    if act is None:
        return model, None
    last = model.outputs[0]._keras_history.layer  # noqa: SLF001
    if type(last).__name__ in ("Softmax", "Activation"):
        # edgeretina heads end in Dense "head_logits" → Activation "head_probs": cut the activation off
        return keras.Model(model.inputs, last.input, name=f"{model.name}_logits"), act

    def clone(layer):
        if layer is last:
            cfg = layer.get_config()
            cfg["activation"] = "linear"
            return layer.__class__.from_config(cfg)
        return layer.__class__.from_config(layer.get_config())

    out = keras.models.clone_model(model, clone_function=clone)
    out.set_weights(model.get_weights())
    return out, act


def input_shape(model) -> tuple[int, int, int]:
    shp = tuple(model.inputs[0].shape[1:])
    if len(shp) != 3 or any(s is None for s in shp):
        raise ExportError(f"model input shape {shp} is not (H, W, C) with fixed size")
    return tuple(int(s) for s in shp)


def _saved_model(model, path: str) -> None:
    shp = input_shape(model)

    @tf.function(input_signature=[tf.TensorSpec([None, *shp], tf.float32, name="input")])
    def serve(x):
        return {"output": model(x, training=False)}

    # Save a bare tf.Module holding only the variables and the serving function: saving the Keras model
    # itself makes tf_keras trace and serialise every layer's call functions (MobileNetV2: ~30 s to save and
    # ~10 s per converter load); the bare module saves and loads in seconds and converts to the same graph.
    module = tf.Module()
    module.variables_ = list(model.variables)
    module.serve = serve
    tf.saved_model.save(module, path, signatures={"serving_default": serve})


def _selective(saved_dir: str, info: VariantInfo, representative) -> bytes:
    """Selective int8: rank layers by the QuantizationDebugger's RMSE/scale on (up to 50) calibration images
    and keep the ``info.float_layers`` worst in float. On MobileNetV2-224 glaucoma (docs/export.md) five
    float layers halved decision flips vs full int8 (10.2 → 4.8 %) for +10 % size."""
    if representative is None:
        raise ExportError(f"{info.variant.value} needs a representative dataset (calibration images)")

    def gen():
        for x in representative():
            yield [np.asarray(x, dtype=np.float32)]

    def debug_gen():
        for i, x in enumerate(gen()):
            if i >= 50:
                break
            yield x

    def make():
        c = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = gen
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        return c

    import csv
    import io as _io

    dbg = tf.lite.experimental.QuantizationDebugger(converter=make(), debug_dataset=debug_gen)
    dbg.run()
    buf = _io.StringIO()
    dbg.layer_statistics_dump(buf)
    ranked = []
    for row in csv.DictReader(_io.StringIO(buf.getvalue())):
        try:
            err = float(np.sqrt(float(row["mean_squared_error"]))) / float(row["scale"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        if np.isfinite(err):
            ranked.append((err, row["tensor_name"]))
    ranked.sort(reverse=True)
    nodes = [name for _, name in ranked[: info.float_layers]]
    sel = tf.lite.experimental.QuantizationDebugger(
        converter=make(), debug_dataset=debug_gen,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes))
    return bytes(sel.get_nondebug_quantized_model())


SAVED_PREFIX = "edgeretina-sm-"


def clean_stale_savedmodels() -> int:
    """Remove ``edgeretina-sm-*`` SavedModel folders that killed exports left in the temp directory: only
    those whose lock no live process holds. Returns how many were removed."""
    import fcntl
    import os
    import shutil
    from pathlib import Path

    n = 0
    for d in Path(tempfile.gettempdir()).glob(f"{SAVED_PREFIX}*"):
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live export holds it
        else:
            shutil.rmtree(d, ignore_errors=True)
            n += 1
        finally:
            os.close(fd)
    return n


class SavedModels:
    """SavedModel directories for the Keras models of one export, written once each and reused by every
    variant converted from the same model; removed on ``close()`` / leaving the ``with`` block."""

    def __init__(self):
        import fcntl
        import os

        self._tmp = tempfile.TemporaryDirectory(prefix=SAVED_PREFIX)
        # held while the directory is in use: clean_stale_savedmodels() removes only unlocked (dead) ones
        self._lock = os.open(self._tmp.name, os.O_RDONLY)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._dirs: dict[int, tuple[object, str]] = {}

    def get(self, model) -> str:
        ready = getattr(model, "saved_model_dir", None)  # an imported SavedModel (converters/sources.py)
        if ready:
            return ready
        key = id(model)
        if key not in self._dirs:
            d = f"{self._tmp.name}/{len(self._dirs)}"
            _saved_model(model, d)
            self._dirs[key] = (model, d)  # keep the model alive so its id is not reused
        return self._dirs[key][1]

    def close(self) -> None:
        import os

        self._dirs.clear()
        self._tmp.cleanup()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "SavedModels":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# fp16 files keep every constant of at most this many values in float32 (keep_small_float32).
FP16_FLOAT32_MAX_ELEMENTS = 4096
#: ... and together at most this share of the fp16 file's values (MobileNetV2: ~2.5 %, unaffected; a tiny model's
#: fp16 file stays about half its float32 size)
FP16_FLOAT32_MAX_SHARE = 0.05


def keep_small_float32(fp16: bytes, float32: bytes, max_elements: int = FP16_FLOAT32_MAX_ELEMENTS,
                       max_share: float = FP16_FLOAT32_MAX_SHARE) -> tuple[bytes, dict]:
    """The fp16 file with its small constants (≤ ``max_elements`` values: biases, the first depthwise / project
    convolutions, ...) back in float32, taken from ``float32``, the float32 file of the same graph. Half-precision
    rounding of those few weights carries most of the fp16 file's logit noise (the first depthwise conv and its
    project conv: ~80 % of its variance on the two-view glaucoma model, docs/export.md); a MobileNetV2 has
    ~55 k such values (+110 KB); smallest first, at most ``max_share`` of the file's float16 values (``size_cap``:
    the largest size that share allowed). Returns (file, ``{"float32_constants": {max_elements, max_share,
    size_cap, tensors, values}}``,
    the record the export's metadata and manifest carry as ``quantizer``)."""
    out, n, values, cap = float32_small_constants(fp16, float32, max_elements, max_share)
    return out, {"float32_constants": {"max_elements": int(max_elements), "max_share": float(max_share),
                                       "size_cap": int(cap), "tensors": n, "values": values}}


_ERR_LINE = re.compile(r"error: (.*)")


def _one_line(e: Exception) -> str:
    """The first converter 'error:' line (the MLIR message) or the first line of the exception."""
    msg = str(e)
    m = _ERR_LINE.search(msg)
    line = (m.group(1) if m else msg.strip().splitlines()[0] if msg.strip() else type(e).__name__)
    return re.sub(r"\s+", " ", line)[:300]


def convert(model, info: VariantInfo, *, representative: Callable[[], Iterable[np.ndarray]] | None = None,
            io: IO = IO.INT8, allow_float_fallback: bool = False, qat: bool = False,
            saved: SavedModels | None = None) -> bytes:
    """Convert a Keras model for one variant recipe and return the .tflite bytes.

    - float32: plain conversion. fp16: ``supported_types=[float16]``. dynamic: ``optimizations`` only.
    - full integer (int8, pruned-int8): ``representative`` yields float32 batches of one image;
      ``supported_ops=[TFLITE_BUILTINS_INT8]`` (plus float builtins if ``allow_float_fallback``).
    - qat=True: a quantize-applied model; its ranges come from training, no representative data.
    """
    own_recipe = getattr(model, "convert_variant", None)
    if own_recipe is not None:  # a float .tflite source (converters/sources.py): no TF graph to convert
        return own_recipe(info)
    own = saved is None
    saved = saved or SavedModels()
    try:
        if info.mixed:
            try:
                return _selective(saved.get(model), info, representative)
            except (KeyboardInterrupt, ExportError):
                raise
            except Exception as e:
                raise ExportError(f"{info.variant.value} conversion failed: {_one_line(e)}") from None
        # QAT models too: their FakeQuant ops are in the bare module's graph, which the converter reads as a
        # QAT model (no calibration data). from_keras_model would save the Keras model itself (every layer's
        # call functions traced: ~3x slower on the QAT MobileNetV2) for the same file (same LiteRT outputs).
        conv = tf.lite.TFLiteConverter.from_saved_model(saved.get(model))
        if info.weights == "float16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif info.weights == "int8" and not info.full_integer:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        elif info.full_integer:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if not qat:
                if representative is None:
                    raise ExportError(f"{info.variant.value} needs a representative dataset (calibration images)")

                def gen():
                    for x in representative():
                        yield [np.asarray(x, dtype=np.float32)]

                conv.representative_dataset = gen
            if not qat:
                # (for QAT models the converter validates INT8-only before it has seen the FakeQuant ops and
                # then demands calibration data; verify.float_ops() checks their result is integer instead)
                ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                if allow_float_fallback:
                    ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
                conv.target_spec.supported_ops = ops
            if io is IO.INT8:
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
        try:
            return bytes(conv.convert())
        except (KeyboardInterrupt, ExportError):
            raise
        except Exception as e:  # the converter raises ConverterError / RuntimeError with pages of MLIR
            hint = (" (an op has no int8 kernel; pass --allow-float-fallback to keep it in float)"
                    if info.full_integer and not allow_float_fallback else "")
            raise ExportError(f"{info.variant.value} conversion failed: {_one_line(e)}{hint}") from None
    finally:
        if own:
            saved.close()
