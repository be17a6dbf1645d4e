"""One ``--int8-guard --quantizer aeq`` export of the ``tiny_run`` model (fp16 + aeq int8 + int8-guard),
shared by tests/test_aeq.py and tests/test_guard.py (memoised per process)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_CACHE: dict[str, tuple] = {}


def guard_export(run: str | Path):
    """(ExportReport, folder) of ``run`` exported with variants int8-guard (+ fp16, int8) by the aeq backend."""
    from edgeretina.converters import export_model

    key = str(Path(run).resolve())
    if key not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="edgeretina-guard-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        out = root / "export"
        rep = export_model(run, ["int8-guard"], out, calib_n=48, verify_n=32, quantizer="aeq")
        _CACHE[key] = (rep, out)
    return _CACHE[key]
