"""The only place a LiteRT (ai-edge-litert) interpreter is created: :class:`LiteRTModel`.

It loads a .tflite (bytes or path) with a thread count and optional delegates, quantizes float32 inputs for
integer interface tensors and dequantizes integer outputs with the tensor's own (scale, zero point) and the
range of its dtype (``np.iinfo``), runs batch 1 one image at a time, and times batch-1 invokes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgeretina.errors import ModelError

from .decisions import probabilities
from .timing import Timing, time_batch1

_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


def qparams(detail: dict) -> tuple[float, int] | None:
    """(scale, zero point) of a tensor detail (per-tensor; the first channel's if per-channel), or None
    when the tensor is not quantized."""
    if np.dtype(detail["dtype"]).kind not in "iu":
        return None
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []))
    zps = np.asarray(q.get("zero_points", []))
    if scales.size == 0:
        scale, zp = detail.get("quantization", (0.0, 0))
        return (float(scale), int(zp)) if scale else None
    return float(scales.reshape(-1)[0]), int(zps.reshape(-1)[0]) if zps.size else 0


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float model input → the tensor's dtype: ``round(x / scale + zp)`` clipped to the dtype's range for a
    quantized integer tensor, a plain cast otherwise."""
    dtype = np.dtype(detail["dtype"])
    q = qparams(detail)
    if q is None:
        return np.asarray(x).astype(dtype, copy=False)
    scale, zp = q
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x, dtype=np.float32) / scale + zp), info.min, info.max).astype(dtype)


def dequantize(raw: np.ndarray, detail: dict) -> np.ndarray:
    """Tensor values → float64 (``(q - zp) * scale`` for a quantized integer tensor)."""
    out = np.asarray(raw).astype(np.float64)
    q = qparams(detail)
    if q is None:
        return out
    scale, zp = q
    return (out - zp) * scale


def _first_line(e: Exception) -> str:
    msg = str(e).strip()
    return msg.splitlines()[0] if msg else type(e).__name__


class LiteRTModel:
    """One .tflite on LiteRT's CPU interpreter (XNNPACK by default) with one input tensor.

    ``model``: .tflite bytes or a path; ``threads``: interpreter threads (None: LiteRT's default);
    ``delegates``: ``experimental_delegates`` (e.g. ``ai_edge_litert.interpreter.load_delegate(...)``);
    ``name``: how errors name the model; ``xnnpack=False``: LiteRT's built-in kernels without the default
    XNNPACK delegate (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``); ``keep_tensors=True``: every intermediate
    tensor stays readable after an invoke (:meth:`tensor`; built-in kernels, no XNNPACK). ``ModelError`` when
    LiteRT cannot load it.
    """

    def __init__(self, model: bytes | str | Path, threads: int | None = None, delegates: Sequence[Any] | None = None,
                 name: str | None = None, xnnpack: bool = True, keep_tensors: bool = False):
        xnnpack = xnnpack and not keep_tensors
        self.name = name or (str(model) if isinstance(model, (str, Path)) else "<tflite bytes>")
        self.threads, self.xnnpack = threads, xnnpack
        src = {"model_path": str(model)} if isinstance(model, (str, Path)) else {"model_content": bytes(model)}
        try:
            resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            self.interpreter = Interpreter(**src, num_threads=threads,
                                           experimental_delegates=list(delegates) if delegates else None,
                                           experimental_op_resolver_type=resolver,
                                           experimental_preserve_all_tensors=keep_tensors)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.name}: LiteRT cannot load this model ({_first_line(e)})") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.name}: expected one input tensor, found {len(inputs)}")
        self.input_detail = inputs[0]
        self.output_details = self.interpreter.get_output_details()
        self.input_shape = tuple(int(d) for d in self.input_detail["shape"][1:])
        self.input_dtype = np.dtype(self.input_detail["dtype"])
        self.output_dtype = np.dtype(self.output_details[0]["dtype"])

    # ----------------------------------------------------------------------------------------- batch 1
    def set_input(self, x1: np.ndarray) -> None:
        """Feed one float32 image batch (1, H, W, C), quantized for an integer input tensor."""
        self.interpreter.set_tensor(self.input_detail["index"], quantize(x1, self.input_detail))

    def get_output(self) -> np.ndarray:
        """Dequantized outputs of the last invoke, (batch, outputs) float64 (several output tensors are
        concatenated along axis 1)."""
        outs = []
        for o in self.output_details:
            raw = dequantize(self.interpreter.get_tensor(o["index"]), o)
            outs.append(raw.reshape(len(raw), -1))
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def step(self, x1: np.ndarray) -> np.ndarray:
        self.set_input(x1)
        self.interpreter.invoke()
        return self.get_output()

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as a float32 batch (a single image gets a batch axis); ``ModelError`` on a wrong shape."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise ModelError(f"{self.name}: input is {tuple(x.shape[1:])} but the model expects "
                             f"{self.input_shape}")
        return x

    def tensor(self, index: int) -> np.ndarray:
        """Tensor ``index`` after the last invoke, dequantized to float64 with its per-tensor (scale, zero
        point) (intermediate tensors need ``keep_tensors=True``)."""
        detail = self._details().get(int(index))
        if detail is None:
            raise ModelError(f"{self.name}: no tensor {index}")
        return dequantize(self.interpreter.get_tensor(int(index)), detail)

    def _details(self) -> dict:
        if getattr(self, "_tensor_details", None) is None:
            self._tensor_details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        return self._tensor_details

    # ----------------------------------------------------------------------------------------- batches
    def raw(self, x: np.ndarray) -> np.ndarray:
        """Dequantized raw outputs (logits or probabilities, as the model emits them), one image at a time."""
        x = self.check_input(x)
        if len(x) == 0:
            return np.zeros((0, int(np.prod(self.output_details[0]["shape"][1:]))), np.float64)
        return np.concatenate([self.step(x[i:i + 1]) for i in range(len(x))], axis=0)

    def probabilities(self, x: np.ndarray, output: dict | None) -> np.ndarray:
        """Probabilities (N, outputs): the metadata's activation is applied when ``output`` says logits."""
        return probabilities(self.raw(x), output)

    def time(self, x: np.ndarray, runs: int = 10, warmup: int = 3) -> Timing:
        """Batch-1 latency (:func:`~edgeretina.runtime.timing.time_batch1`)."""
        return time_batch1(self.step, self.check_input(x), runs, warmup)

    # ----------------------------------------------------------------------------------------- facts
    def io_details(self) -> dict:
        """Shape, dtype, scale and zero point of the input and (first) output tensor."""
        def one(d):
            s, z = d["quantization"]
            return {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                    "scale": float(s), "zero_point": int(z)}

        return {"input": one(self.input_detail), "output": one(self.output_details[0])}

    def float_ops(self) -> list[str]:
        """Names of ops (other than interface QUANTIZE/DEQUANTIZE) that compute in float32."""
        out = []
        for op in self.interpreter._get_ops_details():  # noqa: SLF001 - the only op listing LiteRT exposes
            name = op["op_name"]
            if name in _BOUNDARY_OPS or name.startswith("DELEGATE"):
                continue
            types = list(op["operand_types"]) + list(op["result_types"])
            if any(t == np.float32 for t in types):
                out.append(name)
        return out
