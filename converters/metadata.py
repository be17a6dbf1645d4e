"""The edgeretina JSON metadata of a .tflite (name ``edgeretina``): see :mod:`edgeretina.runtime.metadata`,
which reads and writes it; this module keeps the converter-side names."""
from __future__ import annotations

from edgeretina.runtime.metadata import NAME, SCHEMA, embed_metadata, metadata_from_bytes, read_metadata

__all__ = ["NAME", "SCHEMA", "embed_metadata", "metadata_from_bytes", "read_metadata"]
