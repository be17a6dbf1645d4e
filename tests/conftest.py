"""Shared fixtures. Real data comes from ``EDGERETINA_SHARED`` (default ``../shared``)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from edgeretina.paths import shared_dir  # noqa: E402


@pytest.fixture(scope="session")
def shared():
    d = shared_dir()
    if not (d / "data").is_dir():
        pytest.skip(f"real data not found at {d} (set EDGERETINA_SHARED)")
    return d
