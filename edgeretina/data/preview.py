"""Contact sheets for checking preprocessing by eye: the detected optic disc on each fundus and its ONH crop."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeretina.data.loading import load_image
from edgeretina.data.records import Record
from edgeretina.io import atomic_path
from edgeretina.preprocess import Pipeline, fov_crop, locate_disc, onh_crop


@dataclass(frozen=True)
class PreviewResult:
    path: str
    n: int
    discs_found: int

    def to_dict(self) -> dict:
        return {"path": self.path, "n": self.n, "discs_found": self.discs_found}


def onh_sheet(records: list[Record], out: str | Path, n: int = 24, seed: int = 0, tile: int = 160,
              pipeline: Pipeline | None = None) -> PreviewResult:
    """Sample ``n`` records; for each, draw the FOV-cropped fundus with the detected disc (green circle;
    red = fallback to the FOV centre) beside its ONH crop (or, with ``pipeline``, beside the pipeline's
    uint8 output). Written atomically as PNG; 4 pairs per row."""
    rng = np.random.default_rng(seed)
    pick = [records[i] for i in sorted(rng.choice(len(records), min(n, len(records)), replace=False))]
    pairs, found = [], 0
    for r in pick:
        img = fov_crop(load_image(r))
        d = locate_disc(img)
        found += d.found
        right = pipeline.apply_image(img) if pipeline is not None else onh_crop(img)
        left = img.copy()
        thick = max(1, round(img.shape[0] / 150))
        cv2.circle(left, (round(d.x), round(d.y)), max(2, round(d.diameter / 2)),
                   (0, 255, 0) if d.found else (255, 0, 0), thick)
        left = cv2.resize(left, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(left, f"{r.key} y={r.y}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        right = cv2.resize(right, (tile, tile), interpolation=cv2.INTER_AREA if right.shape[0] >= tile
                           else cv2.INTER_LINEAR)
        pairs.append(np.hstack([left, right]))
    per_row = 4
    while len(pairs) % per_row:
        pairs.append(np.zeros_like(pairs[0]))
    sheet = np.vstack([np.hstack(pairs[i:i + per_row]) for i in range(0, len(pairs), per_row)])
    out = Path(out)
    ok, buf = cv2.imencode(".png", sheet[:, :, ::-1])
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.tobytes())
    return PreviewResult(str(out), len(pick), int(found))
