"""The edgeretina JSON in a .tflite's metadata table (name ``edgeretina``): embed and read back.

The payload is the run's ``config.json`` (RunConfig dict, schema ``edgeretina.run/1``) with ``output``
replaced by what the *exported graph* outputs, plus an ``export`` block::

    {..."task", "labels", "preprocessing", "threshold", ... (config.json),
     "output": {"kind": "logits"|"probabilities", "activation": "softmax"|"sigmoid"},
     "export": {"schema": "edgeretina.tflite/1", "variant": "int8", "source_sha256": "...",
                "source_file": "model.keras", "input": {"shape", "dtype", "scale", "zero_point"},
                "outputs": {...same for the output tensor}, "sparsity": 0.5, ...,
                "borderline_band": {"band", "method", "quantile", "n_images", "source", ...}},
     "borderline_band": 0.34}

so ``RunConfig.from_dict(read_metadata(path))`` gives task, labels, preprocessing and threshold back.

``borderline_band`` (logits; absent with ``export --borderline-band off``) is what ``predict`` and the
Android core flag a decision within ±band of the threshold by (converters/band.py measures it);
``calibrate`` keeps it when it rewrites the threshold.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeretina.errors import ModelError
from edgeretina.io import json_default

from . import flatbuffer

NAME = "edgeretina"
SCHEMA = "edgeretina.tflite/1"


def embed_metadata(tflite: bytes, payload: dict[str, Any], name: str = NAME) -> bytes:
    """Return ``tflite`` with ``payload`` (JSON) in its metadata table; an existing entry of that name is replaced."""
    data = json.dumps(payload, sort_keys=False, default=json_default).encode("utf-8")
    return flatbuffer.set_metadata(tflite, name, data)


def metadata_from_bytes(tflite: bytes, source: str = "<bytes>", name: str = NAME) -> dict[str, Any]:
    """The JSON metadata entry ``name`` of .tflite bytes; ``ModelError`` when unreadable or absent."""
    try:
        raw = flatbuffer.get_metadata(tflite, name)
        if raw is not None:
            return json.loads(raw.decode("utf-8"))
    except (ValueError, IndexError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ModelError(f"{source}: not a readable .tflite with edgeretina metadata ({e})") from None
    raise ModelError(f"{source}: no '{name}' metadata in this .tflite (export it with 'edgeretina export'; "
                     "a model without its preprocessing/labels is refused)")


def read_metadata(path: str | Path, name: str = NAME) -> dict[str, Any]:
    """The edgeretina JSON embedded in a .tflite. ``ModelError`` if the file is missing, not a .tflite,
    or carries no such metadata."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such .tflite file")
    return metadata_from_bytes(p.read_bytes(), source=str(p), name=name)
