"""Raw outputs of a .tflite on an emulated aarch64 CPU: the guest (:mod:`edgeretina.runtime.emulated`, the
same ``LiteRTModel`` code as the host) gets the preprocessed float32 inputs as an .npy and returns the
dequantized raw outputs and what it saw (machine, CPU features, LiteRT version)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.errors import DeviceError, ModelError

from .arm64_env import Arm64Env, run_guest
from .cpus import EmuCpu

SECONDS_PER_IMAGE = 30.0  # a generous timeout per image (float MobileNetV2-224: ~4 s emulated)


def emulated_raw(path: str | Path, x: np.ndarray, cpu: EmuCpu, env: Arm64Env, *, threads: int = 1,
                 xnnpack: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """(raw outputs (N, outputs) float64, guest facts) of the file at ``path`` on emulated ``cpu``."""
    path = Path(path)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    device = f"arm64-emu:{cpu.qemu_arg}"
    with tempfile.TemporaryDirectory(prefix="edgeretina-arm64-") as tmp:
        t = Path(tmp)
        np.save(t / "x.npy", x)
        args = ["-m", "edgeretina.runtime.emulated", str(path.resolve()), str(t / "x.npy"), str(t / "out.npy"),
                "--threads", str(threads), "--facts", str(t / "facts.json")]
        if not xnnpack:
            args.append("--no-xnnpack")
        try:
            r = run_guest(env, cpu.qemu_arg, args, timeout=120 + SECONDS_PER_IMAGE * len(x))
        except OSError as e:
            raise DeviceError(f"{device}: cannot start the emulator ({e})") from None
        if r.returncode != 0 or not (t / "out.npy").is_file():
            lines = [ln for ln in (r.stderr or r.stdout or "").strip().splitlines() if not ln.startswith("INFO:")]
            why = lines[-1] if lines else f"exit status {r.returncode}"
            raise ModelError(f"{path}: emulated aarch64 LiteRT failed on {device} ({why})")
        return np.load(t / "out.npy"), json.loads((t / "facts.json").read_text())
