"""The base of edgeretina's user-facing choices (``--device cpu``, ``--shift defocus``, variant names...)."""
from __future__ import annotations

from enum import Enum


class TextEnum(str, Enum):
    """A ``str`` enum that prints as its value: click choices, f-strings, file names and JSON all see
    ``"int8-guard"``, not ``"Variant.INT8_GUARD"``."""

    def __str__(self) -> str:
        return self.value
