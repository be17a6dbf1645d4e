"""Contact sheets for checking preprocessing by eye: the detected optic disc on each fundus and its ONH crop."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeretina.data.loading import load_image
from edgeretina.data.records import Record
from edgeretina.io import atomic_path
from edgeretina.preprocess import Pipeline, fov_crop, fov_crop_box


@dataclass(frozen=True)
class PreviewResult:
    path: str
    n: int
    discs_found: int
    #: one dict per sampled image: key, label, and the disc detection (input pixels, confidence, reason)
    images: tuple[dict, ...] = ()

    @property
    def flagged(self) -> list[dict]:
        return [d for d in self.images if not d["disc"]["found"]]

    def to_dict(self) -> dict:
        return {"path": self.path, "n": self.n, "discs_found": self.discs_found,
                "discs_flagged": self.n - self.discs_found, "images": list(self.images)}


def onh_sheet(records: list[Record], out: str | Path, n: int = 24, seed: int = 0, tile: int = 160,
              pipeline: Pipeline | None = None) -> PreviewResult:
    """Sample ``n`` records; for each, draw the FOV-cropped fundus with the detected disc beside its ONH
    crop (or, with ``pipeline``, beside the pipeline's uint8 output). Circle: green = found; orange =
    flagged, crop around the best (untrusted) guess; red = flagged fallback to the FOV centre; flagged tiles
    carry the reason. The locator is the pipeline's ``onh_crop`` (its parameters), else the default
    recipe's. Written atomically as PNG; 4 pairs per row."""
    rng = np.random.default_rng(seed)
    pick = [records[i] for i in sorted(rng.choice(len(records), min(n, len(records)), replace=False))]
    locator = pipeline if pipeline is not None and pipeline.uses_onh else Pipeline.default(onh=True)
    pairs, found, rows = [], 0, []
    for r in pick:
        raw = load_image(r)
        right, info = locator.apply_image_with_info(raw)
        d = info.disc  # in raw pixels
        if pipeline is not None and pipeline is not locator:
            right = pipeline.apply_image(raw)
        y0, _, x0, _ = fov_crop_box(raw)
        img = fov_crop(raw)
        found += d.found
        rows.append({"key": r.key, "y": r.y if isinstance(r.y, (int, float, str)) else str(r.y),
                     "disc": d.to_dict()})
        left = img.copy()
        thick = max(1, round(img.shape[0] / 150))
        colour = (0, 255, 0) if d.found else (255, 0, 0) if d.fallback else (255, 160, 0)
        cv2.circle(left, (round(d.x - x0), round(d.y - y0)), max(2, round(d.diameter / 2)), colour, thick)
        left = cv2.resize(left, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(left, f"{r.key} y={r.y}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        if not d.found:
            cv2.putText(left, f"FLAGGED: {d.reason}", (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
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
    return PreviewResult(str(out), len(pick), int(found), tuple(rows))
