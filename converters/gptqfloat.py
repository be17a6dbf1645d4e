"""GPTQ weights under a flip budget (``export --int8 --quantizer aeq --weight-rounding gptq --max-flips F``).

The budget search (``budget.py``) ranks ops by the screening-logit noise each adds when it alone is int8 and
keeps the best-ranked ones float. With GPTQ-rounded weights the question is which layers' *activation*
rounding to undo: the weights stay on their int8 grid everywhere. So the float32 .tflite the search quantizes
first gets the GPTQ file's weights, dequantized:

1. the all-int8 file of the calibration images (ai-edge-quantizer) is GPTQ re-rounded (``gptq.py``);
2. each re-rounded op's float weights in the float32 file become ``s·q`` (per-channel scale ``s``, integers
   ``q``: :func:`rounded_float`);
3. the search quantizes that file: an int8 op gets back the same integers on the same scales (its scale is
   ``max |s·q| / 127`` again; :func:`grid_match` checks the shipped file), a float op computes in float with
   int8-grid weights. The ranking then measures each layer's activation rounding on the GPTQ-rounded model
   (no labels), and every layer of the shipped file has int8 weights or their exact float values.
"""
from __future__ import annotations

import numpy as np

from edgeretina.runtime.flatbuffer import replace_weights, weight_ops

from .gptq import op_key


def _dequantized(rec: dict) -> np.ndarray | None:
    """``s·q`` of a per-channel symmetric int8 weight record (None for anything else)."""
    w, s = rec["weights"], rec["scales"]
    if w.dtype != np.int8 or s is None or rec["axis"] is None:
        return None
    if rec["zero_points"] is not None and np.any(rec["zero_points"] != 0):
        return None
    shape = [1] * w.ndim
    shape[rec["axis"]] = -1
    if s.size not in (1, w.shape[rec["axis"]]):
        return None
    return (w.astype(np.float64) * s.reshape(shape if s.size > 1 else [1] * w.ndim)).astype(np.float32)


def rounded_float(float32: bytes, int8: bytes) -> tuple[bytes, int]:
    """``float32`` with the weights of every op that has per-channel int8 weights in ``int8`` (same graph,
    ops matched by output tensor name) replaced by those weights dequantized; and how many ops were."""
    floats = {op_key(r["output_name"]): r for r in weight_ops(float32)}
    new = {}
    for rec in weight_ops(int8):
        frec = floats.get(op_key(rec["output_name"]))
        w = _dequantized(rec)
        if frec is not None and w is not None and frec["weights"].shape == w.shape \
                and frec["weights"].dtype == np.float32:
            new[frec["weight"]] = w
    return (replace_weights(float32, new) if new else float32), len(new)


def grid_match(shipped: bytes, int8: bytes) -> float:
    """The share of the int8 weights of ``shipped``'s int8 ops whose dequantized value equals that of ``int8``
    (the GPTQ file) — 1.0 when quantizing :func:`rounded_float`'s file gave the GPTQ integers back."""
    ref = {op_key(r["output_name"]): _dequantized(r) for r in weight_ops(int8)}
    same = total = 0
    for rec in weight_ops(shipped):
        w, r = _dequantized(rec), ref.get(op_key(rec["output_name"]))
        if w is None or r is None or r.shape != w.shape:
            continue
        same += int(np.sum(np.isclose(w, r, rtol=1e-5, atol=0.0)))
        total += w.size
    return same / total if total else 1.0


__all__ = ["grid_match", "rounded_float"]
