"""``edgeretina bench --agreement-data PATH``: decision flips of every model against the reference on a large
*unlabelled* set, with a Wilson 95 % confidence interval.

Agreement with the float model needs no labels, so the flip rate can be measured on far more images than the
labelled test split holds (e.g. every ODIR eye, every APTOS image): PATH is any dataset edgeretina opens (its
labels are ignored, every image is used) or a plain folder of images (searched recursively). Photos are decoded
once per chunk and run through each model's own preprocessing; every model is scored on the host (the ``cpu``
device: LiteRT for .tflite — int8-guard files as their cascade — and Keras for .keras), and the flips are
counted with the bench's own decision rule (``scoring.decision_change``: the screening decision at the
reference's threshold). Images that cannot be decoded are skipped and counted. DR grading (5 grades) also
counts, with their own Wilson intervals, the images whose predicted grade changes and those whose predicted
grade ≥ 2 decision changes (the test table's "Grade flips" and "Referable flips" readings; the main flip
rate is the referral p(grade ≥ 2) ≥ threshold, the decision ``predict`` and the app report).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeretina.compare import wilson_ci
from edgeretina.converters import guard as guard_mod
from edgeretina.data import open_dataset
from edgeretina.data.loading import load_image
from edgeretina.data.records import Record
from edgeretina.errors import DataError
from edgeretina.preprocess import IMAGE_EXTENSIONS, Pipeline, strict_decoding
from edgeretina.runtime.decisions import REFERABLE_GRADE, disagreement
from edgeretina.tasks import Task, TaskKind, TaskSpec, predicted_classes

from . import guard_sweep
from .devices import DEVICES, Device
from .modelfile import ModelFile
from .scoring import decision_change

CHUNK = 256  # photos decoded and preprocessed at once (bounded memory on thousands of images)


@dataclass(frozen=True)
class Agreement:
    """One model's decisions vs the reference's on the agreement images."""

    n: int
    flips: int
    flip_rate: float | None
    ci95: tuple[float, float] | None  # Wilson 95 % interval of the flip rate
    # DR grading: {"grade": {...}, "referable_grade": {...}}, each {"flips", "flip_rate", "ci95"} (graded_flips)
    decisions: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 else None
        if self.decisions is None:
            d.pop("decisions")
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Agreement | None":
        if not d:
            return None
        return cls(int(d["n"]), int(d["flips"]), d.get("flip_rate"), tuple(d["ci95"]) if d.get("ci95") else None,
                   d.get("decisions"))


def graded_flips(spec: TaskSpec, ref_probs: np.ndarray, probs: np.ndarray) -> dict | None:
    """DR grading: flips of the predicted grade and of the predicted grade ≥ 2 decision, each with its Wilson
    95 % interval; None for other tasks."""
    if spec.kind is not TaskKind.MULTICLASS or spec.task is not Task.DR:
        return None
    a, b = predicted_classes(spec, ref_probs), predicted_classes(spec, probs)
    out = {}
    for key, (x, y) in {"grade": (a, b), "referable_grade": (a >= REFERABLE_GRADE, b >= REFERABLE_GRADE)}.items():
        k, n = int(round(disagreement(x, y) * len(x))), len(x)
        out[key] = {"flips": k, "flip_rate": k / n, "ci95": list(wilson_ci(k, n))}
    return out


def agreement_records(path: str | os.PathLike, task: str) -> tuple[list[Record], str]:
    """Every image of ``path`` (labels ignored) and what it was read as (the dataset format, or ``images``)."""
    try:
        ds = open_dataset(str(path), task)
        return list(ds.records), str(getattr(ds, "format", "dataset"))
    except DataError:
        p = Path(path)
        if not p.is_dir():
            raise
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                   and not f.name.startswith("."))
    if not files:
        raise DataError(f"{path}: no images for --agreement-data (give a dataset or a folder of images)")
    return [Record(key=str(f.relative_to(p)), source=str(f), patient=None, y=0) for f in files], "images"


def _predict(runner, x: np.ndarray, parts: dict[str, list] | None) -> np.ndarray:
    """A runner's probabilities of ``x``; an int8-guard cascade's int8 and fp16 outputs of every image are
    also kept in ``parts`` (for its band sweep), and its cascade is computed from them (what it runs)."""
    if parts is None:
        return np.asarray(runner.predict(x), dtype=np.float64)
    p8 = np.asarray(runner.primary.predict(x), dtype=np.float64)
    pf = np.asarray(runner.fallback.predict(x), dtype=np.float64)
    parts["int8"].append(p8)
    parts["fp16"].append(pf)
    if parts.get("t_ratio") is None:  # timed once, on the first images of the first chunk
        parts["t_ratio"] = guard_sweep.timing_ratio(runner.primary, runner.fallback, x[:8])
    return guard_mod.cascade(runner.spec, p8, lambda m: pf[m], runner.threshold, runner.info.band)[0]


def _probabilities(records: Sequence[Record], everyone: Sequence[ModelFile], threads: int | None, chunk: int,
                   progress: Callable[[str], None] | None, parts: dict[Path, dict] | None = None
                   ) -> tuple[dict[Path, list[np.ndarray]], int]:
    """Each model's probabilities on the decodable ``records``, chunk by chunk (photos decoded once, then run
    through every model's own preprocessing), and the number of photos skipped as undecodable. ``parts`` (when
    given) receives, per int8-guard model, its int8 and fp16 outputs of every image and their latency ratio."""
    runners = {m.path: DEVICES[Device.CPU].load(m, threads) for m in everyone}
    if parts is not None:
        parts.update({m.path: {"int8": [], "fp16": [], "t_ratio": None} for m in everyone if m.guard is not None})
    groups: dict[str, tuple[Pipeline, list[ModelFile]]] = {}
    for m in everyone:
        key = json.dumps(m.config.preprocessing, sort_keys=True)
        groups.setdefault(key, (Pipeline.from_json(m.config.preprocessing), []))[1].append(m)
    probs: dict[Path, list[np.ndarray]] = {m.path: [] for m in everyone}
    skipped = 0
    for start in range(0, len(records), chunk):
        if progress:
            progress(f"agreement images {start + 1}-{min(start + chunk, len(records))} of {len(records)}")
        raw = []
        with strict_decoding():
            for r in records[start:start + chunk]:
                try:
                    raw.append(load_image(r))
                except DataError:
                    skipped += 1
        if not raw:
            continue
        for pipe, ms in groups.values():
            x = np.stack([pipe.apply(img) for img in raw]).astype(np.float32)
            for m in ms:
                probs[m.path].append(_predict(runners[m.path], x, (parts or {}).get(m.path)))
    return probs, skipped


def agreement_stage(models: Sequence[ModelFile], ref: ModelFile, path: str | os.PathLike, *,
                    threads: int | None = None, max_images: int | None = None, seed: int = 0, chunk: int = CHUNK,
                    progress: Callable[[str], None] | None = None) -> tuple[dict[Path, Agreement], dict]:
    """Flips of each model vs ``ref`` (at the reference's task and threshold) on every image at ``path``.
    Returns ``({model path: Agreement}, info)`` with ``info`` = ``{"path", "format", "n_images", "skipped"}``
    for the report."""
    spec, threshold = ref.config.spec, ref.config.threshold
    records, fmt = agreement_records(path, spec.task.value)
    if max_images is not None and len(records) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(records), size=max_images, replace=False))
        records = [records[i] for i in keep]
    everyone = list({m.path: m for m in [ref, *models]}.values())
    parts: dict[Path, dict] = {}
    probs, skipped = _probabilities(records, everyone, threads, chunk, progress, parts)
    n = len(records) - skipped
    if n == 0:
        raise DataError(f"{path}: none of the {len(records)} agreement images could be decoded")
    ref_p = np.concatenate(probs[ref.path])
    out: dict[Path, Agreement] = {}
    for m in everyone:
        p = np.concatenate(probs[m.path])
        rate = decision_change(spec, ref_p, p, threshold).flip_rate
        k = int(round(rate * n)) if rate is not None else 0
        out[m.path] = Agreement(n, k, None if rate is None else k / n, wilson_ci(k, n) if rate is not None else None,
                                graded_flips(spec, ref_p, p))
    info = {"path": str(path), "format": fmt, "n_images": n, "skipped": skipped}
    sweeps = {str(m.path): _sweep(m, ref, ref_p, parts[m.path]) for m in everyone if m.path in parts}
    if sweeps:
        info["guard_sweeps"] = sweeps
    return out, info


def _sweep(model: ModelFile, ref: ModelFile, ref_p: np.ndarray, parts: dict) -> dict:
    """An int8-guard file's band sweep (``guard_sweep``) on the agreement images, for the report."""
    g = model.guard
    outputs = {"int8": np.concatenate(parts["int8"]), "fp16": np.concatenate(parts["fp16"]),
               "t_ratio": parts.get("t_ratio")}
    rows = guard_sweep.sweep(model.config.spec, (model.config.threshold, ref.config.threshold), ref_p, outputs, g)
    return {"noise_rms": g.noise_rms, "k": g.k, "t_ratio": parts.get("t_ratio"),
            "rows": [r.to_dict() for r in rows]}


def add_agreement(report, models: Sequence[ModelFile], ref: ModelFile, path: str | os.PathLike,
                  threads: int | None = None, max_images: int | None = None, seed: int = 0,
                  progress: Callable[[str], None] | None = None):
    """``report`` (:class:`~edgeretina.benchmarks.report.Report`) with every row's ``agreement`` filled in
    and the report's ``agreement`` facts: the bench's ``--agreement-data`` stage."""
    res, info = agreement_stage(models, ref, path, threads=threads, max_images=max_images, seed=seed,
                                progress=progress)
    by_file = {str(p): a for p, a in res.items()}
    rows = tuple(replace(r, agreement=by_file[r.file].to_dict()) if r.file in by_file else r
                 for r in report.variants)
    return replace(report, variants=rows, agreement=info)
