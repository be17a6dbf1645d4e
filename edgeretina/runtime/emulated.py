"""The guest side of ``--device arm64-emu``: runs inside qemu-user on the arm64 CPython of
``edgeretina/emulation/arm64_env.py`` with only numpy, ai-edge-litert and this package's runtime layer importable.

``python -m edgeretina.runtime.emulated MODEL X.npy OUT.npy [--threads N] [--no-xnnpack] [--facts F.json]``
scores every image of ``X.npy`` (float32 (N, H, W, C), the model's preprocessed inputs) with
:class:`~edgeretina.runtime.LiteRTModel` — the same code, quantization included, as the host — and writes
the dequantized raw outputs (N, outputs) float64 to ``OUT.npy``; ``--facts`` writes what the guest saw (the
machine, the CPU features LiteRT's kernels select from, the LiteRT version).

:func:`hwcap_features` decodes the auxiliary vector (``AT_HWCAP``/``AT_HWCAP2``): that, not /proc/cpuinfo, is
what XNNPACK's cpuinfo reads on Linux/aarch64, and what qemu sets from ``-cpu``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

import numpy as np

from .interpreter import LiteRTModel

# Linux arm64 HWCAP / HWCAP2 bits (arch/arm64/include/uapi/asm/hwcap.h) of the features the kernels use
HWCAP = {"fp": 0, "asimd": 1, "aes": 3, "pmull": 4, "sha2": 6, "crc32": 7, "atomics": 8, "fphp": 9,
         "asimdhp": 10, "asimdrdm": 12, "asimddp": 20, "sve": 22, "asimdfhm": 23}
HWCAP2 = {"sve2": 1, "i8mm": 13, "bf16": 14, "sme": 23, "sme_i16i64": 24, "sme_f64f64": 25,
          "sme_i8i32": 26, "sme_f16f32": 27, "sme_b16f32": 28, "sme_f32f32": 29, "sme_fa64": 30,
          "sme2": 37}
AT_HWCAP, AT_HWCAP2 = 16, 26


def decode_hwcaps(hwcap: int, hwcap2: int) -> list[str]:
    """Feature names set in the two auxiliary-vector words (the /proc/cpuinfo ``Features`` names)."""
    return ([n for n, b in HWCAP.items() if hwcap >> b & 1] + [n for n, b in HWCAP2.items() if hwcap2 >> b & 1])


def hwcap_features() -> list[str] | None:
    """This process's arm64 CPU features from ``getauxval``; None off aarch64 Linux."""
    if platform.machine() not in ("aarch64", "arm64") or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    return decode_hwcaps(int(libc.getauxval(AT_HWCAP)), int(libc.getauxval(AT_HWCAP2)))


def guest_facts(threads: int | None, xnnpack: bool) -> dict:
    try:
        litert = version("ai-edge-litert")
    except PackageNotFoundError:
        litert = None
    return {"machine": platform.machine(), "isa": hwcap_features(), "litert": litert, "numpy": np.__version__,
            "python": platform.python_version(), "threads": threads,
            "delegate": "xnnpack" if xnnpack else "none (built-in kernels)"}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeretina.runtime.emulated")
    ap.add_argument("model")
    ap.add_argument("inputs")
    ap.add_argument("outputs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-xnnpack", action="store_true")
    ap.add_argument("--facts", default=None)
    a = ap.parse_args(argv)
    m = LiteRTModel(a.model, threads=a.threads, xnnpack=not a.no_xnnpack)
    raw = m.raw(np.load(a.inputs))
    np.save(a.outputs, raw)
    if a.facts:
        with open(a.facts, "w") as f:
            json.dump(guest_facts(a.threads, not a.no_xnnpack), f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
