"""Activation ranges for the ``aeq`` backend (``export --int8 --quantizer aeq --ranges percentile|mse``).

ai-edge-quantizer's calibration returns, per activation tensor, the range its int8 grid covers (``min`` /
``max``). Min/max ranges are set by the single largest value seen on the calibration images; a ReLU6 network
then spends most of its 256 steps on values few pixels reach. Both options here *edit the calibration result*
before quantization, from one extra pass of the float model over the same calibration images in LiteRT (every
intermediate tensor kept) that fills a per-tensor histogram of ``BINS`` bins over its min/max range:

- ``percentile``: the range from the ``LOW``-th to the ``HIGH``-th percentile of the tensor's values
  (99.99 %: about 1 value in 10,000 is clipped);
- ``mse``: the range (a grid of clipped lower/upper ends) with the least expected squared error of an 8-bit
  uniform grid on the histogram: clipping error of the values outside, step²/12 for those inside.

The model's input and output tensors keep their min/max ranges (the input range is the preprocessing's; a
clipped output logit would saturate scores). No TensorFlow here: the float model runs in LiteRT (through ai-edge-quantizer's interpreter helper).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

BINS = 2048
LOW, HIGH = 0.01, 99.99          # percentile ranges (per cent)
_GRID = np.linspace(0.05, 1.0, 39)  # mse: candidate ends as fractions of the min/max ends
LEVELS = 255                     # int8 steps


def _interpreter(float_tflite: bytes, threads: int):
    """The float model in the interpreter ai-edge-quantizer's own calibration uses (every tensor kept)."""
    from ai_edge_quantizer.utils import tfl_interpreter_utils

    return tfl_interpreter_utils.create_tfl_interpreter(float_tflite, num_threads=threads,
                                                        preserve_all_tensors=True)


def histograms(float_tflite: bytes, X: np.ndarray, qsvs: dict, threads: int = 1
               ) -> dict[str, tuple[np.ndarray, float, float]]:
    """{tensor name: (counts, lo, hi)} over the calibration images, ``BINS`` bins between the calibrated
    min and max, for every interior activation tensor of ``qsvs`` (the model's inputs/outputs aside)."""
    it = _interpreter(float_tflite, threads)
    inp, out = it.get_input_details(), it.get_output_details()
    io = {d["index"] for d in inp} | {d["index"] for d in out}
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    todo = {}
    for name, q in qsvs.items():
        i = index.get(name)
        if i is None or i in io or "min" not in q or np.size(q["min"]) != 1:
            continue
        lo, hi = float(np.ravel(q["min"])[0]), float(np.ravel(q["max"])[0])
        if hi > lo:
            todo[name] = (i, lo, hi, np.zeros(BINS, np.int64))
    for x in np.asarray(X, np.float32):
        it.set_tensor(inp[0]["index"], x[None])
        it.invoke()
        for i, lo, hi, counts in todo.values():
            v = it.get_tensor(i).ravel()
            k = np.clip(((v - lo) * (BINS / (hi - lo))).astype(np.int64), 0, BINS - 1)
            counts += np.bincount(k, minlength=BINS)
    return {n: (c, lo, hi) for n, (_, lo, hi, c) in todo.items()}


def percentile_range(counts: np.ndarray, lo: float, hi: float, low: float = LOW, high: float = HIGH
                     ) -> tuple[float, float]:
    """The ``low``/``high`` percentiles of a histogram over [lo, hi] (bin edges; zero kept inside)."""
    cdf = np.cumsum(counts) / max(int(counts.sum()), 1)
    edges = np.linspace(lo, hi, len(counts) + 1)
    a = edges[int(np.searchsorted(cdf, low / 100.0, side="right"))]
    b = edges[min(int(np.searchsorted(cdf, high / 100.0, side="left")) + 1, len(counts))]
    return min(float(a), 0.0) if lo <= 0 else float(a), max(float(b), 0.0) if hi >= 0 else float(b)


def mse_range(counts: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """The clipped range with the least expected squared 8-bit quantization error on the histogram."""
    centres = lo + (np.arange(len(counts)) + 0.5) * (hi - lo) / len(counts)
    w = counts.astype(np.float64)
    los = [lo * f for f in _GRID] if lo < 0 else [lo]
    his = [hi * f for f in _GRID] if hi > 0 else [hi]
    best, best_err = (lo, hi), np.inf
    for a in los:
        below = np.sum(w * np.square(np.minimum(centres - a, 0.0)))
        for b in his:
            if b <= a:
                continue
            err = below + np.sum(w * np.square(np.maximum(centres - b, 0.0)))
            inside = np.sum(w[(centres >= a) & (centres <= b)])
            err += inside * ((b - a) / LEVELS) ** 2 / 12.0
            if err < best_err:
                best, best_err = (float(a), float(b)), err
    return best


RULES: dict[str, Callable[[np.ndarray, float, float], tuple[float, float]]] = {
    "percentile": percentile_range, "mse": mse_range}


def edit(qsvs: dict, hists: dict, rule: str) -> tuple[dict, dict[str, float]]:
    """``qsvs`` with every histogrammed tensor's min/max replaced by ``rule``'s range; and a summary
    (tensors edited, median share of the min/max width kept)."""
    fn = RULES[rule]
    out, kept = dict(qsvs), []
    for name, (counts, lo, hi) in hists.items():
        a, b = fn(counts, lo, hi)
        q = dict(qsvs[name])
        q["min"] = np.full_like(np.asarray(q["min"], np.float32), a)
        q["max"] = np.full_like(np.asarray(q["max"], np.float32), b)
        out[name] = q
        kept.append((b - a) / (hi - lo))
    return out, {"tensors_edited": len(kept),
                 "median_width_kept": round(float(np.median(kept)), 4) if kept else None}
