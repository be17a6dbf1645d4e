"""APTOS-2019 adapter: ``train.csv`` (``id_code, diagnosis``) + ``train_images/<id_code>.<any ext>``.

Tasks ``dr`` (grades 0–4) and ``referable-dr`` (grade ≥ 2). There are no patient ids; the split unit is
the image, except that byte-identical images (the release has duplicate groups under different
``id_code`` s, some with conflicting grades) are grouped by SHA-256 so they never straddle a split. The
groups and label conflicts are reported in ``problems``.
"""
from __future__ import annotations

import os
from pathlib import Path

from edgeretina.data.csvutil import list_images, read_csv, require_columns
from edgeretina.data.loading import finish_records
from edgeretina.data.records import FundusDataset, OnBadImage, Record, bad_image
from edgeretina.errors import DataError
from edgeretina.preprocess import check_image_file
from edgeretina.tasks import Task, task_spec

TASKS = (Task.DR, Task.REFERABLE_DR)
CSV_NAMES = ("train.csv", "test.csv", "labels.csv")
IMAGE_DIRS = ("train_images", "test_images", "images")


def _find(root: Path) -> tuple[Path, Path] | None:
    for c in CSV_NAMES:
        if (root / c).is_file():
            for d in IMAGE_DIRS:
                if (root / d).is_dir():
                    return root / c, root / d
    return None


def detect(path: Path) -> bool:
    if path.is_file() and path.suffix.lower() == ".csv":
        path = path.parent
    return path.is_dir() and _find(path) is not None


def open_aptos(path: Path, task: str, on_bad_image: OnBadImage = OnBadImage.FAIL, check: str = "header",
               dedupe: bool = True) -> FundusDataset:
    root = path.parent if path.is_file() else path
    spec = task_spec(task)
    if spec.task not in TASKS:
        raise DataError(f"{root}: an APTOS-2019 dataset cannot serve task '{spec.task.value}' "
                        f"(it serves: {', '.join(t.value for t in TASKS)})")
    found = _find(root)
    if found is None:
        raise DataError(f"{root}: no train.csv + train_images/ (APTOS-2019 layout)")
    csv_path, img_dir = found
    if path.is_file():
        csv_path = path
    header, rows = read_csv(csv_path)
    require_columns(csv_path, header, ["id_code", "diagnosis"])
    files = list_images(img_dir)
    by_stem: dict[str, tuple[str, int]] = {}
    for name, v in files.items():
        by_stem.setdefault(os.path.splitext(name)[0], v)
    problems: list[str] = []
    records: list[Record] = []
    seen: dict[str, int] = {}
    for ln, row in enumerate(rows, start=2):
        code, diag = row["id_code"], row["diagnosis"]
        where = f"{csv_path} line {ln} (id_code {code or '?'})"
        if not code:
            raise DataError(f"{where}: empty id_code")
        if code in seen:
            raise DataError(f"{where}: duplicate id_code (also on line {seen[code]})")
        seen[code] = ln
        try:
            grade = int(float(diag))
            if grade != float(diag) or not 0 <= grade <= 4:
                raise ValueError
        except ValueError:
            raise DataError(f"{where}: unknown label {diag!r} (expected a DR grade 0-4)") from None
        hit = by_stem.get(code)
        if hit is None:
            bad_image(f"{where}: image {code}.* not found in {img_dir}", on_bad_image, problems)
            continue
        fpath, size = hit
        if check != "none":
            problem = check_image_file(fpath, size)
            if problem:
                bad_image(f"{fpath}: {problem}", on_bad_image, problems)
                continue
        y = grade if spec.task is Task.DR else int(grade >= 2)
        records.append(Record(key=code, source=fpath, patient=None, y=y, meta={"grade": grade}))
    info = {"n_images_total": len(files), "n_patients_total": None}

    records = finish_records(records, {p: s for p, s in files.values()}, spec, info, problems, dedupe=dedupe,
                             check=check, on_bad_image=on_bad_image, what=" under different id_codes")
    return FundusDataset(str(root), "aptos", spec, records, problems, info)
