"""ImageFolder adapter: one sub-folder per class (KIM-EYE, ACRIMA, RIM-ONE DL style releases).

When the class folders are exactly a normal-like and a glaucoma-like name (``normal``/``healthy``/
``negative``/``non-glaucoma``/``0`` … and ``glaucoma``/``glaucomatous``/``positive``/``1`` …), the dataset
serves task ``glaucoma``; any folders serve task ``classes`` (labels = sorted folder names). Images are
found recursively inside each class folder; any image extension. There are no patient ids, but
byte-identical files are grouped so they never straddle a split.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from edgeretina.data.loading import finish_records
from edgeretina.data.records import FundusDataset, OnBadImage, Record, bad_image
from edgeretina.errors import DataError
from edgeretina.preprocess import IMAGE_EXTENSIONS, check_image_file
from edgeretina.tasks import Task, task_spec

NORMAL_NAMES = {"normal", "normals", "healthy", "negative", "neg", "nonglaucoma", "nonglaucomatous", "noglaucoma",
                "notglaucoma", "0", "n", "control", "controls", "nog"}
GLAUCOMA_NAMES = {"glaucoma", "glaucomatous", "positive", "pos", "1", "g", "glaucomas", "withglaucoma"}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def class_dirs(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _walk_images(folder: Path) -> list[tuple[str, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                p = os.path.join(dirpath, f)
                out.append((p, os.path.getsize(p)))
    return out


def detect(path: Path) -> bool:
    if not path.is_dir():
        return False
    dirs = class_dirs(path)
    if len(dirs) < 2:
        return False
    return all(any(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in os.listdir(d)) or
               any(q.is_dir() for q in d.iterdir()) for d in dirs)


_NORMAL_PARTS = ("normal", "healthy", "negative", "nonglauc", "noglauc", "notglauc", "withoutglauc", "control")
_GLAUCOMA_PARTS = ("glaucom", "positive")


def folder_class(name: str) -> int | None:
    """0 for a normal-like folder name, 1 for a glaucoma-like one, None otherwise
    (``Glaucoma_Negative`` → 0, ``glaucoma_positive`` → 1, ``non-glaucoma`` → 0, ``RIM-ONE glaucoma`` → 1)."""
    k = _norm(name)
    if k in NORMAL_NAMES or any(p in k for p in _NORMAL_PARTS):
        return 0
    if k in GLAUCOMA_NAMES or any(p in k for p in _GLAUCOMA_PARTS):
        return 1
    return None


def glaucoma_mapping(names: list[str]) -> dict[str, int] | None:
    if len(names) != 2:
        return None
    m = {n: folder_class(n) for n in names}
    return m if sorted(v for v in m.values() if v is not None) == [0, 1] else None


def open_imagefolder(path: Path, task: str | None = None, on_bad_image: OnBadImage = OnBadImage.FAIL,
                     check: str = "header", dedupe: bool = True) -> FundusDataset:
    dirs = class_dirs(path)
    if len(dirs) < 2:
        raise DataError(f"{path}: an image folder needs at least two class sub-folders")
    names = [d.name for d in dirs]
    gmap = glaucoma_mapping(names)
    if task is None:
        task = "glaucoma" if gmap else "classes"
    t = Task(task) if task in {x.value for x in Task} else None
    if t is Task.GLAUCOMA:
        if gmap is None:
            raise DataError(f"{path}: class folders {', '.join(names)} are not a normal/glaucoma pair, so this "
                            "folder cannot serve task 'glaucoma' (use --task classes)")
        spec = task_spec("glaucoma")
        label_of = gmap
    elif t is Task.CLASSES:
        spec = task_spec("classes", tuple(names))
        label_of = {n: i for i, n in enumerate(names)}
    else:
        spec = task_spec(task)  # unknown task name → its own error
        raise DataError(f"{path}: an image folder cannot serve task '{spec.task.value}' "
                        f"(it serves: {'glaucoma, ' if gmap else ''}classes)")
    problems: list[str] = []
    records: list[Record] = []
    sizes: dict[str, int] = {}
    for d in dirs:
        imgs = _walk_images(d)
        if not imgs:
            problems.append(f"{d}: class folder has no images")
        for p, size in imgs:
            if check != "none":
                problem = check_image_file(p, size)
                if problem:
                    bad_image(f"{p}: {problem}", on_bad_image, problems)
                    continue
            rel = os.path.relpath(p, path)
            sizes[p] = size
            records.append(Record(key=rel, source=p, patient=None, y=label_of[d.name], meta={"folder": d.name}))
    info = {"n_images_total": len(records), "n_patients_total": None, "class_folders": names}

    records = finish_records(records, sizes, spec, info, problems, dedupe=dedupe, check=check,
                             on_bad_image=on_bad_image, rel=lambda s: os.path.relpath(s, path))
    return FundusDataset(str(path), "imagefolder", spec, records, problems, info)
