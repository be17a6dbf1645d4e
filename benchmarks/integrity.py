"""Re-export: the checks a model file passes before any image is scored live in
:mod:`edgeretina.inference.integrity` (the inference layer, which ``predict`` and the bench share)."""
from __future__ import annotations

from edgeretina.inference.integrity import (MANIFEST, OVERRIDE, check_manifest, check_metadata, check_threshold,
                                            manifest_verification, read_manifest, tflite_io_shapes,
                                            verifying_manifest)

__all__ = ["MANIFEST", "OVERRIDE", "check_manifest", "check_metadata", "check_threshold", "manifest_verification",
           "read_manifest", "tflite_io_shapes", "verifying_manifest"]
