"""Small helpers shared by the CSV-based adapters: read a CSV with one-line errors, list an image folder."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from edgeretina.errors import DataError
from edgeretina.preprocess import IMAGE_EXTENSIONS


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) with header cells stripped; BOM and UTF-8/Latin-1 tolerated. Row numbers in errors
    are 1-based file lines (the header is line 1)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read CSV ({e.strerror or e})") from None
    if not raw.strip():
        raise DataError(f"{path}: empty CSV file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise DataError(f"{path}: CSV has no header row")
        rows = []
        for line in reader:
            if not any(c.strip() for c in line):
                continue
            rows.append({h: (line[i].strip() if i < len(line) else "") for i, h in enumerate(header)})
    except csv.Error as e:
        raise DataError(f"{path}: not a valid CSV ({e})") from None
    return header, rows


def require_columns(path: Path, header: list[str], needed: list[str]) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        found = ", ".join(header[:12]) + (" ..." if len(header) > 12 else "")
        raise DataError(f"{path}: missing column(s) {', '.join(repr(m) for m in missing)} (found: {found})")


def list_images(folder: Path) -> dict[str, tuple[str, int]]:
    """{file name: (path, size)} of the image files in ``folder`` (one ``os.scandir``, no decoding)."""
    out: dict[str, tuple[str, int]] = {}
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file():
                    out[e.name] = (e.path, e.stat().st_size)
    except OSError as e:
        raise DataError(f"{folder}: cannot list images ({e.strerror or e})") from None
    return out
