"""Guarded int8 (variant ``int8-guard``): the int8 model answers; an image whose screening logit lies within a
band of the threshold is re-scored by the fp16 model of the same export.

The variant is **the int8 graph with its own metadata** (``<stem>_int8_guard.tflite``, the same bytes as
``<stem>_int8.tflite`` but metadata variant ``int8-guard``) whose ``export.guard`` entry points at the fp16
file of the same folder by name and sha256 (:class:`GuardInfo`). An app ships both files; ``edgeretina predict``
and ``edgeretina bench`` run the cascade (:class:`GuardRunner`) whenever a model's metadata carries a guard.

The band, in logit units, is ``k`` × the int8 model's logit noise: the root mean square of the difference
between the int8 model's and the float (Keras) model's screening logits on the calibration images (a residual
offset counts too), ``k = 3`` by default. Binary tasks: the logit of p(positive) against the logit of the
threshold; multi-label: any label within the band of its own threshold. Multi-class tasks decide by argmax and
have no band: refused at export.

Runtime code here imports only ``edgeretina.runtime`` / ``edgeretina.tasks`` (no TensorFlow).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.errors import ExportError, ModelError
from edgeretina.runtime import Timing, label_thresholds
from edgeretina.runtime.timing import time_batch1
from edgeretina.tasks import TaskKind, TaskSpec, scores_from_output

KEY = "guard"          # metadata: export.guard
DEFAULT_K = 3.0
_EPS = 1e-7


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def check_task(spec: TaskSpec) -> None:
    if spec.kind is TaskKind.MULTICLASS:
        raise ExportError(f"int8-guard needs a binary or multi-label screening task (a threshold to guard); "
                          f"task '{spec.task.value}' decides by argmax")


def margins(spec: TaskSpec, scores, threshold) -> np.ndarray:
    """(N,) distance in logits of each image's score(s) from the threshold(s); multi-label: the smallest."""
    s = np.asarray(scores, dtype=np.float64)
    t = label_thresholds(spec, threshold)
    d = np.abs(logit(s) - logit(t))
    return d.reshape(len(d), -1).min(axis=1) if d.ndim > 1 else d


def in_band(spec: TaskSpec, scores, threshold, band: float) -> np.ndarray:
    """Boolean (N,): the images the fp16 model re-scores."""
    return margins(spec, scores, threshold) <= float(band)


def logit_noise(scores, ref_scores) -> tuple[float, float]:
    """(rms, mean) of the logit difference of ``scores`` from ``ref_scores`` over every image and label."""
    d = (logit(scores) - logit(ref_scores)).reshape(-1)
    if d.size == 0:
        raise ExportError("int8-guard: no images to measure the int8 logit noise on")
    return float(np.sqrt(np.mean(d ** 2))), float(np.mean(d))


@dataclass(frozen=True)
class GuardInfo:
    """``export.guard`` of an int8-guard file's metadata."""

    fallback: str               # file name of the fp16 model, in the same folder
    fallback_sha256: str
    fallback_variant: str
    band: float                 # logits: re-score when |logit(score) − logit(threshold)| ≤ band
    k: float
    noise_rms: float            # int8 vs float screening-logit difference on the measuring images
    noise_mean: float
    n_images: int
    source: str                 # which images the noise was measured on
    rescored_share: float       # share of the measuring images inside the band
    check: dict[str, Any] | None = None  # cascade vs the float model on the verification sample

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict | None, where: str = "model") -> "GuardInfo | None":
        """The guard entry of a model's metadata; None when it has none; ModelError when it is malformed."""
        g = ((meta or {}).get("export") or {}).get(KEY) if isinstance((meta or {}).get("export"), dict) else None
        if g is None:
            return None
        try:
            info = cls(**{k: g[k] for k in cls.__dataclass_fields__ if k in g})
            band = float(info.band)
        except (TypeError, KeyError, ValueError):
            raise ModelError(f"{where}: malformed int8-guard metadata ({KEY})") from None
        if not np.isfinite(band) or band < 0 or not isinstance(info.fallback, str) or not info.fallback \
                or Path(info.fallback).name != info.fallback:
            raise ModelError(f"{where}: int8-guard metadata needs a non-negative band and a fallback file name "
                             f"in the same folder, got band {info.band!r}, fallback {info.fallback!r}")
        return info

    def fallback_path(self, model_path: str | Path) -> Path:
        return Path(model_path).parent / self.fallback


def measure(spec: TaskSpec, int8_scores, ref_scores, threshold, k: float = DEFAULT_K) -> dict[str, float]:
    """Band from the int8 logit noise: ``{"band", "k", "noise_rms", "noise_mean", "rescored_share"}``."""
    check_task(spec)
    if not (np.isfinite(k) and k >= 0):
        raise ExportError(f"--guard-k must be a non-negative number, got {k!r}")
    rms, mean = logit_noise(int8_scores, ref_scores)
    band = float(k) * rms
    share = float(in_band(spec, int8_scores, threshold, band).mean())
    return {"band": band, "k": float(k), "noise_rms": rms, "noise_mean": mean, "rescored_share": share}


def cascade(spec: TaskSpec, primary_probs: np.ndarray, fallback_probs_of, threshold, band: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the cascade and the re-scored mask: rows of ``primary_probs`` whose score is inside
    the band are replaced by ``fallback_probs_of(mask)`` (the fallback's probabilities of those images)."""
    p = np.array(primary_probs, dtype=np.float64, copy=True)
    mask = in_band(spec, scores_from_output(spec, p), threshold, band)
    if mask.any():
        p[mask] = np.asarray(fallback_probs_of(mask), dtype=np.float64).reshape(int(mask.sum()), -1)
    return p, mask


class GuardRunner:
    """A ``benchmarks.runners.base.Runner`` for an int8-guard model: ``primary`` (the int8 file's runner) and
    ``fallback`` (the fp16 file's runner) both return probabilities. ``predict`` scores every image with the
    int8 model and re-scores those inside the band with the fp16 one; ``time`` times the whole cascade per
    image (the int8 call, the band check and, for images inside the band, the fp16 call), so the mean latency
    includes the re-scoring. ``facts`` reports the band and the share of images re-scored by ``predict``."""

    device = "cpu"
    supports_predict = True

    def __init__(self, primary, fallback, spec: TaskSpec, threshold, info: GuardInfo):
        self.primary, self.fallback, self.spec, self.threshold, self.info = primary, fallback, spec, threshold, info
        self.threads = getattr(primary, "threads", None)
        self.scored = 0
        self.rescored = 0
        self.last_mask: np.ndarray | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        p, mask = cascade(self.spec, self.primary.predict(x), lambda m: self.fallback.predict(x[m]),
                          self.threshold, self.info.band)
        self.scored += len(mask)
        self.rescored += int(mask.sum())
        self.last_mask = mask
        return p

    def _step(self, x1: np.ndarray):
        p = self.primary.predict(x1)
        if in_band(self.spec, scores_from_output(self.spec, p), self.threshold, self.info.band)[0]:
            p = self.fallback.predict(x1)
        return p

    def time(self, x: np.ndarray, runs: int = 10, warmup: int = 3) -> Timing:
        return time_batch1(self._step, np.asarray(x, dtype=np.float32), runs, warmup)

    @property
    def facts(self) -> dict[str, Any]:
        share = self.rescored / self.scored if self.scored else None
        return {**(getattr(self.primary, "facts", None) or {}),
                "guard": {"fallback": self.info.fallback, "band": self.info.band, "k": self.info.k,
                          "scored": self.scored, "rescored": self.rescored, "rescored_share": share}}
