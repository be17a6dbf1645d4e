"""Representative data: calibration images (int8) and the verification sample, taken from the run's own
dataset through exactly the preprocessing recorded in its config.json.

- default: ``n`` (200) images of the TRAINING split, stratified by class (proportional, every class kept);
- ``--calib PATH``: a folder of images (run through the run's Pipeline) or a ``.npy``/``.npz`` array of
  already-preprocessed model inputs, shape (N, S, S, 3).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeretina.data import load_arrays, open_dataset
from edgeretina.errors import EdgeRetinaError, ExportError
from edgeretina.preprocess import Pipeline
from edgeretina.run import RunConfig

MIN_CALIB = 16
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def pipeline_of(cfg: RunConfig, source: str = "config.json"):
    try:
        return Pipeline.from_json(cfg.preprocessing)
    except EdgeRetinaError as e:
        raise ExportError(f"{source}: unusable preprocessing ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{source}: unknown preprocessing in config ({e})") from None


def label_key(y: Any) -> str:
    """A label as a string key: ``"1"`` for class 1, ``"0101"`` for a multi-label pattern."""
    if isinstance(y, (tuple, list, np.ndarray)):
        return "".join(str(int(round(float(v)))) for v in y)
    return str(int(y))


def stratified_indices(labels: Sequence[Any], n: int, seed: int = 0) -> list[int]:
    """``n`` indices stratified by label (multi-label: by label pattern), proportional to class frequency
    with largest-remainder rounding and at least one per class while ``n`` allows. All if ``n >= len``."""
    if n >= len(labels):
        return list(range(len(labels)))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        groups[label_key(y)].append(i)
    keys = sorted(groups, key=lambda k: -len(groups[k]))
    total = len(labels)
    exact = {k: n * len(groups[k]) / total for k in keys}
    alloc = {k: int(exact[k]) for k in keys}
    for k in keys:  # keep every class while the budget allows (rarest classes last in the list)
        if alloc[k] == 0 and sum(alloc.values()) < n:
            alloc[k] = 1
    for k in sorted(keys, key=lambda k: -(exact[k] - int(exact[k]))):
        if sum(alloc.values()) >= n:
            break
        if alloc[k] < len(groups[k]):
            alloc[k] += 1
    while sum(alloc.values()) > n:  # the at-least-one rule may overshoot: trim the largest class
        k = max(keys, key=lambda k: alloc[k])
        alloc[k] -= 1
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for k in keys:
        out.extend(int(i) for i in rng.choice(groups[k], size=min(alloc[k], len(groups[k])), replace=False))
    return sorted(out)


def dataset_splits(cfg: RunConfig, source: str = "config.json"):
    """The run's dataset, split exactly as in training → {"train", "val", "test"} record lists."""
    ds_cfg = cfg.dataset or {}
    path = ds_cfg.get("path")
    if not path:
        raise ExportError(f"{source}: config has no dataset path; pass --calib PATH with calibration images")
    kw = {}
    if ds_cfg.get("format"):
        kw["format"] = ds_cfg["format"]
    try:
        ds = open_dataset(path, cfg.task, **kw)
        return ds.split(**cfg.split_args())
    except EdgeRetinaError as e:
        raise ExportError(f"{source}: cannot open the training dataset {path} ({e}); pass --calib PATH") from None


def load_records(records, pipeline) -> tuple[np.ndarray, list]:
    X, y = load_arrays(records, pipeline)
    return np.asarray(X, dtype=np.float32), list(y)


def from_path(path: str | Path, pipeline, input_shape: tuple[int, int, int], n: int | None = None,
              seed: int = 0) -> np.ndarray:
    """``--calib PATH`` → float32 (N, S, S, 3) model inputs. One-line ``ExportError`` on any problem."""
    p = Path(path)
    if not p.exists():
        raise ExportError(f"{p}: calibration path does not exist")
    if p.is_file() and p.suffix.lower() in (".npy", ".npz"):
        try:
            if p.suffix.lower() == ".npy":
                X = np.load(p, allow_pickle=False)
            else:
                with np.load(p, allow_pickle=False) as z:
                    key = "x" if "x" in z.files else "images" if "images" in z.files else z.files[0]
                    X = z[key]
        except (ValueError, OSError) as e:
            raise ExportError(f"{p}: not a readable numpy array ({e})") from None
        if X.ndim != 4 or tuple(X.shape[1:]) != tuple(input_shape):
            raise ExportError(f"{p}: calibration array has shape {tuple(X.shape)}, the model needs "
                              f"(N, {', '.join(map(str, input_shape))}) preprocessed inputs")
        if not np.issubdtype(X.dtype, np.floating):
            raise ExportError(f"{p}: calibration array is {X.dtype}; it must hold preprocessed float inputs "
                              "(give a folder of images instead to run them through the model's preprocessing)")
        X = X.astype(np.float32)
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
        if len(files) < MIN_CALIB:
            raise ExportError(f"{p}: {len(files)} calibration images found, need at least {MIN_CALIB}")
        if n is not None and len(files) > n:
            idx = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
            files = [files[i] for i in sorted(idx)]
        arrs = []
        for f in files:
            try:
                arrs.append(pipeline.load(f))
            except EdgeRetinaError as e:
                raise ExportError(f"{f}: unusable calibration image ({e})") from None
        X = np.stack(arrs).astype(np.float32)
        if tuple(X.shape[1:]) != tuple(input_shape):
            raise ExportError(f"{p}: preprocessing gives {tuple(X.shape[1:])} inputs but the model needs "
                              f"{tuple(input_shape)}; config and model disagree")
    else:
        raise ExportError(f"{p}: --calib must be a folder of images or a .npy/.npz array")
    if len(X) < MIN_CALIB:
        raise ExportError(f"{p}: {len(X)} calibration images, need at least {MIN_CALIB}")
    if not np.isfinite(X).all():
        raise ExportError(f"{p}: calibration array contains NaN or inf")
    return X
