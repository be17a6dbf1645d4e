"""In-memory datasets: MedMNIST-style ``.npz`` (RetinaMNIST, predefined splits) and the synthetic set."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edgeretina.data import synthetic
from edgeretina.data.records import FundusDataset, Record
from edgeretina.errors import DataError
from edgeretina.preprocess import to_rgb_uint8
from edgeretina.tasks import Task, task_spec

NPZ_TASKS = (Task.DR, Task.REFERABLE_DR)
SYNTHETIC_TASKS = (Task.GLAUCOMA,)
_NPZ_SPLITS = (("train", "train"), ("val", "val"), ("test", "test"))


def detect_npz(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npz"


def open_npz(path: Path, task: str = "dr") -> FundusDataset:
    """RetinaMNIST (MedMNIST v2): ``{train,val,test}_images`` (N, H, W[, 3]) uint8 and ``*_labels`` (N, 1)
    grades 0–4; the predefined split is kept (``split()`` defaults to it). No patient ids."""
    spec = task_spec(task)
    if spec.task not in NPZ_TASKS:
        raise DataError(f"{path}: a RetinaMNIST .npz cannot serve task '{spec.task.value}' "
                        f"(it serves: {', '.join(t.value for t in NPZ_TASKS)})")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    splits = [(s, name) for s, name in _NPZ_SPLITS if f"{s}_images" in arrays]
    if not splits:
        raise DataError(f"{path}: missing arrays 'train_images'/'train_labels' (found: {', '.join(arrays)})")
    records: list[Record] = []
    for s, name in splits:
        if f"{s}_labels" not in arrays:
            raise DataError(f"{path}: has '{s}_images' but no '{s}_labels'")
        imgs, labels = arrays[f"{s}_images"], np.asarray(arrays[f"{s}_labels"]).reshape(-1)
        if len(imgs) != len(labels):
            raise DataError(f"{path}: {s}_images has {len(imgs)} images but {s}_labels has {len(labels)}")
        for i, (img, lab) in enumerate(zip(imgs, labels)):
            g = int(lab)
            if g != lab or not 0 <= g <= 4:
                raise DataError(f"{path}: {s}_labels[{i}]: unknown label {lab!r} (expected a DR grade 0-4)")
            y = g if spec.task is Task.DR else int(g >= 2)
            records.append(Record(key=f"{name}/{i}", source=f"{path}#{name}/{i}", patient=None, y=y, split=name,
                                  meta={"grade": g}, image=to_rgb_uint8(img, source=f"{path}#{name}/{i}")))
    info = {"n_images_total": len(records), "n_patients_total": None,
            "image_shape": list(records[0].image.shape) if records else None}
    return FundusDataset(str(path), "npz", spec, records, [], info)


def parse_synthetic(path: str) -> dict[str, float | int]:
    """``synthetic`` or ``synthetic:n=600,size=128,seed=0,glaucoma_fraction=0.5`` → generate() kwargs."""
    opts: dict[str, float | int] = {"n": 600, "size": 128, "seed": 0}
    head, _, rest = str(path).partition(":")
    if head.strip() != "synthetic":
        raise DataError(f"{path}: not a synthetic dataset spec (use 'synthetic' or 'synthetic:n=600,size=128,seed=0')")
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or k not in ("n", "size", "seed", "glaucoma_fraction"):
            raise DataError(f"{path}: bad synthetic option '{part}' (use n=, size=, seed=, glaucoma_fraction=)")
        try:
            opts[k] = float(v) if k == "glaucoma_fraction" else int(v)
        except ValueError:
            raise DataError(f"{path}: synthetic option {k} needs a number, got {v!r}") from None
    return opts


def open_synthetic(path: str, task: str = "glaucoma") -> FundusDataset:
    """The embedded procedural glaucoma set (``edgeretina.data.synthetic.generate``); one patient per image."""
    spec = task_spec(task)
    if spec.task not in SYNTHETIC_TASKS:
        raise DataError(f"{path}: the synthetic dataset cannot serve task '{spec.task.value}' (it serves: glaucoma)")
    opts = parse_synthetic(path)

    try:
        images, labels, info = synthetic.generate(**opts)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    name = "synthetic:" + ",".join(f"{k}={v}" for k, v in opts.items())
    records = [Record(key=f"syn{i:05d}", source=f"{name}#{i}", patient=f"syn{i:05d}", y=int(labels[i]),
                      meta=dict(info[i]) if i < len(info) else {}, image=images[i]) for i in range(len(labels))]
    return FundusDataset(name, "synthetic", spec, records, [],
                         {"n_images_total": len(records), "n_patients_total": len(records), "options": opts})
