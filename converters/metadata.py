"""Embed / read the edgeretina JSON in a .tflite flatbuffer's metadata table (name ``edgeretina``).

The payload is the run's ``config.json`` (RunConfig dict, schema ``edgeretina.run/1``) with ``output``
replaced by what the *exported graph* outputs, plus an ``export`` block::

    {..."task", "labels", "preprocessing", "threshold", ... (config.json),
     "output": {"kind": "logits"|"probabilities", "activation": "softmax"|"sigmoid"},
     "export": {"schema": "edgeretina.tflite/1", "variant": "int8", "source_sha256": "...",
                "source_file": "model.keras", "input": {"shape", "dtype", "scale", "zero_point"},
                "outputs": {...same for the output tensor}, "sparsity": 0.5, ...}}

so ``RunConfig.from_dict(read_metadata(path))`` gives task, labels, preprocessing and threshold back.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.errors import ModelError

NAME = "edgeretina"
SCHEMA = "edgeretina.tflite/1"


def embed_metadata(tflite: bytes, payload: dict[str, Any], name: str = NAME) -> bytes:
    """Return ``tflite`` with ``payload`` (JSON) in its metadata table; an existing entry of that name is replaced."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fu

    from edgeretina.io import _json_default

    data = json.dumps(payload, sort_keys=False, default=_json_default).encode("utf-8")
    m = fu.read_model_from_bytearray(bytearray(tflite))
    old = [x for x in (m.metadata or []) if _name(x) == name]
    if old:  # replace the entry's data in its own buffer: re-embedding leaves no orphaned buffer behind
        m.buffers[old[0].buffer].data = np.frombuffer(data, dtype=np.uint8)
        return bytes(fu.convert_object_to_bytearray(m))
    buf = schema.BufferT()
    buf.data = np.frombuffer(data, dtype=np.uint8)
    m.buffers.append(buf)
    md = schema.MetadataT()
    md.name = name
    md.buffer = len(m.buffers) - 1
    m.metadata = list(m.metadata or []) + [md]
    return bytes(fu.convert_object_to_bytearray(m))


def _name(md) -> str:
    n = md.name
    return n.decode("utf-8") if isinstance(n, bytes) else str(n)


def metadata_from_bytes(tflite: bytes, source: str = "<bytes>", name: str = NAME) -> dict[str, Any]:
    from ai_edge_litert import schema_py_generated as schema

    try:
        if len(tflite) < 8 or tflite[4:8] != b"TFL3":
            raise ValueError("no TFL3 identifier")
        model = schema.Model.GetRootAs(tflite, 0)
        for i in range(model.MetadataLength()):
            md = model.Metadata(i)
            if (md.Name() or b"").decode("utf-8") != name:
                continue
            b = model.Buffers(md.Buffer())
            if b.Offset():  # large models keep buffers after the flatbuffer
                raw = bytes(tflite[b.Offset(): b.Offset() + b.Size()])
            else:
                raw = b.DataAsNumpy().tobytes() if b.DataLength() else b""
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
