"""``edgeretina predict``: score fundus photos with a model, using only what the model carries.

Labels, preprocessing and the recommended threshold come from the model's own metadata (.tflite) or
config.json (.keras); a model without them is refused. ``.tflite`` runs on LiteRT, ``.keras`` on Keras.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeretina.tasks import Task, TaskKind

from .modelfile import open_model
from .scoring import REFERABLE_GRADE, default_threshold

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

    def to_dict(self) -> dict:
        return asdict(self)


def predict_images(model: str | Path, images: Sequence[str | Path], threads: int | None = None
                   ) -> list[Prediction]:
    """Preprocess each image with the model's own pipeline and score it."""
    from edgeretina.preprocess import Pipeline

    from .devices import DEVICES, Device

    m = open_model(model)
    spec = m.config.spec
    pipeline = Pipeline.from_json(m.config.preprocessing)
    x = np.stack([pipeline.load(p) for p in images]).astype(np.float32)
    runner = DEVICES[Device.CPU].load(m, threads)
    probs = np.asarray(runner.predict(x), dtype=np.float64)
    t = default_threshold(spec, m.config.threshold)
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
            k = int(np.argmax(p))
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
        out.append(Prediction(str(path), label, prob, of, decision, score, t, pd))
    return out
