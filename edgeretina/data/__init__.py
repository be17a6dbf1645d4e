"""Fundus data layer: adapters (ODIR-5K, APTOS-2019, ImageFolder, RetinaMNIST .npz, synthetic), patient-level
splits, array loading, the tf.data input pipeline and class weights.

>>> ds = open_dataset("../shared/data/odir", "glaucoma")          # format auto-detected
>>> parts = ds.split("70/10/20", seed=0)                         # {"train", "val", "test"} by patient
>>> X, y = load_arrays(parts["val"], Pipeline.default(224, "tf"))

Nothing here imports TensorFlow at module level (``make_tf_dataset`` imports it when called).
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

from edgeretina.data import aptos, imagefolder, memory, odir, summary, tfdata
from edgeretina.data.loading import (class_weights, count_disc_flags, load_arrays, load_image, load_images,
                                     verify_decodable)
from edgeretina.data.records import FundusDataset, OnBadImage, Record, class_counts, is_minority, labels_array
from edgeretina.errors import DataError
from edgeretina.tasks import task_spec


class DataFormat(str, Enum):
    ODIR = "odir"
    APTOS = "aptos"
    IMAGEFOLDER = "imagefolder"
    NPZ = "npz"
    SYNTHETIC = "synthetic"


# format → the tasks it can serve (first = default)
FORMAT_TASKS: dict[DataFormat, tuple[str, ...]] = {
    DataFormat.ODIR: ("glaucoma", "odir", "multitask"),
    DataFormat.APTOS: ("dr", "referable-dr"),
    DataFormat.IMAGEFOLDER: ("glaucoma", "classes"),
    DataFormat.NPZ: ("dr", "referable-dr"),
    DataFormat.SYNTHETIC: ("glaucoma",),
}


def detect_format(path: str | Path) -> DataFormat:
    """Guess the dataset format from a path (no image is decoded)."""
    if str(path).split(":", 1)[0] == "synthetic":
        return DataFormat.SYNTHETIC
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if odir.detect(p):
        return DataFormat.ODIR
    if aptos.detect(p):
        return DataFormat.APTOS
    if memory.detect_npz(p):
        return DataFormat.NPZ
    if imagefolder.detect(p):
        return DataFormat.IMAGEFOLDER
    if p.suffix.lower() in (".xlsx", ".xls") or (p.is_dir() and any(p.glob("*.xlsx"))):
        raise DataError(f"{p}: Excel annotation files are not read; save the sheet as annotations.csv "
                        "beside the images/ folder (ODIR-5K column names)")
    raise DataError(f"{p}: not a dataset edgeretina recognises (expected ODIR annotations.csv + images/, "
                    "APTOS train.csv + train_images/, class sub-folders of images, a .npz, or 'synthetic')")


def open_dataset(path: str | Path, task: str | None = None, format: str | None = None,
                 on_bad_image: str = "fail", **options: Any) -> FundusDataset:
    """Open a dataset for a task. ``format`` is auto-detected when None; ``task`` defaults to the format's
    first task. ``on_bad_image``: ``fail`` (one-line DataError naming the file/row) or ``skip`` (dropped and
    listed in ``.problems``). Options: ``check`` = ``header`` (default: size + signature + end marker of
    every file, no decoding) / ``full`` (decode every image) / ``none``; ``dedupe`` (default True:
    byte-identical images share a split group); ODIR ``suspect`` = ``include`` (default) / ``exclude``
    and ``images_dir``."""
    fmt = DataFormat(format) if format else detect_format(path)
    try:
        policy = OnBadImage(on_bad_image)
    except ValueError:
        raise DataError(f"unknown on_bad_image '{on_bad_image}' (choose fail or skip)") from None
    if task is not None:
        task = task_spec(task).task.value if task != "classes" else "classes"  # validates the name
    check = options.get("check", "header")
    if check not in ("header", "full", "none"):
        raise DataError(f"unknown check '{check}' (choose header, full or none)")
    allowed = {DataFormat.ODIR: {"check", "dedupe", "suspect", "images_dir", "negatives"},
               DataFormat.APTOS: {"check", "dedupe"}, DataFormat.IMAGEFOLDER: {"check", "dedupe"},
               DataFormat.NPZ: {"check", "dedupe"}, DataFormat.SYNTHETIC: {"check", "dedupe"}}[fmt]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DataError(f"{path}: option(s) {', '.join(unknown)} do not apply to format '{fmt.value}'")
    if task is not None and task not in FORMAT_TASKS[fmt]:
        names = {DataFormat.ODIR: "an ODIR-5K", DataFormat.APTOS: "an APTOS-2019",
                 DataFormat.IMAGEFOLDER: "an image-folder", DataFormat.NPZ: "a RetinaMNIST .npz",
                 DataFormat.SYNTHETIC: "the synthetic"}
        raise DataError(f"{path}: {names[fmt]} dataset cannot serve task '{task}' "
                        f"(it serves: {', '.join(FORMAT_TASKS[fmt])})")
    if fmt is DataFormat.SYNTHETIC:
        return memory.open_synthetic(str(path), task or "glaucoma")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if fmt is DataFormat.ODIR:
        return odir.open_odir(p, task or "glaucoma", policy, **options)
    if fmt is DataFormat.APTOS:
        return aptos.open_aptos(p, task or "dr", policy, **options)
    if fmt is DataFormat.NPZ:
        return memory.open_npz(p, task or "dr")
    return imagefolder.open_imagefolder(p, task, policy, **options)


def make_tf_dataset(records, pipeline, batch_size: int = 32, shuffle: bool = False, augment=None, seed: int = 0,
                    **kwargs):
    """tf.data pipeline (parallel decode → cache → [shuffle] → [augment] → scale → batch → prefetch).
    See :func:`edgeretina.data.tfdata.make_tf_dataset`."""
    return tfdata.make_tf_dataset(records, pipeline, batch_size=batch_size, shuffle=shuffle, augment=augment,
                                  seed=seed, **kwargs)


def summarize(ds: FundusDataset, scheme: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The ``data summary`` dict. See :func:`edgeretina.data.summary.summarize`."""
    return summary.summarize(ds, scheme, seed)


__all__ = ["open_dataset", "detect_format", "DataFormat", "FORMAT_TASKS", "FundusDataset", "Record", "OnBadImage",
           "load_arrays", "load_image", "load_images", "make_tf_dataset", "class_weights", "class_counts",
           "labels_array", "is_minority", "verify_decodable", "summarize", "count_disc_flags"]
