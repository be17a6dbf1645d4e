"""``edgeretina bench --agreement-data PATH``: decision flips of every model against the reference on a large
*unlabelled* set, with a Wilson 95 % confidence interval.

Agreement with the float model needs no labels, so the flip rate can be measured on far more images than the
labelled test split holds (e.g. every ODIR eye, every APTOS image): PATH is any dataset edgeretina opens (its
labels are ignored, every image is used) or a plain folder of images (searched recursively). Photos are decoded
once per chunk and run through each model's own preprocessing; every model is scored on the host (the ``cpu``
device: LiteRT for .tflite — int8-guard files as their cascade — and Keras for .keras), and the flips are
counted with the bench's own decision rule (``scoring.decision_change``: the screening decision at the
reference's threshold). Images that cannot be decoded are skipped and counted.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeretina.compare import wilson_ci
from edgeretina.data import open_dataset
from edgeretina.data.loading import load_image
from edgeretina.data.records import Record
from edgeretina.errors import DataError
from edgeretina.preprocess import IMAGE_EXTENSIONS, Pipeline, strict_decoding

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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 else None
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Agreement | None":
        if not d:
            return None
        return cls(int(d["n"]), int(d["flips"]), d.get("flip_rate"), tuple(d["ci95"]) if d.get("ci95") else None)


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


def _probabilities(records: Sequence[Record], everyone: Sequence[ModelFile], threads: int | None, chunk: int,
                   progress: Callable[[str], None] | None) -> tuple[dict[Path, list[np.ndarray]], int]:
    """Each model's probabilities on the decodable ``records``, chunk by chunk (photos decoded once, then run
    through every model's own preprocessing), and the number of photos skipped as undecodable."""
    runners = {m.path: DEVICES[Device.CPU].load(m, threads) for m in everyone}
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
                probs[m.path].append(np.asarray(runners[m.path].predict(x), dtype=np.float64))
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
    probs, skipped = _probabilities(records, everyone, threads, chunk, progress)
    n = len(records) - skipped
    if n == 0:
        raise DataError(f"{path}: none of the {len(records)} agreement images could be decoded")
    ref_p = np.concatenate(probs[ref.path])
    out: dict[Path, Agreement] = {}
    for m in everyone:
        rate = decision_change(spec, ref_p, np.concatenate(probs[m.path]), threshold).flip_rate
        k = int(round(rate * n)) if rate is not None else 0
        out[m.path] = Agreement(n, k, None if rate is None else k / n, wilson_ci(k, n) if rate is not None else None)
    return out, {"path": str(path), "format": fmt, "n_images": n, "skipped": skipped}


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
