"""Helpers shared by the runners, now in :mod:`edgeretina.runtime` (kept importable from here)."""
from __future__ import annotations

from edgeretina.runtime import time_batch1, to_probabilities

__all__ = ["time_batch1", "to_probabilities"]
