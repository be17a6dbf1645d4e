"""Checks a model file must pass before any image is scored with it (``predict``, ``bench``).

- :func:`check_manifest` — a ``.tflite`` inside an export folder must match that folder's ``manifest.json``
  (listed by name, same sha256): a tampered, swapped or half-copied file is refused.
- :func:`check_metadata` — the embedded metadata must fit the graph: one output whose last dimension is the
  number of labels, a known output kind / activation, a threshold that is a finite number (or one per label)
  in [0, 1], known preprocessing steps with bounded sizes, an input as large as the preprocessing makes.

Both take parsed data (manifest dict / metadata dict + tensor shapes), so they do not depend on how the file
was opened. Every failure is a one-line :class:`~edgeretina.errors.ModelError`.
"""
from __future__ import annotations

import contextlib
import json
import math
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Sequence

from edgeretina.errors import EdgeRetinaError, ModelError
from edgeretina.preprocess import Pipeline
from edgeretina.run import file_sha256
from edgeretina.runtime.flatbuffer import io_shapes

MANIFEST = "manifest.json"
OVERRIDE = "--no-verify-manifest"

_VERIFY_MANIFEST: ContextVar[bool] = ContextVar("verify_manifest", default=True)


@contextlib.contextmanager
def manifest_verification(enabled: bool) -> Iterator[None]:
    """Inside the block, models opened with ``modelfile.open_model`` are (not) checked against manifests."""
    token = _VERIFY_MANIFEST.set(bool(enabled))
    try:
        yield
    finally:
        _VERIFY_MANIFEST.reset(token)


def verifying_manifest() -> bool:
    return _VERIFY_MANIFEST.get()


def read_manifest(folder: Path, remedy: str | None = None) -> dict | None:
    """The folder's manifest.json (None when there is none); an unreadable one, or one that is not an export
    manifest, is refused (``ModelError`` ending in ``remedy``, by default: re-export or pass the override)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable manifest ({e}); "
                         f"{remedy or f're-export the folder or pass {OVERRIDE}'}") from None
    if not isinstance(m, dict) or not isinstance(m.get("results"), list):
        raise ModelError(f"{path}: not an edgeretina export manifest (no 'results' list); "
                         f"{remedy or f'pass {OVERRIDE}'}")
    return m


def check_manifest(path: str | Path, manifest: dict | None = None, sha256: str | None = None) -> dict | None:
    """Refuse ``path`` when its folder has a manifest that does not list it or lists another sha256.

    Returns the manifest entry (None when the folder has no manifest). ``sha256``: the file's hash if known."""
    p = Path(path)
    m = read_manifest(p.parent) if manifest is None else manifest
    if m is None:
        return None
    entries = [r for r in m["results"] if isinstance(r, dict) and Path(str(r.get("path", ""))).name == p.name]
    if not entries:
        raise ModelError(f"{p}: not listed in {p.parent / MANIFEST} (a file added to the export folder after "
                         f"the export?); pass {OVERRIDE} to use it anyway")
    want = entries[-1].get("sha256")
    if sha256 is None:
        sha256 = file_sha256(p)
    if sha256 != want:
        raise ModelError(f"{p}: sha256 {sha256[:12]}… does not match {MANIFEST} ({str(want)[:12]}…): the file "
                         f"changed after the export; re-export it or pass {OVERRIDE}")
    return entries[-1]


def _finite_unit(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0.0 <= x <= 1.0


def check_threshold(threshold: Any, labels: Sequence[str], source: str) -> None:
    """A recorded threshold must be a finite number in [0, 1] (or one per label, as a list or a dict)."""
    if threshold is None:
        return
    if isinstance(threshold, (list, tuple)):
        ok = len(threshold) == len(labels) and all(_finite_unit(t) for t in threshold)
    elif isinstance(threshold, dict):
        ok = set(threshold) <= set(labels) and all(_finite_unit(t) for t in threshold.values())
    else:
        ok = _finite_unit(threshold)
    if not ok:
        raise ModelError(f"{source}: threshold {json.dumps(threshold)[:80]} is not a number in [0, 1] "
                         f"(or one per label for {len(labels)} labels); the model's decisions are undefined")


def check_metadata(meta: dict, cfg, output_shapes: Sequence[Sequence[int]] | None,
                   input_shapes: Sequence[Sequence[int]] | None, source: str) -> None:
    """Refuse metadata that does not fit the graph (see the module doc). ``cfg``: the parsed RunConfig."""
    try:
        spec = cfg.spec
    except EdgeRetinaError as e:
        raise ModelError(f"{source}: {e}") from None
    labels = list(cfg.labels)
    if len(labels) != spec.n_outputs:
        raise ModelError(f"{source}: {len(labels)} labels {labels} but task '{spec.task.value}' has "
                         f"{spec.n_outputs} ({list(spec.labels)})")
    out = meta.get("output") if isinstance(meta.get("output"), dict) else (cfg.output or {})
    kind, act = str(out.get("kind", "probabilities")), out.get("activation")
    if kind not in ("probabilities", "logits") or act not in (None, "softmax", "sigmoid"):
        raise ModelError(f"{source}: unknown output {json.dumps(out)[:80]} (kind probabilities|logits, "
                         "activation softmax|sigmoid)")
    check_threshold(cfg.threshold, labels, source)
    pipeline = _pipeline(cfg.preprocessing, source)
    if output_shapes is not None:
        if len(output_shapes) != 1:
            raise ModelError(f"{source}: the graph has {len(output_shapes)} outputs; edgeretina models have one")
        shp = list(output_shapes[0])
        if not shp or shp[-1] != len(labels):
            raise ModelError(f"{source}: the graph outputs shape {shp} but the metadata names {len(labels)} "
                             f"labels for task '{spec.task.value}' ({', '.join(labels)}): the metadata does "
                             "not belong to this model")
    if input_shapes and pipeline.input_size is not None:
        shp = list(input_shapes[0])
        hw = list(pipeline.input_shape)
        if len(shp) == 4 and shp[1:3] != hw:  # (image inputs only)
            raise ModelError(f"{source}: the graph takes input {shp} but the preprocessing makes "
                             f"{hw[0]}×{hw[1]} images")


def _pipeline(preprocessing, source: str):
    try:
        return Pipeline.from_json(preprocessing)
    except EdgeRetinaError as e:
        raise ModelError(f"{source}: unusable preprocessing ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{source}: unusable preprocessing ({type(e).__name__}: {e})") from None


def tflite_io_shapes(data: bytes) -> tuple[list[list[int]], list[list[int]]]:
    """(input shapes, output shapes) of a .tflite's main subgraph (read by the runtime layer)."""
    return io_shapes(data)
