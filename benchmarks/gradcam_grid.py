"""Grad-CAM examples per label of a multi-label run (issue 15, ODIR 8-label): one PNG grid.

    python -m edgeretina.benchmarks.gradcam_grid RUN_DIR --data ../shared/data/odir --out grid.png

For each label, the test split's positives (split as the run's training did: patient-level) are scored by the
float Keras model, in key order, up to ``candidates`` per label; the positive it scores highest for that label
is shown, the photo as the model sees it beside its Grad-CAM overlay (``edgeretina.models.gradcam``: for a
sigmoid head the class score is the label's logit). Each tile is captioned with the label, the image key, the
label's probability and the model's threshold for it. The choice is the model's most confident true positive
(what it attends to when it is surest), not a random draw; a label without test positives gets an empty tile.
The real-data command writes it for ``odir_multilabel`` (``<docs>/<name>_gradcam.png``).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeretina.data import load_arrays, open_dataset
from edgeretina.data.loading import load_image
from edgeretina.errors import EdgeRetinaError, ModelError
from edgeretina.io import atomic_path
from edgeretina.models.gradcam import gradcam, overlay
from edgeretina.preprocess import Pipeline
from edgeretina.run import resolve_model_path
from edgeretina.runtime.decisions import screening_threshold
from edgeretina.tasks import TaskKind

TILE = 224


@dataclass(frozen=True)
class Example:
    """The tile of one label: which test image, its probability for the label and the label's threshold."""

    label: str
    key: str | None
    probability: float | None
    threshold: float | None
    n_positives: int

    def to_dict(self) -> dict:
        return {"label": self.label, "key": self.key, "probability": self.probability,
                "threshold": self.threshold, "n_test_positives": self.n_positives}


def _caption(tile: np.ndarray, lines: list[str]) -> np.ndarray:
    bar = np.full((18 * len(lines) + 6, tile.shape[1], 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(bar, text, (4, 16 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def _tile(model, pipe: Pipeline, labels, j: int, record, ex: Example) -> np.ndarray:
    """Photo | overlay (each TILE px) with a two-line caption; grey when the label has no test positive."""
    if record is None:
        body = np.full((TILE, 2 * TILE, 3), 200, np.uint8)
        return _caption(body, [f"{ex.label}: no test positive", ""])
    img = pipe.apply_image(load_image(record))  # the photo as the model sees it (uint8, before scaling)
    cam = gradcam(model, pipe.apply_float(img), labels, j)
    img = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA if img.shape[0] >= TILE else cv2.INTER_CUBIC)
    body = np.concatenate([img, overlay(img, cam.heatmap, 0.4)], axis=1)
    return _caption(body, [f"{ex.label}: {ex.key}", f"p = {ex.probability:.3f} (threshold {ex.threshold:.3f})"])


def pick_examples(model, cfg, records, pipe: Pipeline, candidates: int) -> list[tuple[Example, object]]:
    """Per label: the most confidently scored test positive among the first ``candidates`` (key order)."""
    labels = list(cfg.labels)
    thr = screening_threshold(cfg.spec, cfg.threshold)
    thr = thr if isinstance(thr, list) else [float(thr)] * len(labels)
    out = []
    for j, lb in enumerate(labels):
        pos = sorted((r for r in records if float(r.y[j]) > 0.5), key=lambda r: r.key)
        if not pos:
            out.append((Example(lb, None, None, thr[j], 0), None))
            continue
        X, _ = load_arrays(pos[:candidates], pipe)
        p = model.predict(X, batch_size=32, verbose=0)[:, j]
        i = int(np.argmax(p))
        out.append((Example(lb, pos[i].key, float(p[i]), float(thr[j]), len(pos)), pos[i]))
    return out


def gradcam_grid(run_dir: str | Path, data: str | Path, out: str | Path, candidates: int = 24,
                 columns: int = 2) -> list[Example]:
    """Write the per-label Grad-CAM grid PNG of a multi-label run; returns the examples shown."""
    from edgeretina._keras import keras

    path, cfg = resolve_model_path(run_dir)
    if cfg.spec.kind is not TaskKind.MULTILABEL:
        raise ModelError(f"{run_dir}: not a multi-label run (task {cfg.task})")
    ds = open_dataset(data, cfg.task)
    records = list(ds.split(**cfg.split_args()).get("test") or [])
    pipe = Pipeline.from_json(cfg.preprocessing)
    model = keras.models.load_model(path, compile=False)
    picked = pick_examples(model, cfg, records, pipe, candidates)
    tiles = [_tile(model, pipe, list(cfg.labels), j, rec, ex) for j, (ex, rec) in enumerate(picked)]
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    grid = np.concatenate(rows, axis=0)
    ok, buf = cv2.imencode(".png", grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])  # docs stay under 1 MB
    if not ok:
        raise ModelError(f"{out}: could not encode PNG")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.tobytes())
    return [ex for ex, _ in picked]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run dir (model.keras + config.json) of a multi-label model")
    ap.add_argument("--data", required=True, help="the dataset the run was trained on")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--candidates", type=int, default=24, help="test positives scored per label")
    a = ap.parse_args(argv)
    try:
        shown = gradcam_grid(a.run, a.data, a.out, a.candidates)
    except EdgeRetinaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for ex in shown:
        print(ex.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
