"""``edgeretina predict``: score fundus photos with a model, using only what the model carries.

Labels, preprocessing and the recommended threshold come from the model's own metadata (.tflite) or
config.json (.keras); a model without them is refused. ``.tflite`` runs on LiteRT, ``.keras`` on Keras.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeretina.data.records import OnBadImage
from edgeretina.errors import DataError, ModelError
from edgeretina.preprocess import Pipeline, decode_image, strict_decoding
from edgeretina.runtime.decisions import REFERABLE_GRADE, screening_threshold
from edgeretina.tasks import Task, TaskKind, predicted_classes

from .cpu import load_cpu
from .integrity import manifest_verification
from .modelfile import open_model

_NORMAL_LABELS = {"n", "normal", "healthy", "no dr", "non-referable"}


@dataclass(frozen=True)
class Prediction:
    image: str
    label: str  # the predicted class (binary: the decision at the threshold; multi-label: '+'-joined)
    probability: float  # binary: p(positive); DR: p(predicted grade); multi-label: max label probability
    probability_of: str  # the label ``probability`` refers to
    decision: str  # the screening decision: "refer" / "no referral"
    score: float  # the value the decision is made on (p(positive), p(referable), max abnormal label p)
    threshold: float | list[float] | None
    probabilities: dict[str, float]
    # True when the score lies within ±borderline_band (logit units) of the threshold (any label for
    # multi-label): a benign retake could flip the decision, so an app should ask for one. None: no band.
    borderline: bool | None = None
    borderline_band: float | None = None
    # int8-guard models (converters/guard.py): True when the fp16 fallback re-scored this image (its logit lay
    # within the guard's band of the threshold), False when the int8 model answered; None for other models.
    rescored: bool | None = None
    # ONH-crop models: True when the optic-disc locator's crop is a low-confidence guess / fallback (the app
    # should ask for a retake), with the locator's reason; None for models that do not crop the disc.
    disc_flagged: bool | None = None
    disc_reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


BAND_KEY = "borderline_band"  # metadata / config.json key: the band in logit units (e.g. a bench's δ)


def borderline_band_of(m) -> float | None:
    """The model's own borderline band: ``borderline_band`` in its .tflite metadata or config.json (top level
    or under ``extra``); None when absent. A band that is not a positive number is a ModelError."""
    v = (m.meta or {}).get(BAND_KEY)
    if v is None:
        v = (m.config.extra or {}).get(BAND_KEY)
    if v is None:
        return None
    try:
        band = float(v)
    except (TypeError, ValueError):
        band = float("nan")
    if not np.isfinite(band) or band < 0:
        raise ModelError(f"{m.path}: metadata '{BAND_KEY}' must be a non-negative number of logits, not {v!r}")
    return band


def logit(p: float) -> float:
    """log(p / (1 − p)), p clipped to [1e-7, 1 − 1e-7] (the scale the borderline band is measured on)."""
    p = min(max(float(p), 1e-7), 1 - 1e-7)
    return float(np.log(p) - np.log1p(-p))


def mark_borderline(p: Prediction, band: float | None) -> Prediction:
    """``p`` with ``borderline`` set: |logit(score) − logit(threshold)| ≤ band (each label against its own
    threshold for multi-label; no screening threshold: None)."""
    if band is None or p.threshold is None:
        return replace(p, borderline=None, borderline_band=band)
    if isinstance(p.threshold, list):
        near = any(abs(logit(v) - logit(t)) <= band for v, t in zip(p.probabilities.values(), p.threshold))
    else:
        near = abs(logit(p.score) - logit(p.threshold)) <= band
    return replace(p, borderline=bool(near), borderline_band=float(band))


def predict_images(model: str | Path, images: Sequence[str | Path], threads: int | None = None, *,
                   on_bad_image: str = "fail", problems: list[str] | None = None,
                   verify_manifest: bool = True, borderline: float | None = None) -> list[Prediction]:
    """Preprocess each image with the model's own pipeline and score it.

    The model is checked first (its export folder's manifest.json unless ``verify_manifest=False``; its
    metadata against the graph: ``integrity.py``), then every image is decoded strictly (a JPEG that makes
    libjpeg warn, an image under 64 px or over 50 MP is bad). ``on_bad_image="skip"`` leaves bad images
    out (one line each appended to ``problems``) instead of failing on the first."""
    policy = OnBadImage(on_bad_image)
    with manifest_verification(verify_manifest):
        m = open_model(model)
    spec = m.config.spec
    pipeline = Pipeline.from_json(m.config.preprocessing)
    xs, images, discs = _load_inputs(pipeline, images, policy, problems)
    x = np.stack(xs).astype(np.float32)
    runner = load_cpu(m, threads)
    probs = np.asarray(runner.predict(x), dtype=np.float64)
    mask = getattr(runner, "last_mask", None)  # an int8-guard cascade: which images fp16 re-scored
    t = screening_threshold(spec, m.config.threshold)
    out = []
    labels = list(spec.labels)
    for path, p in zip(images, probs):
        pd = {lb: float(v) for lb, v in zip(labels, p)}
        if spec.kind is TaskKind.BINARY:
            pos = spec.positive_index if spec.positive_index is not None else 1
            score = float(p[pos]) if len(p) > 1 else float(p[0])
            refer = score >= t
            label = labels[pos] if refer else labels[1 - pos]
            prob, of = score, labels[pos]
        elif spec.kind is TaskKind.MULTICLASS:
            k = int(predicted_classes(spec, p[None])[0])
            label, prob, of = labels[k], float(p[k]), labels[k]
            if spec.task is Task.DR:
                score = float(p[REFERABLE_GRADE:].sum())
                refer = score >= t
            else:
                score, refer = prob, None
        else:
            ts = t if isinstance(t, list) else [t] * len(labels)
            on = [lb for lb, v, tt in zip(labels, p, ts) if v >= tt]
            label = "+".join(on) if on else "none"
            prob, of = float(np.max(p)), labels[int(np.argmax(p))]
            abnormal = [v for lb, v in zip(labels, p) if lb.lower() not in _NORMAL_LABELS]
            score = float(max(abnormal)) if abnormal else prob
            refer = any(lb.lower() not in _NORMAL_LABELS for lb in on)
        decision = label if refer is None else ("refer" if refer else "no referral")
        flagged, reason = discs[len(out)]
        out.append(Prediction(str(path), label, prob, of, decision, score, t, pd,
                              rescored=None if mask is None else bool(mask[len(out)]),
                              disc_flagged=flagged, disc_reason=reason))
    # borderline: --borderline DELTA if given, else the band the model's metadata carries (if any)
    band = float(borderline) if borderline is not None else borderline_band_of(m)
    return [mark_borderline(p, band) for p in out]


def _load_inputs(pipeline, images, policy, problems):
    """Decode and preprocess every image strictly → (inputs, the images kept, per-image (disc_flagged, reason)
    for ONH-crop pipelines); a bad image fails or is skipped (listed in ``problems``) per ``policy``."""
    xs, kept, discs = [], [], []
    with strict_decoding():
        for p in images:
            try:
                if pipeline.uses_onh:
                    x_i, info = pipeline.apply_with_info(decode_image(p))
                    xs.append(x_i)
                    discs.append((info.disc_flagged, info.disc.reason if info.disc_flagged else None))
                else:
                    xs.append(pipeline.load(p))
                    discs.append((None, None))
                kept.append(p)
            except DataError as e:
                if policy is OnBadImage.FAIL:
                    raise
                if problems is not None:
                    problems.append(f"skipped {e}")
    if not xs:
        raise DataError(f"none of the {len(images)} image(s) could be used")
    return xs, kept, discs
