"""Re-export: the ``cpu`` device's .tflite runner is :class:`edgeretina.inference.litert.LiteRTRunner` (the
inference layer, which ``predict`` and the bench share)."""
from __future__ import annotations

from edgeretina.inference.litert import LiteRTRunner

__all__ = ["LiteRTRunner"]
