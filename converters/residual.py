"""Residual int8 weights (``edgeretina export --int8 --residual-weights LAYER[,LAYER]``).

On MobileNetV2 most of the int8 *weight* noise of the screening logit sits in one small layer: the first
inverted-residual block's depthwise conv (``expanded_conv_depthwise``, 288 weights, 9 per channel), where even
GPTQ's rounding on the per-channel int8 grid moves the DR referral logit by sd ≈ 0.34 (docs/export.md, session 10).
Exact weights there would need more than 8 bits; this module keeps every weight int8 and gives the layer a second,
residual int8 kernel instead:

    w_f = s·round(w_f / s) + r          (w_f: BatchNorm folded in; s = max|w_f| / 127 per output channel)
    conv(x; w_f) = conv(x; w_hi) + conv(x; r)

``w_hi`` lies on the int8 grid the quantizer picks for it (its per-channel max is exactly 127·s), so it quantizes
without error; ``r`` (|r| ≤ s/2) gets its own per-channel grid, 127× finer: together ≈ 15-bit weights, two int8
kernels, one ADD. The layer's BatchNormalization is folded into both kernels (the hi kernel carries the bias).

A ReLU6 after the layer stays exact: ``ReLU6(z_hi + z_r) = ReLU6(ReLU(z_hi + c) + (z_r − c))`` whenever
``|z_r| ≤ c``, so the hi kernel gets the fused ReLU with its bias raised by ``c`` (per channel) and the residual
kernel the bias ``−c``. The data-free choice ``c = B · Σ|r|`` per channel (``B`` the bound of the layer's input:
its producer is a clamping ReLU, ReLU6 → 6) always holds, but it is ~10× the residual's typical response, and the
residual output's int8 range must span [−c − |z_r|, 0]: its signal would get a few levels only. With calibration
images (the export passes its own) ``c`` is ``OFFSET_MARGIN`` (1.5) × the residual kernel's largest response on
them, capped at the bound: exact on every calibration image, and off by at most |z_r| − c (a fraction of one
int8 step of the original kernel) on a photo whose response exceeds it. The hi kernel's output is one-sided, as the
original fused ReLU6 output was, and everything above ``6 + 2c`` ends up as 6 after the sum, so its int8 range is
capped there (``hi_cap``; ai-edge-quantizer's calibration result is edited, hence ``--quantizer aeq`` only): the
grid kernel's activations keep the original step, the residual's output has its own small range. The rewrite is applied to the Keras logits model before
conversion (like ``--head-split``), so every later stage — calibration, ``--quantizer``, GPTQ (on-grid weights
round to themselves), bias correction, verification — sees an ordinary model. In float the rewritten model
equals the original up to summation order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeretina.errors import ExportError

MAX_LAYERS = 8
OFFSET_MARGIN = 1.5  # c = this × the largest residual response on the calibration images (≤ the data-free bound)


@dataclass(frozen=True)
class ResidualLayer:
    """One rewritten layer (``export.residual_weights.layers`` in the metadata / manifest entry)."""

    layer: str
    kind: str                  # depthwise | conv
    weights: int               # weights of the layer (each now stored twice, int8)
    folded_bn: str | None      # the BatchNormalization folded in
    activation: str            # relu6-exact | linear
    input_bound: float | None  # B of c = B·Σ|r| (None: no activation to keep exact)
    max_residual_over_step: float  # max |r| / s over the channels (≤ 0.5 when w_hi is on the grid)
    offset_max: float = 0.0        # the largest ReLU offset c (0: no activation to keep exact)
    offset_source: str = "none"    # bound (B·Σ|r|) | calibration (OFFSET_MARGIN × max response, ≤ bound)
    hi_cap: float | None = None    # the grid kernel's output range is capped here (clamp + 2c: lossless)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_layers(value) -> tuple[str, ...]:
    """``--residual-weights`` → layer names (empty: off)."""
    if value is None or value == "" or value == ():
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names]
    if any(not n for n in names):
        raise ExportError(f"--residual-weights: empty layer name in {value!r}")
    if len(set(names)) != len(names):
        raise ExportError(f"--residual-weights: a layer is named twice in {value!r}")
    if len(names) > MAX_LAYERS:
        raise ExportError(f"--residual-weights takes at most {MAX_LAYERS} layers, got {len(names)}")
    return tuple(names)


def grid_split(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w_hi on the symmetric per-channel int8 grid along ``axis``, residual r = w − w_hi, step s per channel)."""
    w = np.asarray(w, np.float64)
    red = tuple(i for i in range(w.ndim) if i != axis)
    m = np.max(np.abs(w), axis=red, keepdims=True)
    s = np.where(m > 0, m / 127.0, 1.0)
    hi = np.clip(np.round(w / s), -127, 127) * s
    return hi, w - hi, np.squeeze(s, red)


def _consumers(model, layer) -> list:
    """Layers that take ``layer``'s output (over all its calls), in the model's order."""
    out = []
    for other in model.layers:
        for node in other.inbound_nodes:
            ins = node.inbound_layers if isinstance(node.inbound_layers, (list, tuple)) else [node.inbound_layers]
            if any(i is layer for i in ins) and other not in out:
                out.append(other)
    return out


def _producers(layer) -> list:
    """The layers feeding ``layer`` (over all its calls), looking through zero padding (it keeps a bound)."""
    out = []
    for node in layer.inbound_nodes:
        ins = node.inbound_layers if isinstance(node.inbound_layers, (list, tuple)) else [node.inbound_layers]
        for i in ins:
            for j in (_producers(i) if type(i).__name__ == "ZeroPadding2D" else [i]):
                if j not in out:
                    out.append(j)
    return out


def _relu_max(layer) -> float | None:
    """The clamp of a ReLU layer / activation (6 for ReLU6), None when it does not clamp above."""
    cls = type(layer).__name__
    if cls == "ReLU":
        cfg = layer.get_config()
        mv = cfg.get("max_value")
        if mv is not None and float(cfg.get("threshold", 0) or 0) == 0 and float(cfg.get("negative_slope", 0) or 0) == 0:
            return float(mv)
    if cls == "Activation" and layer.get_config().get("activation") == "relu6":
        return 6.0
    return None


def _plan(model, name: str) -> dict:
    try:
        layer = model.get_layer(name)
    except ValueError:
        raise ExportError(f"--residual-weights: the model has no layer '{name}'") from None
    cls = type(layer).__name__
    if cls not in ("DepthwiseConv2D", "Conv2D"):
        raise ExportError(f"--residual-weights: layer '{name}' is a {cls}, not a Conv2D / DepthwiseConv2D")
    cfg = layer.get_config()
    if cfg.get("activation", "linear") != "linear":
        raise ExportError(f"--residual-weights: layer '{name}' has a fused activation ({cfg['activation']}); "
                          "only linear convs (followed by BatchNormalization / ReLU layers) are supported")
    if cls == "DepthwiseConv2D" and int(cfg.get("depth_multiplier", 1)) != 1:
        raise ExportError(f"--residual-weights: depthwise layer '{name}' has a depth multiplier; only 1 is supported")
    cons = _consumers(model, layer)
    bn = cons[0] if len(cons) == 1 and type(cons[0]).__name__ == "BatchNormalization" else None
    after = _consumers(model, bn) if bn is not None else cons
    clamp = _relu_max(after[0]) if len(after) == 1 else None
    relu_after = len(after) == 1 and (clamp is not None or type(after[0]).__name__ == "ReLU")
    bound = None
    if relu_after:
        prods = _producers(layer)
        bounds = [_relu_max(p) for p in prods]
        if not prods or any(b is None for b in bounds):
            raise ExportError(f"--residual-weights: layer '{name}' is followed by a ReLU but its input is not "
                              "the output of a clamping ReLU (ReLU6): the residual kernel cannot be kept exact")
        bound = max(bounds)
    return {"layer": layer, "bn": bn, "relu": relu_after, "bound": bound, "clamp": clamp}


def _folded(layer, bn) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of ``layer`` with ``bn`` folded in; depthwise kernels keep Keras' (kh, kw, c, 1) shape."""
    ws = layer.get_weights()
    k = np.asarray(ws[0], np.float64)
    nout = k.shape[2] if type(layer).__name__ == "DepthwiseConv2D" else k.shape[3]
    b = np.asarray(ws[1], np.float64) if len(ws) > 1 else np.zeros(nout)
    if bn is not None:
        cfg = bn.get_config()
        p = dict(zip([w.name.split("/")[-1].split(":")[0] for w in bn.weights], bn.get_weights()))
        gamma = np.asarray(p.get("gamma", np.ones(nout)), np.float64)
        beta = np.asarray(p.get("beta", np.zeros(nout)), np.float64)
        mean = np.asarray(p["moving_mean"], np.float64)
        var = np.asarray(p["moving_variance"], np.float64)
        scale = gamma / np.sqrt(var + float(cfg.get("epsilon", 1e-3)))
        k = k * (scale[None, None, :, None] if type(layer).__name__ == "DepthwiseConv2D" else scale)
        b = beta + (b - mean) * scale
    return k, b


def _pair_layer():
    """A layer running two kernels on one input and adding them (a nested Model would break clone_model:
    Keras skips a Functional layer's first node when it rebuilds the outer graph)."""
    from edgeretina._keras import keras

    class ResidualPair(keras.layers.Layer):
        def __init__(self, hi, res, **kw):
            super().__init__(**kw)
            self.hi, self.res = hi, res

        def build(self, shape):
            self.hi.build(shape)
            self.res.build(shape)
            super().build(shape)

        def call(self, x):
            return self.hi(x) + self.res(x)

    return ResidualPair


def _max_abs_response(model, layer, r: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Per output channel, max |conv(x; r)| over the layer's inputs on images ``X`` (every call of a shared
    layer)."""
    import tensorflow as tf

    from edgeretina._keras import keras

    depthwise = type(layer).__name__ == "DepthwiseConv2D"
    cfg = layer.get_config()
    strides = (1, *cfg["strides"], 1)
    kern = tf.constant(r.astype(np.float32))
    out = np.zeros(r.shape[2] if depthwise else r.shape[3])
    for i in range(len(layer.inbound_nodes)):
        feat = keras.Model(model.inputs, layer.get_input_at(i))
        for j in range(0, len(X), 32):
            xin = tf.constant(feat.predict(X[j:j + 32], verbose=0))
            if depthwise:
                z = tf.nn.depthwise_conv2d(xin, kern, strides, cfg["padding"].upper(),
                                           dilations=cfg.get("dilation_rate"))
            else:
                z = tf.nn.conv2d(xin, kern, strides, cfg["padding"].upper(), dilations=cfg.get("dilation_rate"))
            out = np.maximum(out, np.max(np.abs(z.numpy()), axis=(0, 1, 2)))
    return out


def rewrite(model, names, X: np.ndarray | None = None) -> tuple[Any, tuple[ResidualLayer, ...]]:
    """(equivalent Keras model whose ``names`` layers each run as two int8-exact kernels, what was done);
    ``(model, ())`` when ``names`` is empty. ``X``: calibration images; the ReLU offsets ``c`` are then
    ``OFFSET_MARGIN`` × the residual kernel's largest response on them (capped by the data-free bound), which keeps
    the residual output's int8 range tight. A bad layer name or an unsupported layer is an ExportError."""
    from edgeretina._keras import keras

    names = parse_layers(names)
    if not names:
        return model, ()
    plans = {n: _plan(model, n) for n in names}
    bns = {p["bn"].name: n for n, p in plans.items() if p["bn"] is not None}
    done, made = [], {}

    def build(n: str):
        p = plans[n]
        layer, bn = p["layer"], p["bn"]
        depthwise = type(layer).__name__ == "DepthwiseConv2D"
        k, b = _folded(layer, bn)
        axis = 2 if depthwise else 3
        hi, r, s = grid_split(k, axis)
        red = tuple(i for i in range(4) if i != axis)
        c = np.zeros_like(b)
        if p["relu"]:
            c = p["bound"] * np.sum(np.abs(r), axis=red) * 1.01  # data-free: |z_r| ≤ B·Σ|r| always
            if X is not None and len(X):
                c = np.minimum(c, OFFSET_MARGIN * _max_abs_response(model, layer, r, X))
        cfg = layer.get_config()
        common = {k2: cfg[k2] for k2 in ("kernel_size", "strides", "padding", "dilation_rate", "data_format")
                  if k2 in cfg}
        if depthwise:
            mk = lambda nm, act: keras.layers.DepthwiseConv2D(use_bias=True, activation=act, name=nm,  # noqa: E731
                                                               depth_multiplier=1, **common)
        else:
            mk = lambda nm, act: keras.layers.Conv2D(cfg["filters"], use_bias=True, activation=act,  # noqa: E731
                                                     name=nm, groups=cfg.get("groups", 1), **common)
        l_hi, l_r = mk(f"{n}_hi", "relu" if p["relu"] else None), mk(f"{n}_res", None)
        sub = _pair_layer()(l_hi, l_r, name=f"{n}_residual")
        shape = layer.input_shape if not isinstance(layer.input_shape, list) else layer.input_shape[0]
        sub.build(shape)
        l_hi.set_weights([hi.astype(np.float32), (b + c).astype(np.float32)])
        l_r.set_weights([r.astype(np.float32), (-c).astype(np.float32)])
        step = np.where(s > 0, s, 1.0)
        done.append(ResidualLayer(n, "depthwise" if depthwise else "conv", int(k.size),
                                  bn.name if bn is not None else None,
                                  "relu6-exact" if p["relu"] else "linear", p["bound"],
                                  round(float(np.max(np.abs(r) / np.expand_dims(step, red))), 4),
                                  round(float(np.max(c)) if c.size else 0.0, 6),
                                  "none" if not p["relu"] else ("calibration" if X is not None and len(X) else "bound"),
                                  round(p["clamp"] + 2 * float(np.max(c)), 6) if p["relu"] and p["clamp"] else None))
        return sub

    def clone(layer):
        if layer.name in plans:
            made[layer.name] = made.get(layer.name) or build(layer.name)
            return made[layer.name]
        if layer.name in bns:
            return keras.layers.Activation("linear", name=f"{layer.name}_folded")
        return layer.__class__.from_config(layer.get_config())

    m = keras.models.clone_model(model, clone_function=clone)
    by_name = {l.name: l for l in model.layers}
    for nl in m.layers:
        src = by_name.get(nl.name)
        if src is not None and src.name not in plans and src.name not in bns and src.weights:
            nl.set_weights(src.get_weights())
    return m, tuple(done)
