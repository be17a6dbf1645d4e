"""Output bias correction for full-integer .tflite files.

Post-training int8 (and QAT) graphs carry a *systematic* output offset: on a real ODIR glaucoma MobileNetV2 the
int8 logit difference sat +0.26 above the float model's on every split (sd 0.27 around that), which alone moves
many images across a low screening threshold. Correction (the "bias correction" step of Nagel et al., 2019,
applied to the output layer): run the .tflite and the float reference on the calibration images, take the mean
output error per channel, and subtract it from the int32 bias of the op that produces the output, in the
flatbuffer itself (bias step = input scale × per-channel weight scale), so no re-conversion is needed and the
activation ranges stay as calibrated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BIAS_OPS = {"FULLY_CONNECTED", "CONV_2D"}
_PASS_OPS = {"QUANTIZE", "DEQUANTIZE", "RESHAPE"}


@dataclass(frozen=True)
class BiasCorrection:
    applied: bool
    op: str | None
    mean_error_before: tuple[float, ...]
    mean_error_after: tuple[float, ...] | None = None
    n_images: int = 0
    reason: str = ""

    def to_dict(self) -> dict:
        return {"applied": self.applied, "op": self.op, "n_images": self.n_images, "reason": self.reason,
                "mean_error_before": [round(v, 5) for v in self.mean_error_before],
                "mean_error_after": None if self.mean_error_after is None
                else [round(v, 5) for v in self.mean_error_after]}


def _op_names():
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in schema.BuiltinOperator.__dict__.items() if not k.startswith("_")}


def _output_bias(m):
    """(subgraph, op name, bias tensor, input tensor, weight tensor) of the op producing the model output,
    looking through QUANTIZE/DEQUANTIZE/RESHAPE; None if it is not a biased integer FC/conv."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fu

    names = _op_names()
    sg = m.subgraphs[0]
    producer = {o: op for op in sg.operators for o in op.outputs}
    t = sg.outputs[0]
    for _ in range(4):
        op = producer.get(t)
        if op is None:
            return None
        name = names.get(fu.get_builtin_code_from_operator_code(m.operatorCodes[op.opcodeIndex]))
        if name in _PASS_OPS:
            t = op.inputs[0]
            continue
        if name not in _BIAS_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            return None
        bias = sg.tensors[op.inputs[2]]
        if (bias.type not in (schema.TensorType.INT32, schema.TensorType.FLOAT32)
                or m.buffers[bias.buffer].data is None):
            return None
        return sg, name, bias, sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
    return None


def shift_output_bias(tflite: bytes, delta: np.ndarray) -> tuple[bytes, str] | None:
    """Add ``delta`` (float, one value per output channel, in output units) to the bias of the output op
    (int32 bias of an integer op, or float32 bias of a float op in a selectively quantized graph). Returns
    (new bytes, op name) or None when the graph's output is not produced by a biased FC/conv."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fu

    m = fu.read_model_from_bytearray(bytearray(tflite))
    found = _output_bias(m)
    if found is None:
        return None
    sg, name, bias, x, w = found
    raw = bytes(np.asarray(m.buffers[bias.buffer].data, dtype=np.uint8))
    delta = np.asarray(delta, dtype=np.float64).reshape(-1)
    if bias.type == schema.TensorType.FLOAT32:
        b = np.frombuffer(raw, dtype=np.float32)
        if delta.size != b.size:
            return None
        nb = (b + delta).astype(np.float32)
    else:
        b = np.frombuffer(raw, dtype=np.int32).astype(np.int64)
        q_in, q_w = x.quantization, w.quantization
        if q_in is None or q_w is None or q_in.scale is None or q_w.scale is None:
            return None
        s_in = np.asarray(q_in.scale, dtype=np.float64)
        s_w = np.asarray(q_w.scale, dtype=np.float64)
        if delta.size != b.size or s_in.size != 1 or s_w.size not in (1, b.size):
            return None
        step = s_in[0] * np.broadcast_to(s_w, b.shape)
        nb = np.clip(b + np.round(delta / step), np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    # a fresh buffer: converters may share constant buffers between tensors
    nbuf = schema.BufferT()
    nbuf.data = np.frombuffer(nb.tobytes(), dtype=np.uint8)
    m.buffers.append(nbuf)
    bias.buffer = len(m.buffers) - 1
    return bytes(fu.convert_object_to_bytearray(m)), name


def raw_outputs(tflite: bytes, X: np.ndarray) -> np.ndarray:
    """Dequantized raw outputs (logits for edgeretina's full-integer exports) of ``tflite`` on ``X``."""
    from .verify import run

    return run(tflite, X)


def _error(out: np.ndarray, ref: np.ndarray, softmax: bool) -> np.ndarray:
    if softmax:  # softmax logits are defined up to a per-image constant: compare them centred
        out = out - out.mean(axis=1, keepdims=True)
        ref = ref - ref.mean(axis=1, keepdims=True)
    return (out - ref).mean(axis=0)


def correct_output_bias(tflite: bytes, X: np.ndarray, ref: np.ndarray, softmax: bool = True
                        ) -> tuple[bytes, BiasCorrection]:
    """Measure the mean output error of ``tflite`` against ``ref`` (the float model's logits on ``X``; for a
    softmax head, log-probabilities do too) and fold it into the output bias. Returns the (possibly
    unchanged) bytes and what was done."""
    ref = np.asarray(ref, dtype=np.float64).reshape(len(X), -1)
    softmax = softmax and ref.shape[1] > 1
    before = _error(raw_outputs(tflite, X), ref, softmax)
    res = shift_output_bias(tflite, -before)
    if res is None:
        return tflite, BiasCorrection(False, None, tuple(map(float, before)), n_images=len(X),
                                      reason="output is not produced by a biased integer FC/conv op")
    new, op = res
    after = _error(raw_outputs(new, X), ref, softmax)
    if np.abs(after).sum() >= np.abs(before).sum():
        return tflite, BiasCorrection(False, op, tuple(map(float, before)), tuple(map(float, after)), len(X),
                                      reason="no improvement on the calibration images")
    return new, BiasCorrection(True, op, tuple(map(float, before)), tuple(map(float, after)), len(X))
