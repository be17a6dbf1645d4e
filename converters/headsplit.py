"""Split linear head for int8 (``edgeretina export --int8 --head-split K``).

A linear head fitted on standardised frozen features (``--head-fit linear``) has the standardisation folded into
its Dense weights (w / σ): a feature with a tiny spread gets a weight hundreds of times the median one. int8
quantizes each output unit's weights on one grid (per channel: step = max |w| / 127), so on the two-view
glaucoma model (max |w| 2.5, median 0.009) most weights round to 0 or ±1 step and the weight rounding alone
moves the screening logit by sd ≈ 0.34 (the largest single source of its int8 noise).

The split keeps the function and gives each magnitude band of weights its own grid: the final Dense
``in → out`` becomes ``Dense(in → out·K, no bias)`` (unit (j, k) holds output j's weights whose |w| falls in band
k, zeros elsewhere) followed by ``Dense(out·K → out)`` whose weights are 0/1 (exact in int8) and which carries
the bias. Bands are geometric between the median |w| and the max (band 0 also holds everything below the
median), so every band's max/min weight ratio is about (max/median)^(1/(K-1)). Empty bands are dropped. In
float the split model equals the original up to summation order; in int8 the partial sums add one per-tensor
activation quantization (small: step = their range / 255). The split is applied to the Keras logits model
before conversion, so every later stage (calibration, ``--quantizer``, budget, bias correction, verification)
sees an ordinary model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeretina.errors import ExportError

MAX_GROUPS = 16


@dataclass(frozen=True)
class HeadSplit:
    """What the split did (``export.head_split`` in the metadata / manifest entry)."""

    layer: str
    groups: int                 # K asked for
    units: int                  # hidden units of the split (non-empty bands over all outputs)
    max_over_median: float      # max |w| / median |w| of the original head (how much the split buys)
    band_edges: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_groups(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not (0 <= k <= MAX_GROUPS) or k == 1:
        raise ExportError(f"--head-split must be 0 (off) or an integer in [2, {MAX_GROUPS}], got {k!r}")
    return k


def band_edges(w: np.ndarray, k: int) -> np.ndarray:
    """k+1 edges of |w| bands: 0, then geometric from the median |w| (of the non-zero weights) to the max, inf."""
    a = np.abs(w[w != 0])
    if a.size == 0:
        return np.array([0.0, np.inf])
    lo, hi = float(np.median(a)), float(a.max())
    inner = np.geomspace(lo, hi, k)[:-1] if hi > lo > 0 else np.array([])
    return np.concatenate([[0.0], inner, [np.inf]])


def split_weights(W: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W1 (in, units), W2 (units, out) of 0/1, edges): W1 @ W2 == W exactly."""
    edges = band_edges(W, k)
    cols, sel = [], []
    for j in range(W.shape[1]):
        band = np.clip(np.searchsorted(edges, np.abs(W[:, j]), side="right") - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            part = np.where((band == b) & (W[:, j] != 0), W[:, j], 0.0)
            if np.any(part):
                cols.append(part)
                sel.append(j)
        if not any(s == j for s in sel):  # an all-zero output keeps one (zero) unit
            cols.append(np.zeros(W.shape[0]))
            sel.append(j)
    W1 = np.stack(cols, 1).astype(W.dtype)
    W2 = np.zeros((len(sel), W.shape[1]), W.dtype)
    W2[np.arange(len(sel)), sel] = 1.0
    return W1, W2, edges


def _head_dense(model):
    last = model.outputs[0]._keras_history.layer  # noqa: SLF001
    if type(last).__name__ != "Dense" or last.get_config().get("activation") != "linear":
        return None
    if len(last.get_weights()) != 2:
        return None
    return last


def split_head(model, k: int) -> tuple[Any, HeadSplit | None]:
    """(equivalent Keras model with the final linear Dense split into ``k`` magnitude bands, what was done);
    ``(model, None)`` when ``k`` is 0 or the model does not end in a linear Dense with a bias."""
    from edgeretina._keras import keras

    last = _head_dense(model) if check_groups(k) else None
    if last is None:
        return model, None
    W, bias = last.get_weights()
    W1, W2, edges = split_weights(np.asarray(W, np.float64), k)
    x = last.input
    h = keras.layers.Dense(W1.shape[1], use_bias=False, name=f"{last.name}_split")(x)
    out = keras.layers.Dense(W.shape[1], name=f"{last.name}_sum")(h)
    m = keras.Model(model.inputs, out, name=f"{model.name}_split")
    m.get_layer(f"{last.name}_split").set_weights([W1.astype(np.float32)])
    m.get_layer(f"{last.name}_sum").set_weights([W2.astype(np.float32), np.asarray(bias, np.float32)])
    a = np.abs(W[W != 0])
    ratio = float(a.max() / np.median(a)) if a.size else 1.0
    return m, HeadSplit(last.name, k, int(W1.shape[1]), round(ratio, 2),
                        tuple(round(float(e), 6) for e in edges[1:-1]))
