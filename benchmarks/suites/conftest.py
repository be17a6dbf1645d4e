"""The suites reuse the test suite's model helpers (tests/helpers/, not part of the installed package)."""
from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parents[2] / "tests")
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)
