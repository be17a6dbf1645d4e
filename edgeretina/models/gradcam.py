"""Grad-CAM (Selvaraju et al. 2017) for edgeretina's flat models, as in the ODIR paper's heatmaps.

The class score is the pre-activation logit (``head_logits``) — for a softmax head, the class's log-odds
against the other classes (``z_c − logsumexp(z_others)``; softmax ignores a shift shared by all logits, so one
raw logit alone carries an arbitrary offset: a two-class head that calls an eye glaucomatous can still have a
negative glaucoma logit, and its raw-logit map would be empty) — its gradients with respect to the last
backbone feature map (the tensor entering ``head_gap``) are averaged over space to weight the map's
channels; the ReLU of the weighted sum, normalised to [0, 1], is the heatmap.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeretina.errors import ModelError
from edgeretina.io import atomic_path
from edgeretina.preprocess import Pipeline, decode_image
from edgeretina.run import resolve_model_path


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray        # float32 (h, w) in [0, 1], at the feature-map resolution
    class_index: int
    class_name: str
    probability: float
    layer: str

    def to_dict(self):
        return {"class_index": self.class_index, "class": self.class_name, "probability": self.probability,
                "layer": self.layer, "heatmap_shape": list(self.heatmap.shape)}


def _target_tensor(model, layer: str | None):
    if layer:
        try:
            return model.get_layer(layer).output, layer
        except ValueError:
            raise ModelError(f"model has no layer named '{layer}'") from None
    try:
        gap = model.get_layer("head_gap")
    except ValueError:
        raise ModelError("not an edgeretina model (no 'head_gap' layer); pass --layer") from None
    t = gap.input
    if isinstance(t, (list, tuple)):  # --mid-pool: head_gap concatenates the pooled last and mid-depth maps
        try:
            t = model.get_layer("head_gap_final").input
        except ValueError:
            raise ModelError("this model pools several feature maps; pass --layer") from None
    return t, t.node.layer.name if hasattr(t, "node") else "last feature map"


def _softmax_head(model) -> bool:
    try:
        act = model.get_layer("head_probs").activation
    except ValueError:
        act = getattr(model.layers[-1], "activation", None)
    return getattr(act, "__name__", "") == "softmax"


def _class_score(z, idx: int, softmax: bool):
    """The score Grad-CAM differentiates: the logit, or for a softmax head the log-odds of class ``idx``."""
    from edgeretina._keras import tf

    if not softmax or z.shape[-1] < 2:
        return z[:, idx]
    others = tf.concat([z[:, :idx], z[:, idx + 1:]], axis=1)
    return z[:, idx] - tf.reduce_logsumexp(others, axis=1)


def gradcam(model, x: np.ndarray, labels=None, class_index: int | None = None, layer: str | None = None,
            default_index: int | None = None) -> Explanation:
    """Grad-CAM of one preprocessed input ``x`` (S, S, 3) float32 (the Pipeline output).
    ``class_index`` None → ``default_index`` (binary tasks: the positive class) or the top class."""
    from edgeretina._keras import keras, tf

    fmap, lname = _target_tensor(model, layer)
    try:
        logits = model.get_layer("head_logits").output
    except ValueError:
        logits = model.output
    grad_model = keras.Model(model.input, [fmap, logits, model.output])
    xb = tf.convert_to_tensor(np.asarray(x, np.float32)[None])
    with tf.GradientTape() as tape:
        conv, z, probs = grad_model(xb, training=False)
        p = probs.numpy()[0]
        idx = class_index if class_index is not None else (
            default_index if default_index is not None else int(np.argmax(p)))
        if not 0 <= idx < z.shape[-1]:
            raise ModelError(f"class index {idx} out of range (model has {z.shape[-1]} outputs)")
        score = _class_score(z, idx, _softmax_head(model))
    grads = tape.gradient(score, conv)
    w = tf.reduce_mean(grads, axis=(1, 2))                      # (1, C)
    cam = tf.nn.relu(tf.reduce_sum(conv * w[:, None, None, :], axis=-1))[0].numpy()
    cam = cam / cam.max() if cam.max() > 0 else cam
    name = labels[idx] if labels is not None and idx < len(labels) else str(idx)
    return Explanation(cam.astype(np.float32), int(idx), str(name), float(p[idx]), lname)


def overlay(image_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a JET-coloured heatmap (resized bilinearly) onto an RGB uint8 image → RGB uint8."""
    h, w = image_rgb.shape[:2]
    hm = cv2.resize(heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(np.clip(hm, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    return np.clip((1 - alpha) * image_rgb.astype(np.float32) + alpha * colour.astype(np.float32),
                   0, 255).astype(np.uint8)


def explain_file(model_path, image_path, out, class_name: str | None = None, layer: str | None = None,
                 alpha: float = 0.4, display_size: int = 448) -> Explanation:
    """Run dir / .keras + fundus image file → heatmap PNG at ``out`` (atomic). Returns the explanation."""
    from edgeretina._keras import keras

    path, cfg = resolve_model_path(model_path)
    pipe = Pipeline.from_json(cfg.preprocessing)
    rgb = decode_image(image_path)
    img = pipe.apply_image(rgb)
    x = pipe.apply_float(img)
    model = keras.models.load_model(path, compile=False)
    idx = None
    if class_name is not None:
        if class_name in cfg.labels:
            idx = list(cfg.labels).index(class_name)
        else:
            try:
                idx = int(class_name)
            except ValueError:
                raise ModelError(f"unknown class '{class_name}' (labels: {', '.join(cfg.labels)})") from None
    ex = gradcam(model, x, cfg.labels, idx, layer, default_index=cfg.positive_index)
    s = max(display_size, img.shape[0])
    shown = cv2.resize(img, (s, s), interpolation=cv2.INTER_CUBIC) if img.shape[0] != s else img
    blended = overlay(shown, ex.heatmap, alpha)
    ok, buf = cv2.imencode(".png", blended[..., ::-1])
    if not ok:
        raise ModelError(f"{out}: could not encode PNG")
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.tobytes())
    return ex
