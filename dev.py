#!/usr/bin/env python3
"""One-command set-up and run, for a fresh clone with only Python 3 (3.10–3.12) and pip.

    python3 dev.py demo [demo options]   # create .venv, install edgeretina, run the embedded demo
    python3 dev.py test [pytest options] # create .venv, install edgeretina[test], run the test suite
                                         # (pytest-xdist: min(4, CPU cores) workers, one test file per
                                         # worker at a time; EDGERETINA_TEST_WORKERS=0 runs it serially)
    python3 dev.py bench [pytest options]# run the pytest-benchmark suites in benchmarks/suites

The virtual environment lives in ./.venv (override with EDGERETINA_VENV) and is reinstalled only when
pyproject.toml changes. If the real data folder (EDGERETINA_SHARED, default ../shared) exists, its ImageNet
weights are copied into Keras' cache so ``weights="imagenet"`` works offline; tests that need real data are
skipped when it is absent.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("EDGERETINA_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _sh(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def ensure_env() -> None:
    if not PY.exists():
        _sh([sys.executable, "-m", "venv", VENV])
    stamp = VENV / ".edgeretina-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != want:
        _sh([PY, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        _sh([PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"])
        stamp.write_text(want)
    env_shared = os.environ.setdefault("EDGERETINA_SHARED", str(ROOT.parent / "shared"))
    if Path(env_shared, "weights").is_dir():
        subprocess.run([str(PY), "-c", "from edgeretina.paths import seed_keras_cache as s; s()"], check=True)


def test_workers() -> list[str]:
    """pytest-xdist options: ``min(4, cores)`` worker processes (2 on the 2-core CI: the suite's TensorFlow
    conversions and Keras fits are mostly single-threaded, so two files at a time use both cores), each taking
    whole test files (``--dist loadfile``: a file's expensive module fixtures are built once). More workers
    would multiply the session fixtures' training and TensorFlow's memory. ``EDGERETINA_TEST_WORKERS``
    overrides the count (0: no xdist, one process)."""
    raw = os.environ.get("EDGERETINA_TEST_WORKERS", str(min(4, os.cpu_count() or 1)))
    if not raw.strip().isdigit():
        sys.exit(f"error: EDGERETINA_TEST_WORKERS must be a whole number of workers (0: one process), got {raw!r}")
    n = int(raw)
    return ["-n", str(n), "--dist", "loadfile"] if n > 1 else []


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "bench"}:
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    ensure_env()
    if cmd == "demo":
        args = [BIN / "edgeretina", "demo", *(rest or ["--out", ROOT / "demo_out"])]
    elif cmd == "test":
        args = [PY, "-m", "pytest", "-q", "tests", *test_workers(), *rest]
    else:
        args = [PY, "-m", "pytest", "-q", "benchmarks/suites", "--benchmark-only", *rest]
    print("+", " ".join(str(a) for a in args), flush=True)
    return subprocess.run([str(a) for a in args], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
