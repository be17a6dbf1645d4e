"""ODIR-5K adapter: ``annotations.csv`` (original column names) + ``images/``.

One record per *eye* with an image; labels come from that eye's own diagnostic keywords (the eight
N/D/G/C/A/H/M/O columns are patient-level and only validated). Patient = the ``ID`` column, so both eyes of
a patient always stay on one side of a split.

Tasks:
- ``glaucoma``: eyes whose keywords contain "glaucoma" (1) vs eyes whose keywords are exactly "normal fundus"
  (0); every other eye (other findings, or "normal fundus, lens dust") is left out — unless
  ``negatives="all"``: then every non-glaucoma eye with a diagnostic keyword is a negative. ``suspect="include"``
  (default) counts "suspected glaucoma" as glaucoma; ``"exclude"`` leaves suspected-only eyes out.
- ``odir``: the eight labels per eye from its keywords (:data:`KEYWORD_LABELS`).
- ``multitask``: (glaucoma, dr) per eye, every eye with a diagnostic keyword.
"""
from __future__ import annotations

import re
from pathlib import Path

from edgeretina.data.csvutil import list_images, read_csv, require_columns
from edgeretina.data.loading import finish_records
from edgeretina.data.records import FundusDataset, OnBadImage, Record, bad_image
from edgeretina.errors import DataError
from edgeretina.preprocess import check_image_file
from edgeretina.tasks import Task, task_spec

CSV_NAME = "annotations.csv"
TASKS = (Task.GLAUCOMA, Task.ODIR, Task.MULTITASK)
REQUIRED = ["ID", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords", "Right-Diagnostic Keywords"]
FLAG_COLUMNS = {  # short name → long name in the real ODIR-5K CSV
    "N": "Normal", "D": "Diabetes", "G": "Glaucoma", "C": "Cataract", "A": "Age related Macular Degeneration",
    "H": "Hypertension", "M": "Pathological Myopia", "O": "Other diseases/abnormalities",
}
LABELS = tuple(FLAG_COLUMNS)
# Keywords that describe the photograph, not the eye: ignored for labelling.
NON_DIAGNOSTIC = {"lens dust", "low image quality", "image offset", "optic disk photographically invisible",
                  "no fundus image", "anterior segment image"}
# (label, test) in order; the first match labels a keyword, anything else diagnostic is O.
KEYWORD_LABELS = (
    ("N", lambda k: k == "normal fundus"),
    ("G", lambda k: "glaucoma" in k),
    ("D", lambda k: "diabetic retinopathy" in k or "proliferative retinopathy" in k
     or "nonproliferative retinopathy" in k),
    ("C", lambda k: "cataract" in k),
    ("A", lambda k: "age-related macular degeneration" in k or "age related macular degeneration" in k),
    ("H", lambda k: "hypertensive retinopathy" in k),
    ("M", lambda k: "myopi" in k),
)
# Glaucoma task, who counts as a negative: ``normal`` = eyes whose keywords are exactly "normal fundus" (the
# published recipe); ``all`` = every non-glaucoma eye with a diagnostic keyword (the screening population:
# cataract, DR, AMD, ... are negatives too, so the model cannot score by spotting "any abnormality").
NEGATIVES = ("normal", "all")
_SPLIT_RE = re.compile(r"[，,;；]")
_SUSPECT_RE = re.compile(r"^(suspected|suspicious|suspect)\s+")


def keywords(cell: str) -> list[str]:
    return [k.strip().lower() for k in _SPLIT_RE.split(cell or "") if k.strip()]


def keyword_label(k: str) -> str | None:
    """N/D/G/C/A/H/M/O for one keyword, None for a non-diagnostic note."""
    k = _SUSPECT_RE.sub("", k)
    if k in NON_DIAGNOSTIC:
        return None
    for lab, test in KEYWORD_LABELS:
        if test(k):
            return lab
    return "O"


def eye_labels(kws: list[str], suspect: str = "include") -> tuple[set[str], bool]:
    """(labels of the eye, whether any label rests on a 'suspected ...' keyword only)."""
    labs, sure = set(), set()
    for k in kws:
        lab = keyword_label(k)
        if lab is None:
            continue
        is_suspect = bool(_SUSPECT_RE.match(k))
        if is_suspect and suspect == "exclude":
            continue
        labs.add(lab)
        if not is_suspect:
            sure.add(lab)
    return labs, bool(labs - sure)


def find_csv(path: Path) -> Path | None:
    """``annotations.csv``, or another CSV in the folder whose header has the ODIR eye columns
    (e.g. a re-export of the original ``ODIR-5K_Training_Annotations.xlsx``)."""
    if path.is_file():
        return path if path.suffix.lower() == ".csv" and _has_odir_header(path) else None
    if not path.is_dir():
        return None
    if (path / CSV_NAME).is_file():
        return path / CSV_NAME
    for c in sorted(path.glob("*.csv")):
        if _has_odir_header(c):
            return c
    return None


def _has_odir_header(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.readline(4096).decode("utf-8-sig", "replace")
    except OSError:
        return False
    return "Left-Fundus" in head and "Right-Fundus" in head


def find_image_dir(root: Path) -> Path | None:
    """``images/``, else the sub-folder holding the most image files (original release folder names vary)."""
    if (root / "images").is_dir():
        return root / "images"
    best, best_n = None, 0
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        n = len(list_images(d))
        if n > best_n:
            best, best_n = d, n
    return best


def detect(path: Path) -> bool:
    return find_csv(path) is not None


def open_odir(path: Path, task: str, on_bad_image: OnBadImage = OnBadImage.FAIL, suspect: str = "include",
              images_dir: str | None = None, check: str = "header", dedupe: bool = True,
              negatives: str = "normal") -> FundusDataset:
    root = path.parent if path.is_file() else path
    csv_path = find_csv(path) or root / CSV_NAME
    spec = task_spec(task)
    if spec.task not in TASKS:
        raise DataError(f"{root}: an ODIR-5K dataset cannot serve task '{spec.task.value}' "
                        f"(it serves: {', '.join(t.value for t in TASKS)})")
    if suspect not in ("include", "exclude"):
        raise DataError(f"unknown suspect option '{suspect}' (choose include or exclude)")
    if negatives not in NEGATIVES:
        raise DataError(f"unknown negatives option '{negatives}' (choose {' or '.join(NEGATIVES)})")
    img_dir = root / images_dir if images_dir else find_image_dir(root)
    if img_dir is None or not img_dir.is_dir():
        raise DataError(f"{root}: no image folder ({images_dir or 'images'}/) beside {csv_path.name}")
    header, rows = read_csv(csv_path)
    require_columns(csv_path, header, REQUIRED)
    flag_cols = {}
    for short, long in FLAG_COLUMNS.items():
        if long in header:
            flag_cols[short] = long
        elif short in header:
            flag_cols[short] = short
    files = list_images(img_dir)
    problems: list[str] = []
    records: list[Record] = []
    patients, n_eyes, seen_ids = set(), 0, {}
    n_suspect = n_with_other = 0
    for ln, row in enumerate(rows, start=2):
        pid = row["ID"]
        where = f"{csv_path} line {ln} (ID {pid or '?'})"
        if not pid:
            raise DataError(f"{where}: empty ID")
        if pid in seen_ids:
            raise DataError(f"{where}: duplicate patient ID (also on line {seen_ids[pid]})")
        seen_ids[pid] = ln
        for short, col in flag_cols.items():
            v = row.get(col, "")
            if v not in ("0", "1", "0.0", "1.0"):
                raise DataError(f"{where}: unknown label {v!r} in column '{col}' (expected 0 or 1)")
        patients.add(pid)
        for side in ("Left", "Right"):
            fname = row[f"{side}-Fundus"]
            if not fname:
                continue
            n_eyes += 1
            kws = keywords(row[f"{side}-Diagnostic Keywords"])
            labs, suspect_only = eye_labels(kws, suspect)
            if spec.task is Task.GLAUCOMA:
                if suspect == "exclude" and any(_SUSPECT_RE.match(k) and "glaucoma" in k for k in kws):
                    continue
                if "G" in labs:
                    y = 1
                elif kws == ["normal fundus"] or (negatives == "all" and labs):
                    y = 0
                else:
                    continue
            elif spec.task is Task.ODIR:
                if not labs:
                    problems.append(f"{where}: {side.lower()} eye has no diagnostic keyword "
                                    f"({row[f'{side}-Diagnostic Keywords']!r}); left out")
                    continue
                if "N" in labs and len(labs) > 1:
                    labs = labs - {"N"}
                y = tuple(1.0 if lab in labs else 0.0 for lab in LABELS)
            else:  # multitask
                if not labs:
                    continue
                y = (1.0 if "G" in labs else 0.0, 1.0 if "D" in labs else 0.0)
            if fname not in files:
                bad_image(f"{where}: {side.lower()} image {fname} not found in {img_dir}", on_bad_image, problems)
                continue
            fpath, size = files[fname]
            if check != "none":
                problem = check_image_file(fpath, size)
                if problem:
                    bad_image(f"{fpath}: {problem}", on_bad_image, problems)
                    continue
            other = bool(labs - {"G", "N"})
            if spec.task is Task.GLAUCOMA and y == 1:
                n_suspect += suspect_only
                n_with_other += other
            records.append(Record(key=Path(fname).stem, source=fpath, patient=pid, y=y,
                                  meta={"side": side.lower(), "keywords": kws, "suspect": suspect_only,
                                        "other_findings": other}))
    info = {"n_images_total": len(files), "n_eyes_in_csv": n_eyes, "n_patients_total": len(patients),
            "suspect": suspect}
    if spec.task is Task.GLAUCOMA:
        info["negatives"] = negatives
    if spec.task is Task.GLAUCOMA:
        info.update({"glaucoma_suspected_only": n_suspect, "glaucoma_with_other_findings": n_with_other})

    records = finish_records(records, {r.source: files[Path(r.source).name][1] for r in records}, spec, info,
                             problems, dedupe=dedupe, check=check, on_bad_image=on_bad_image)
    return FundusDataset(str(root), "odir", spec, records, problems, info)
