"""Decode + preprocess records into arrays (thread-parallel: OpenCV releases the GIL), class weights."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Sequence

import numpy as np

from edgeretina.data.records import (OnBadImage, Record, content_duplicates, duplicate_report, labels_array,
                                     merge_groups)
from edgeretina.errors import DataError
from edgeretina.preprocess import Pipeline, decode_image
from edgeretina.tasks import TaskKind, TaskSpec


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def load_image(record: Record, strict: bool | None = None) -> np.ndarray:
    """The record's RGB uint8 pixels (decoded from its file, or held in memory). ``strict``: see
    :func:`edgeretina.preprocess.decode_image` (libjpeg warnings and tiny images are errors)."""
    if record.image is not None:
        return record.image
    return decode_image(record.source, strict=strict)


def _map(fn, items: Sequence, workers: int | None):
    workers = default_workers() if workers is None else max(1, workers)
    if workers == 1 or len(items) < 4:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


def count_disc_flags(records, pipeline: Pipeline | None = None, workers: int | None = None,
                     max_keys: int = 50) -> dict[str, Any]:
    """Run the optic-disc locator of ``pipeline`` (its ``onh_crop`` step and the steps before it; a pipeline
    without one — or None — uses the default recipe's ``fov_crop → onh_crop``) on every record and count
    the flagged crops. Returns ``{"n", "found", "flagged", "fallback", "reasons": {reason: count},
    "flagged_keys": [first max_keys keys], "params": the onh_crop parameters}``; ``fallback`` = flagged with
    no candidate at all (crop at the FOV centre). Thread-parallel like :func:`load_arrays`."""
    pipe = pipeline if pipeline is not None and pipeline.uses_onh else Pipeline.default(onh=True)
    records = list(records)
    dets = _map(lambda r: pipe.detect_disc(load_image(r)), records, workers)
    reasons: dict[str, int] = {}
    keys = []
    for r, d in zip(records, dets):
        if not d.found:
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
            if len(keys) < max_keys:
                keys.append(r.key)
    flagged = sum(reasons.values())
    return {"n": len(records), "found": len(records) - flagged, "flagged": flagged,
            "fallback": sum(1 for d in dets if d.fallback), "reasons": dict(sorted(reasons.items())),
            "flagged_keys": keys, "params": pipe.onh_params}


def verify_decodable(records: list[Record], on_bad_image: OnBadImage | str = OnBadImage.FAIL,
                     problems: list[str] | None = None, workers: int | None = None) -> list[Record]:
    """Decode every record once (``--verify full``), strictly (a JPEG that makes libjpeg warn, an image
    under 64 px or over the pixel budget is bad); bad ones fail or are skipped and listed."""
    policy = OnBadImage(on_bad_image)
    problems = [] if problems is None else problems

    def try_one(r: Record):
        try:
            load_image(r, strict=True)
            return None
        except DataError as e:
            return str(e)

    errs = _map(try_one, records, workers)
    out = []
    for r, err in zip(records, errs):
        if err is None:
            out.append(r)
        elif policy is OnBadImage.FAIL:
            raise DataError(err)
        else:
            problems.append(f"skipped {err}")
    return out


def load_arrays(records: Iterable[Record], pipeline: Pipeline, spec: TaskSpec | None = None,
                on_bad_image: OnBadImage | str = OnBadImage.FAIL, workers: int | None = None,
                problems: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Records → ``(X float32 (N, S, S, 3), y)``: every image decoded and run through ``pipeline``.

    ``y``: int64 (N,) for binary/multiclass, float32 (N, L) for multi-label (inferred from the labels when
    ``spec`` is None). ``on_bad_image="skip"`` drops undecodable images (and their labels) and appends a
    line per image to ``problems``.
    """
    recs = list(records)
    policy = OnBadImage(on_bad_image)

    def one(r: Record):
        try:
            return pipeline.apply(load_image(r)), None
        except DataError as e:
            return None, str(e)

    results = _map(one, recs, workers)
    xs, keep = [], []
    for r, (x, err) in zip(recs, results):
        if err is not None:
            if policy is OnBadImage.FAIL:
                raise DataError(err)
            if problems is not None:
                problems.append(f"skipped {err}")
            continue
        xs.append(x)
        keep.append(r)
    if spec is None:
        y = (np.asarray([list(r.y) for r in keep], np.float32) if keep and isinstance(keep[0].y, (tuple, list))
             else np.asarray([int(r.y) for r in keep], np.int64))
    else:
        y = labels_array(keep, spec)
    if not xs:
        s = pipeline.input_size or 0
        return np.zeros((0, s, s, 3), np.float32), y
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise DataError(f"pipeline produced images of different shapes {sorted(shapes)}; add a 'resize' step")
    return np.stack(xs).astype(np.float32, copy=False), y


def load_images(records: Iterable[Record], pipeline: Pipeline | None = None,
                workers: int | None = None) -> np.ndarray:
    """Records → uint8 images after the pipeline's image steps (e.g. for int8 calibration or augmentation)."""
    recs = list(records)
    fn = (lambda r: pipeline.apply_image(load_image(r))) if pipeline is not None else load_image
    return np.stack(_map(fn, recs, workers))


def class_weights(records: Iterable[Record], spec: TaskSpec) -> dict[int, float]:
    """Balanced class weights from the (training) records: ``n / (n_classes · n_c)`` (sklearn's
    ``compute_class_weight("balanced")``), ``{class index: weight}`` for Keras ``class_weight``.
    Multi-label tasks get per-label positive weights ``n_neg / n_pos`` (for a weighted BCE).
    Classes absent from the records get weight 1.0."""
    recs = list(records)
    if not recs:
        raise DataError("class weights: no training records")
    if spec.kind is TaskKind.MULTILABEL:
        y = labels_array(recs, spec)
        pos = y.sum(axis=0)
        neg = len(y) - pos
        return {i: float(neg[i] / pos[i]) if pos[i] > 0 else 1.0 for i in range(spec.n_outputs)}
    from sklearn.utils.class_weight import compute_class_weight

    y = labels_array(recs, spec)
    present = np.unique(y)
    w = compute_class_weight("balanced", classes=present, y=y)
    out = {i: 1.0 for i in range(spec.n_outputs)}
    out.update({int(c): float(v) for c, v in zip(present, w)})
    return out


def finish_records(records: list[Record], sizes: dict[str, int], spec: TaskSpec, info: dict, problems: list[str],
                   *, dedupe: bool, check: str, on_bad_image, rel=os.path.basename, what: str = "") -> list[Record]:
    """The last steps every adapter shares: group byte-identical images (``dedupe``; ``sizes`` maps each
    source path to its byte size, so only equal-size files are hashed), report label conflicts, and with
    ``check == "full"`` decode every image once. Updates ``info`` and ``problems``; returns the records."""
    if dedupe and records:
        dup = content_duplicates([r.source for r in records], [sizes[r.source] for r in records])
        n_groups, conflicts = duplicate_report(records, dup, spec, rel=rel) if dup else (0, [])
        info["duplicate_groups"] = n_groups
        info["duplicate_label_conflicts"] = len(conflicts)
        if n_groups:
            problems.append(f"{n_groups} group(s) of byte-identical images{what} "
                            f"({sum(1 for r in records if r.source in dup)} images; each group kept on one side "
                            "of every split)")
            problems.extend(conflicts)
            records = merge_groups(records, dup)
    if check == "full":
        records = verify_decodable(records, on_bad_image, problems)
    return records
