"""GPTQ-style weight rounding for full-integer int8 files (``export --int8 --weight-rounding gptq``).

Post-training int8 rounds every per-channel weight to its nearest grid step, one weight at a time. GPTQ
(Frantar et al., 2023; Optimal Brain Quantization) rounds the weights of one output channel column by column
and pushes each rounding error onto the columns not yet rounded, weighted by the layer's input statistics,
so that the channel's *output* on real inputs moves as little as possible. Per op (CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED with per-channel int8 weights in the exported file):

1. its input activations on the calibration images are read from the int8 file itself (LiteRT, every tensor
   kept, dequantized: the inputs the op really gets, upstream rounding included) and folded into
   ``H = Σ x xᵀ`` over im2col patches (a 9 × 9 ``H`` per channel for a 3 × 3 depthwise conv);
2. the float weights come from the float32 .tflite of the same Keras model (ops matched by output tensor
   name; a weight whose stored int8 value is not its float value's nearest step means the files disagree and
   the op is left alone);
3. the integers are re-chosen column by column with GPTQ's error compensation (columns in descending order
   of ``diag H``, damping ``DAMP`` × mean diagonal), on the *same* per-channel scales, so the int32 biases and
   every other tensor are unchanged; the new weights are written into the flatbuffer
   (``runtime/flatbuffer.py:replace_weights``).

A weight tensor several ops use (the converter stores equal constants once: the two views of a two-view
model run one frozen backbone) is rounded once, on the sum of its users' ``H`` — its integers serve them all.

The calibration images are split: ``H`` from the first ``1 - HELDOUT`` share, and the op's output error
``mean ((W - s·q) x)²`` measured on the rest for nearest and GPTQ rounding. An op keeps GPTQ's integers only
where that held-out error is lower (recorded per op). No TensorFlow here; numpy only. The export then
re-runs the output bias correction on the new file and verifies it in LiteRT like every export.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from edgeretina.runtime import LiteRTModel
from edgeretina.runtime.flatbuffer import replace_weights, weight_ops

ROUNDINGS = ("nearest", "gptq")
DAMP = 0.01          # damping: this share of the mean diagonal of H added to its diagonal
HELDOUT = 0.25       # share of the calibration images kept out of H to measure the output error
QMAX = 127           # symmetric int8 weights (TFLite: [-127, 127])
BLOCK = 64           # GPTQ columns per lazy batch update
MIN_MATCH = 0.99     # share of stored weights that must equal the float weights' nearest step


@dataclass(frozen=True)
class RoundingInfo:
    """What ``--weight-rounding gptq`` did (``quantizer.weight_rounding`` in the metadata and manifest)."""

    method: str
    n_fit: int
    n_heldout: int
    damp: float
    layers: tuple[dict, ...] = ()
    skipped: tuple[dict, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict:
        kept = [r for r in self.layers if r["kept"] == "gptq"]
        before = sum(r["mse_nearest"] for r in self.layers)
        after = sum(r["mse_gptq" if r["kept"] == "gptq" else "mse_nearest"] for r in self.layers)
        def ops(rs) -> int:  # a shared weight tensor counts once per op using it
            return sum(1 + len(r.get("shared_with", ())) for r in rs)

        return {"method": self.method, "n_fit": self.n_fit, "n_heldout": self.n_heldout, "damp": self.damp,
                "ops": ops(self.layers), "ops_gptq": ops(kept), "weight_tensors": len(self.layers), "seconds": round(self.seconds, 1),
                "heldout_output_mse_sum": {"nearest": before, "shipped": after},
                "layers": list(self.layers), "skipped": list(self.skipped)}


# ------------------------------------------------------------------------------------------ GPTQ core


def _prepare(H: np.ndarray, damp: float) -> np.ndarray:
    """``H`` with dead inputs (zero diagonal) made harmless and ``damp`` × its mean diagonal added."""
    H = np.array(H, dtype=np.float64)
    d = np.diagonal(H, axis1=-2, axis2=-1)
    dead = d <= 0
    idx = np.arange(H.shape[-1])
    H[..., idx, idx] = np.where(dead, 1.0, d)
    mean = np.diagonal(H, axis1=-2, axis2=-1).mean(axis=-1)
    H[..., idx, idx] += damp * np.asarray(mean)[..., None]
    return H


def _upper_inverse_factor(H: np.ndarray) -> np.ndarray:
    """Upper-triangular ``U`` with ``H⁻¹ = Uᵀ U`` (batched over leading axes)."""
    L = np.linalg.cholesky(np.linalg.inv(H))
    return np.swapaxes(L, -1, -2)


def _grid_ends(W: np.ndarray, s: np.ndarray, pin: bool = True) -> np.ndarray:
    """±127 where a weight's nearest step is the end of its channel's grid, NaN elsewhere. Those weights stay
    there: the channel's scale is ``max |w| / 127``, and a file whose largest integer is 127 re-quantizes to
    the same integers and scale (``gptqfloat.py`` relies on it)."""
    q = np.clip(np.round(W / s[:, None]), -QMAX, QMAX)
    return np.where(np.abs(q) >= QMAX, q, np.nan) if pin else np.full(q.shape, np.nan)


def gptq_rows(W: np.ndarray, H: np.ndarray, scale: np.ndarray, damp: float = DAMP,
              act_order: bool = True, pin_ends: bool = False) -> np.ndarray:
    """Integer weights (Cout, K) for float weights ``W`` (Cout, K) whose rows all see inputs with second
    moment ``H`` (K, K), on per-row grids ``scale`` (Cout,): GPTQ, columns in descending ``diag H``
    (``act_order``) or as given; ``pin_ends``: weights at their grid's end stay there (:func:`_grid_ends`)."""
    W = np.array(W, dtype=np.float64)
    H = _prepare(H, damp)
    order = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(H.shape[0])
    W, U = W[:, order], _upper_inverse_factor(H[np.ix_(order, order)])
    s = np.asarray(scale, np.float64)
    ends = _grid_ends(W, s, pin_ends)
    Q = np.empty_like(W)
    for b0 in range(0, W.shape[1], BLOCK):  # lazy batch updates: the rest of W moves once per block
        b1 = min(b0 + BLOCK, W.shape[1])
        Wb, E = W[:, b0:b1].copy(), np.empty((W.shape[0], b1 - b0))
        for j in range(b1 - b0):
            q = np.clip(np.round(Wb[:, j] / s), -QMAX, QMAX)
            q = np.where(np.isnan(ends[:, b0 + j]), q, ends[:, b0 + j])
            Q[:, b0 + j] = q
            E[:, j] = (Wb[:, j] - q * s) / U[b0 + j, b0 + j]
            Wb[:, j + 1:] -= np.outer(E[:, j], U[b0 + j, b0 + j + 1:b1])
        W[:, b1:] -= E @ U[b0:b1, b1:]
    out = np.empty_like(Q)
    out[:, order] = Q
    return out.astype(np.int8)


def gptq_channels(W: np.ndarray, H: np.ndarray, scale: np.ndarray, damp: float = DAMP,
                  pin_ends: bool = False) -> np.ndarray:
    """Depthwise form: channel ``c`` has its own weights ``W[c]`` (K,) and input moment ``H[c]`` (K, K);
    columns in the given order (K = kh·kw is small)."""
    W = np.array(W, dtype=np.float64)
    U = _upper_inverse_factor(_prepare(H, damp))
    s = np.asarray(scale, np.float64)
    ends = _grid_ends(W, s, pin_ends)
    Q = np.empty_like(W)
    for i in range(W.shape[1]):
        q = np.clip(np.round(W[:, i] / s), -QMAX, QMAX)
        q = np.where(np.isnan(ends[:, i]), q, ends[:, i])
        Q[:, i] = q
        err = (W[:, i] - q * s) / U[:, i, i]
        W[:, i + 1:] -= err[:, None] * U[:, i, i + 1:]
    return Q.astype(np.int8)


def output_mse(W: np.ndarray, Q: np.ndarray, scale: np.ndarray, H: np.ndarray, n: int) -> float:
    """Mean squared output error per output value, ``Σ ΔwᵀHΔw / (rows · n)``, of integer weights ``Q`` against
    ``W`` (rows share ``H`` when it is 2-D; one ``H`` per row when 3-D); ``n``: input vectors in ``H``."""
    D = np.asarray(W, np.float64) - np.asarray(Q, np.float64) * np.asarray(scale, np.float64)[:, None]
    if H.ndim == 2:
        err = np.einsum("rk,kl,rl->", D, H, D)
    else:
        err = np.einsum("rk,rkl,rl->", D, H, D)
    return float(err / max(D.shape[0] * n, 1))


# ------------------------------------------------------------------------------------------ layer inputs


def _windows(x: np.ndarray, kh: int, kw: int, rec: dict) -> np.ndarray:
    """(oh, ow, C, kh, kw) windows of one image ``x`` (H, W, C) under the op's stride and padding (zeros:
    TFLite pads an int8 input with its zero point, i.e. 0.0 dequantized)."""
    sh, sw = rec["stride"]
    if rec["same"]:
        h, w = x.shape[:2]
        ph = max((-(-h // sh) - 1) * sh + kh - h, 0)
        pw = max((-(-w // sw) - 1) * sw + kw - w, 0)
        x = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    return sliding_window_view(x, (kh, kw), axis=(0, 1))[::sh, ::sw]


def layer_rows(rec: dict, x: np.ndarray) -> np.ndarray:
    """The op's input vectors for one image: (S, K) rows in the weights' column order for CONV_2D and
    FULLY_CONNECTED, (S, C, kh·kw) for DEPTHWISE_CONV_2D. ``x``: the dequantized input tensor (1, H, W, C)."""
    w = rec["weights"]
    if rec["op"] == "FULLY_CONNECTED":
        return x.reshape(-1, w.shape[-1])
    x = x[0]
    if rec["op"] == "CONV_2D":
        _, kh, kw, _ = w.shape
        if kh == kw == 1 and rec["stride"] == (1, 1):
            return x.reshape(-1, x.shape[-1])
        v = _windows(x, kh, kw, rec)
        return v.transpose(0, 1, 3, 4, 2).reshape(-1, kh * kw * x.shape[-1])
    _, kh, kw, _ = w.shape
    v = _windows(x, kh, kw, rec)
    return v.reshape(-1, x.shape[-1], kh * kw)


def _moment(rows: np.ndarray) -> np.ndarray:
    """Σ x xᵀ over the rows (float32 products, float64 result): (K, K), or (C, K, K) for depthwise rows."""
    rows = rows.astype(np.float32, copy=False)
    if rows.ndim == 2:
        return (rows.T @ rows).astype(np.float64)
    return np.einsum("sck,scl->ckl", rows, rows, optimize=True).astype(np.float64)


class _Moments:
    """``H`` of one op for the fit and the held-out images. Rows of layers with few positions per image
    (late 1×1 convs: 9 positions, 960 inputs) are buffered until there are as many as inputs, so ``H`` is
    built from a few tall products instead of many flat ones."""

    def __init__(self):
        self.H, self.n, self.buf = [0.0, 0.0], [0, 0], [[], []]

    def add(self, part: int, rows: np.ndarray) -> None:
        self.buf[part].append(rows.astype(np.float32, copy=False))
        self.n[part] += rows.shape[0]
        if sum(len(r) for r in self.buf[part]) >= rows.shape[-1]:
            self.flush(part)

    def flush(self, part: int) -> None:
        if self.buf[part]:
            self.H[part] = self.H[part] + _moment(np.concatenate(self.buf[part], axis=0))
            self.buf[part] = []

    def result(self) -> list:
        self.flush(0)
        self.flush(1)
        return [self.H[0], self.n[0], self.H[1], self.n[1]]


def collect(int8: bytes, recs: list[dict], X: np.ndarray, n_fit: int,
            tick: Callable[[int, int], None] | None = None) -> list[list]:
    """Per op ``[H_fit, n_fit_rows, H_heldout, n_heldout_rows]`` over the images ``X`` (the first ``n_fit``
    images build ``H_fit``, the rest ``H_heldout``), from the int8 file's own (dequantized) op inputs."""
    m = LiteRTModel(int8, threads=1, keep_tensors=True, name="int8 model")
    acc = [_Moments() for _ in recs]
    for i, x in enumerate(np.asarray(X, np.float32)):
        m.step(x[None])
        for a, rec in zip(acc, recs):
            a.add(0 if i < n_fit else 1, layer_rows(rec, m.tensor(rec["input"])))
        if tick and ((i + 1) % max(1, len(X) // 10) == 0 or i + 1 == len(X)):
            tick(i + 1, len(X))
    return [a.result() for a in acc]


def shared_moments(accs: list[list]) -> list:
    """One weight tensor used by several ops (two views through one frozen backbone: the converter stores
    equal constants once): its integers serve every user, so GPTQ minimises the summed output error,
    ``Σ_u Δwᵀ H_u Δw = Δwᵀ (Σ_u H_u) Δw`` — the users' moments and row counts added."""
    if len(accs) == 1:
        return accs[0]
    return [sum(a[j] for a in accs) for j in range(4)]


# ------------------------------------------------------------------------------------------ the file


def _as_rows(rec: dict, w: np.ndarray) -> np.ndarray:
    """Weights as (channels, K): conv / FC (Cout, ...) flattened; depthwise (1, kh, kw, C) → (C, kh·kw)."""
    if rec["op"] == "DEPTHWISE_CONV_2D":
        return w.reshape(-1, w.shape[-1]).T
    return w.reshape(w.shape[0], -1)


def _from_rows(rec: dict, rows: np.ndarray) -> np.ndarray:
    w = rec["weights"]
    if rec["op"] == "DEPTHWISE_CONV_2D":
        return rows.T.reshape(w.shape)
    return rows.reshape(w.shape)


def _why_not(rec: dict, frec: dict | None) -> str | None:
    """Why an op of the int8 file cannot be re-rounded (None: it can)."""
    if frec is None:
        return "no float op of the same output name"
    if rec["weights"].dtype != np.int8 or rec["scales"] is None or rec["input_quant"] is None:
        return "weights or input not int8-quantized"
    if rec.get("dilation", (1, 1)) != (1, 1) or rec.get("depth_multiplier", 1) != 1:
        return "dilated or depth-multiplied convolution"
    if rec["zero_points"] is not None and np.any(rec["zero_points"] != 0):
        return "asymmetric weights"
    want = rec["axis"] == (3 if rec["op"] == "DEPTHWISE_CONV_2D" else 0)
    if not want or rec["scales"].size != _as_rows(rec, rec["weights"]).shape[0]:
        return "weights not per output channel"
    if frec["weights"].shape != rec["weights"].shape or np.any(rec["scales"] <= 0):
        return "float weights of another shape, or a zero scale"
    return None


def _nearest(rec: dict, W: np.ndarray) -> np.ndarray:
    return np.clip(np.round(W / rec["scales"][:, None]), -QMAX, QMAX)


def _short(name: str) -> str:
    """A layer name from a converter's tensor name (``model/block_1_relu/Relu6;…;model/block_1_expand/Conv2D``
    → ``block_1_expand``): the part naming the conv / matmul itself, else the last part."""
    parts = name.split(";")
    own = [p for p in parts if p.rsplit("/", 1)[-1] in ("Conv2D", "depthwise", "MatMul", "BiasAdd")]
    segs = (own or parts)[-1].split("/")
    return segs[-2] if len(segs) > 2 else segs[-1]


def round_layer(rec: dict, frec: dict, acc: list, pin_ends: bool = False) -> tuple[np.ndarray | None, dict]:
    """GPTQ integers for one op (None when nearest stays: its held-out error is not lower) and its record."""
    W = _as_rows(rec, frec["weights"].astype(np.float64))
    Q0 = _as_rows(rec, rec["weights"]).astype(np.float64)
    s = rec["scales"]
    H_fit, n_fit, H_ho, n_ho = acc
    depthwise = rec["op"] == "DEPTHWISE_CONV_2D"
    Q = (gptq_channels if depthwise else gptq_rows)(W, H_fit, s, pin_ends=pin_ends)
    H_eval, n_eval = (H_ho, n_ho) if n_ho else (H_fit, n_fit)
    before, after = output_mse(W, Q0, s, H_eval, n_eval), output_mse(W, Q, s, H_eval, n_eval)
    kept = "gptq" if after < before else "nearest"
    out = {"layer": _short(rec["output_name"]), "op": rec["op"], "weights": int(W.size),
           "changed_share": round(float(np.mean(Q != Q0)), 4), "mse_nearest": before, "mse_gptq": after,
           "kept": kept}
    return (_from_rows(rec, Q) if kept == "gptq" else None), out


def op_key(name: str) -> str:
    """An output tensor name without the model's own name (``model/x;model/y`` → ``x;y``)."""
    return ";".join(p.split("/", 1)[-1] for p in name.split(";"))


def _matched(int8: bytes, float32: bytes) -> tuple[list, list, list[dict]]:
    """(int8 op records, their float twins, skipped ops with the reason)."""
    floats = {op_key(r["output_name"]): r for r in weight_ops(float32)}
    recs, frecs, skipped = [], [], []
    for rec in weight_ops(int8):
        frec = floats.get(op_key(rec["output_name"]))
        why = _why_not(rec, frec)
        if why is None:
            match = np.mean(_nearest(rec, _as_rows(rec, frec["weights"].astype(np.float64)))
                            == _as_rows(rec, rec["weights"]))
            why = None if match >= MIN_MATCH else f"float weights do not round to the stored ones ({match:.1%})"
        if why:
            skipped.append({"layer": _short(rec["output_name"]), "op": rec["op"], "reason": why})
        else:
            recs.append(rec)
            frecs.append(frec)
    return recs, frecs, skipped


def reround(int8: bytes, float32: bytes, X: np.ndarray, heldout: float = HELDOUT,
            tick: Callable[[int, int], None] | None = None, pin_ends: bool = False) -> tuple[bytes, RoundingInfo]:
    """``int8`` with the weights of every matched op re-rounded by GPTQ (where that lowers the held-out output
    error), from the float weights of ``float32`` (same Keras model) and the calibration images ``X``."""
    with threadpool_limits(limits=1, user_api="blas"):  # multi-threaded BLAS stalls on a busy 2-core machine
        return _reround(int8, float32, X, heldout, tick, pin_ends)


def _reround(int8: bytes, float32: bytes, X: np.ndarray, heldout: float, tick, pin_ends: bool
             ) -> tuple[bytes, RoundingInfo]:
    t0 = time.perf_counter()
    recs, frecs, skipped = _matched(int8, float32)
    n_fit = len(X) - int(round(heldout * len(X))) if len(X) >= 8 else len(X)
    acc = collect(int8, recs, X, n_fit, tick)
    users: dict[int, list[int]] = {}  # weight tensor → the ops using it (a converter shares equal constants)
    for i, rec in enumerate(recs):
        users.setdefault(rec["weight"], []).append(i)
    new, layers = {}, []
    for tensor, idx in users.items():
        q, info = round_layer(recs[idx[0]], frecs[idx[0]], shared_moments([acc[i] for i in idx]), pin_ends)
        if len(idx) > 1:
            info = {**info, "shared_with": [_short(recs[i]["output_name"]) for i in idx[1:]]}
        layers.append(info)
        if q is not None:
            new[tensor] = q
    out = replace_weights(int8, new) if new else int8
    return out, RoundingInfo("gptq", n_fit, len(X) - n_fit, DAMP, tuple(layers), tuple(skipped),
                             time.perf_counter() - t0)


__all__ = ["DAMP", "HELDOUT", "ROUNDINGS", "RoundingInfo", "collect", "gptq_channels", "gptq_rows",
           "layer_rows", "op_key", "output_mse", "reround", "round_layer", "shared_moments"]
