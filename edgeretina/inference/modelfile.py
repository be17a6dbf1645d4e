"""A model file as predict and the bench see it: format, embedded config, variant name and size statistics.

Preprocessing, labels, task and threshold come from the model itself — the JSON metadata entry named
``edgeretina`` inside a ``.tflite`` (written by ``edgeretina export``), or ``config.json`` beside a
``.keras`` file. A model without it is refused (:class:`~edgeretina.errors.ModelError`), never guessed.

No TensorFlow import here: ``.tflite`` files are read by ``edgeretina.runtime`` (the flatbuffer schema shipped
by ai-edge-litert).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.converters.guard import GuardInfo
from edgeretina.errors import ModelError
from edgeretina.run import CONFIG_FILE, MODEL_FILE, RunConfig, resolve_model_path
from edgeretina.runtime import read_metadata
from edgeretina.runtime.flatbuffer import param_counts

from . import integrity


@dataclass(frozen=True)
class ModelStats:
    """Size facts of one model file.

    ``depth`` counts weight layers (convolutions, depthwise convolutions, dense/fully-connected), which is
    the same number for a Keras model and its .tflite (53 for MobileNetV2 with one dense head).
    ``params`` counts stored weights: for Keras every weight including BatchNorm statistics; for .tflite the
    constant tensors actually stored (BatchNorm is folded into the convolutions by the converter, so a
    float32 .tflite has fewer parameters than its Keras source). ``nonzero_params`` counts weights that are
    not zero (for quantized tensors: not equal to their zero point), which is what pruning reduces.
    """

    depth: int
    params: int
    nonzero_params: int
    size_bytes: int
    gzip_bytes: int


@dataclass(frozen=True)
class ModelFile:
    path: Path
    format: str  # "keras" | "tflite"
    config: RunConfig
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        """Variant name: from the metadata's variant info, else ``keras`` for a Keras model, else the stem."""
        export = self.meta.get("export")
        v = export.get("variant") if isinstance(export, dict) else None
        v = v or self.meta.get("variant")
        if isinstance(v, dict):
            v = v.get("name") or v.get("variant")
        if isinstance(v, str) and v:
            ts = export.get("target_sparsity") if isinstance(export, dict) else None
            if ts:  # pruned variants at several sparsities must not share a name in one report
                v = f"{v}@{round(100 * float(ts))}%"
            if isinstance(self.meta.get("calibration"), dict):  # a site-calibrated copy (edgeretina calibrate)
                v = f"{v}@{self.path.stem}"  # must not share its source's name in one report
            return v
        if self.format == "keras":
            return "keras"
        return self.path.stem

    @property
    def output(self) -> dict[str, Any]:
        out = self.meta.get("output") or self.config.output or {}
        return out if isinstance(out, dict) else {}

    @property
    def outputs_logits(self) -> bool:
        return str(self.output.get("kind", "probabilities")).lower() == "logits"

    @property
    def activation(self) -> str:
        return str(self.output.get("activation") or self.config.spec.activation)

    @property
    def is_float(self) -> bool:
        """True for the float reference candidates: a Keras model or a float32 .tflite."""
        return self.format == "keras" or self.name in ("float32", "fp32", "float")

    @cached_property
    def file_bytes(self) -> bytes:
        return self.path.read_bytes()

    @cached_property
    def guard(self):
        """An int8-guard file's :class:`~edgeretina.converters.guard.GuardInfo` (None for other models)."""
        if self.format != "tflite":
            return None

        return GuardInfo.from_meta(self.meta, str(self.path))

    @property
    def companions(self) -> list[Path]:
        """Other files this model needs at run time (an int8-guard file's fp16 fallback): counted in its size."""
        return [self.guard.fallback_path(self.path)] if self.guard is not None else []

    def size_bytes(self) -> int:
        return self.path.stat().st_size + sum(p.stat().st_size for p in self.companions)

    def gzip_bytes(self) -> int:
        return sum(len(gzip.compress(b, compresslevel=9, mtime=0))
                   for b in [self.file_bytes, *(p.read_bytes() for p in self.companions)])

    def stats(self, keras_model=None) -> ModelStats:
        """Depth, parameters and sizes. A Keras model's counts need the loaded model (pass it)."""
        if self.format == "tflite":
            depth, params, nonzero = tflite_param_counts(self.file_bytes)
        else:
            if keras_model is None:
                raise ValueError("stats of a Keras model need the loaded model")
            depth, params, nonzero = keras_param_counts(keras_model)
        return ModelStats(depth, params, nonzero, self.size_bytes(), self.gzip_bytes())


def open_model(path: str | Path) -> ModelFile:
    """A ``.tflite`` with edgeretina metadata, a ``.keras`` with ``config.json`` beside it, or a run dir."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file or directory")
    if p.is_dir() or p.suffix == ".keras":
        model, cfg = resolve_model_path(p)

        integrity.check_metadata(cfg.to_dict(), cfg, None, None, f"{model.parent / CONFIG_FILE}")
        return ModelFile(model, "keras", cfg, cfg.to_dict())
    if p.suffix != ".tflite":
        raise ModelError(f"{p}: not a model file (expected .tflite, .keras or a run dir)")

    if integrity.verifying_manifest():  # first: a changed file is refused as such, whatever it now holds
        integrity.check_manifest(p)
    meta = read_tflite_metadata(p)
    cfg = RunConfig.from_dict(meta, source=f"{p} metadata")
    _check_tflite(p, meta, cfg)
    return ModelFile(p, "tflite", cfg, meta)


def _check_tflite(p: Path, meta: dict, cfg: RunConfig) -> None:
    """Before any image is scored, after the manifest check in :func:`open_model`: the metadata fits the graph
    (``edgeretina/inference/integrity.py``)."""
    ins, outs = integrity.tflite_io_shapes(p.read_bytes())
    integrity.check_metadata(meta, cfg, outs, ins, f"{p} metadata")


def expand_models(paths) -> list[Path]:
    """Model paths from files and directories: a directory gives its run model (``model.keras`` with
    ``config.json``) and every ``*.tflite``/``*.keras`` in it. Order is kept, duplicates dropped."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ModelError(f"{p}: no such file or directory")
        if p.is_dir():
            found = sorted(p.glob("*.keras")) + sorted(p.glob("*.tflite"))
            if not found:
                raise ModelError(f"{p}: no .keras or .tflite models in this directory")
            for f in found:
                if f.suffix == ".keras" and not (f.parent / CONFIG_FILE).is_file() and f.name != MODEL_FILE:
                    continue
                out.append(f)
        else:
            out.append(p)
    seen, uniq = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


# --------------------------------------------------------------------------------------------- .tflite


def read_tflite_metadata(path: str | Path) -> dict:
    """The ``edgeretina`` JSON metadata dict of a .tflite (``edgeretina.runtime.metadata``).

    ``ModelError`` when the file is not a .tflite or carries no such metadata.
    """
    try:
        meta = read_metadata(path)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - an unreadable file is an unusable model
        raise ModelError(f"{path}: cannot read its metadata ({e})") from None
    if not isinstance(meta, dict) or not meta:
        raise ModelError(f"{path}: its edgeretina metadata is empty; a model without its preprocessing and "
                         f"labels is refused (export it with 'edgeretina export')")
    return meta


def tflite_param_counts(data: bytes) -> tuple[int, int, int]:
    """(depth, params, nonzero params) of a .tflite flatbuffer (main subgraph): ``runtime.flatbuffer``."""
    return param_counts(data)


# --------------------------------------------------------------------------------------------- Keras


def _iter_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _iter_layers(layer)
        else:
            yield layer


def keras_param_counts(model) -> tuple[int, int, int]:
    """(depth, params, nonzero params) of a loaded Keras model."""
    depth = 0
    for layer in _iter_layers(model):
        cls = type(layer).__name__
        if ("Conv" in cls or cls == "Dense") and layer.weights:
            depth += 1
    params = int(model.count_params())
    nonzero = int(sum(np.count_nonzero(w) for w in model.get_weights()))
    return depth, params, nonzero
