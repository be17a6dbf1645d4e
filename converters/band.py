"""The borderline band an export writes into every variant's metadata (issue 18): ``borderline_band``.

``edgeretina predict`` and the Android core flag a decision as *borderline* (ask for a retake) when the
screening score lies within ±band logits of the threshold. The band is measured here, from data the export
already has (never the test split): the source (float) model re-scores up to ``n`` validation images (the
training split when the run has no validation split) under the bench's fixed, seeded benign re-acquisition
perturbations (``edgeretina.shifts.BENIGN``: JPEG re-save 95 / 85, 1 / 2 px moves, brightness ±3 %, white
balance — the set and the per-image seed ``[seed, i]`` of the bench's stability floor,
``benchmarks/robustness.py``), and

    band = the ``quantile`` (0.95) of |Δ screening logit| pooled over images × perturbations

i.e. 95 % of benign retakes move the float model's score by less than the band, so a decision farther than
that from the threshold survives a retake. The screening logit is the one ``predict`` decides on: logit of
p(positive) (binary), p(referable) = p(grade ≥ 2) (DR grading), each label's (multi-label; pooled over
labels). Other multiclass tasks decide by argmax: no band.

The provenance (images, where from, perturbations, quantile, per-perturbation quantile / sd / flips) goes into
``export.borderline_band`` of the metadata and the manifest.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from edgeretina.errors import ExportError
from edgeretina.runtime.decisions import decisions, screening_threshold
from edgeretina.shifts import Benign, apply_benign
from edgeretina.tasks import Task, TaskKind, TaskSpec, scores_from_output

BAND_KEY = "borderline_band"  # the metadata key predict / bench / the Android core read (edgeretina/inference/predict.py)
QUANTILE = 0.95
DEFAULT_N = 100      # validation images the band is measured on (each scored 1 + 7 times)
MIN_IMAGES = 16      # fewer: no band (a note says why)
REFERABLE_GRADE = 2  # DR grading decides on p(grade >= 2) (benchmarks.scoring.REFERABLE_GRADE)
MODES = ("auto", "off")
CHUNK = 32           # images decoded and perturbed at a time (8 model inputs each)


def parse_band(value: Any) -> str | float:
    """``--borderline-band``: ``auto`` (measure), ``off`` (none) or a positive number of logits."""
    if isinstance(value, str) and value.strip().lower() in MODES:
        return value.strip().lower()
    try:
        band = float(value)
    except (TypeError, ValueError):
        band = float("nan")
    if isinstance(value, bool) or not np.isfinite(band) or band <= 0:
        raise ExportError(f"--borderline-band must be auto, off or a positive number of logits, not {value!r}")
    return band


@dataclass(frozen=True)
class BandSettings:
    """How the band is measured: the perturbations (default: the bench's whole benign set), the quantile
    of the pooled |Δ logit|, the seed (image ``i`` gets ``[seed, i]``)."""

    benign: tuple[Benign, ...] = tuple(Benign)
    quantile: float = QUANTILE
    seed: int = 0


@dataclass(frozen=True)
class BandMeasure:
    """A measured band and where it came from (``export.borderline_band`` in the metadata)."""

    band: float
    rule: str
    quantile: float
    n_images: int
    source: str  # e.g. "val split (100 images, stratified)"
    reference: str  # the model that was re-scored
    perturbations: tuple[str, ...]
    seed: int
    per_perturbation: dict[str, dict[str, float | None]]  # {name: {quantile, mean, sd, flip_rate}}
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["perturbations"] = list(self.perturbations)
        d["method"] = "measured"
        return d


def fixed_band(band: float) -> dict[str, Any]:
    """Provenance of a band given on the command line."""
    return {"band": float(band), "method": "given", "rule": "--borderline-band on the export command line"}


def screening_logits(spec: TaskSpec, probs) -> np.ndarray | None:
    """The logit(s) the screening decision is made on, per image ((N,) or (N, L)); None for argmax tasks."""
    s = scores_from_output(spec, probs)
    if spec.kind is TaskKind.MULTICLASS:
        if spec.task is not Task.DR:
            return None
        s = s[:, REFERABLE_GRADE:].sum(axis=1)
    p = np.clip(np.asarray(s, dtype=np.float64), 1e-7, 1 - 1e-7)  # predict's clipping (mark_borderline)
    return np.log(p) - np.log1p(-p)


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _inputs(images: Sequence[np.ndarray], pipeline, benign: Sequence[Benign], seed: int, offset: int) -> np.ndarray:
    """Model inputs of ``images``: for each, the unperturbed one, then one per ``benign`` perturbation (image
    ``i`` of the sample is perturbed with seed ``[seed, i]``, as the bench's stability stage does)."""
    def one(k: int) -> list[np.ndarray]:
        img = images[k]
        return [pipeline.apply(img)] + [pipeline.apply(apply_benign(img, b, [int(seed), offset + k]))
                                        for b in benign]
    ks = range(len(images))
    if _workers() > 1 and len(images) >= 4:
        with ThreadPoolExecutor(_workers()) as ex:  # OpenCV releases the GIL
            rows = list(ex.map(one, ks))
    else:
        rows = [one(k) for k in ks]
    return np.stack([x for row in rows for x in row]).astype(np.float32, copy=False)


def measure_band(predict: Callable[[np.ndarray], np.ndarray], images: Sequence[Callable[[], np.ndarray]],
                 pipeline, spec: TaskSpec, threshold, *, source: str, reference: str = "source model",
                 settings: BandSettings = BandSettings()) -> BandMeasure:
    """Re-score ``images`` (callables returning RGB uint8 photos, called once each) with ``predict`` (model
    inputs → probabilities) unperturbed and under each benign perturbation of ``settings``; the band is its
    ``quantile`` of the pooled |Δ screening logit|. ``ExportError`` for an argmax task."""
    t0 = time.perf_counter()
    benign, quantile, seed = tuple(settings.benign), settings.quantile, settings.seed
    if screening_logits(spec, np.full((1, spec.n_outputs), 1.0 / spec.n_outputs)) is None:
        raise ExportError(f"task {spec.task.value}: decided by argmax, no screening threshold for a band")
    base, moved = [], []  # per chunk: (n,) | (n, L) unperturbed logits; (n, P) | (n, P, L) perturbed
    for lo in range(0, len(images), CHUNK):
        chunk = [get() for get in images[lo:lo + CHUNK]]
        x = _inputs(chunk, pipeline, benign, seed, lo)
        z = screening_logits(spec, predict(x))
        z = z.reshape(len(chunk), 1 + len(benign), *z.shape[1:])
        base.append(z[:, 0])
        moved.append(z[:, 1:])
    base_z, moved_z = np.concatenate(base), np.concatenate(moved)
    d = moved_z - base_z[:, None]  # (N, P[, L])
    t = screening_threshold(spec, threshold)
    per = {}
    for j, b in enumerate(benign):
        dj = d[:, j]
        flips = _flip_rate(base_z, moved_z[:, j], t)
        per[b.value] = {"quantile": float(np.quantile(np.abs(dj), quantile)), "mean": float(dj.mean()),
                        "sd": float(dj.std()), "flip_rate": flips}
    band = float(np.quantile(np.abs(d), quantile))
    rule = (f"{quantile:g} quantile of |Δ screening logit| of the {reference}, pooled over {len(base_z)} "
            f"images × {len(benign)} benign perturbations ({', '.join(b.value for b in benign)}; seeded as the "
            "bench's stability floor)")
    return BandMeasure(band=band, rule=rule, quantile=quantile, n_images=int(len(base_z)), source=source,
                       reference=reference, perturbations=tuple(b.value for b in benign), seed=int(seed),
                       per_perturbation=per, seconds=round(time.perf_counter() - t0, 2))


def _flip_rate(za: np.ndarray, zb: np.ndarray, t) -> float | None:
    """Share of images whose decision at threshold ``t`` differs (any label), from screening logits."""
    if t is None:
        return None
    tl = np.log(np.clip(np.asarray(t, dtype=np.float64), 1e-7, 1 - 1e-7))
    tl = tl - np.log1p(-np.clip(np.asarray(t, dtype=np.float64), 1e-7, 1 - 1e-7))
    diff = decisions(za, tl) != decisions(zb, tl)
    if diff.ndim > 1:
        diff = diff.any(axis=1)
    return float(diff.mean()) if diff.size else None


__all__ = ["BAND_KEY", "BandMeasure", "BandSettings", "DEFAULT_N", "MIN_IMAGES", "QUANTILE", "fixed_band",
           "measure_band",
           "parse_band", "screening_logits"]
