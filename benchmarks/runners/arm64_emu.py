"""The ``arm64-emu[:CPU]`` device: a .tflite scored by aarch64 LiteRT under qemu-user (issue 17).

The guest (:func:`edgeretina.emulation.guest.emulated_raw`) runs the same ``LiteRTModel`` code as the host on
the same preprocessed float32 inputs and returns the raw outputs; ``predict`` also scores the file on this x86
machine and keeps the comparison (:func:`edgeretina.emulation.parity.compare_outputs`) for the row's
``device_info["vs_x86"]``. Emulated time says nothing about a phone: ``time`` measures nothing
(:data:`NOT_TIMED`).

CPU: a qemu ``-cpu`` model with optional properties (``max,sme=off``). An SME CPU on a qemu that mis-emulates
SME is refused with the reason (:func:`edgeretina.emulation.cpus.check_sme`, docs/arm.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.emulation.arm64_env import Arm64Env, load_env
from edgeretina.emulation.cpus import EmuCpu, check_sme
from edgeretina.emulation.guest import emulated_raw
from edgeretina.emulation.parity import LATENCY_NOTE, compare_outputs
from edgeretina.env import isa_flags
from edgeretina.runtime import LiteRTModel, to_probabilities


class Arm64EmuRunner:
    """One .tflite on emulated aarch64 (see the module doc)."""

    supports_predict = True

    def __init__(self, path: str | Path, *, cpu: EmuCpu, logits: bool = False, activation: str = "softmax",
                 spec=None, threshold=None, env: Arm64Env | None = None, xnnpack: bool = True):
        self.path = Path(path)
        self.cpu = cpu
        self.env = env or load_env()
        check_sme(cpu, self.env.qemu_version)
        self.device = f"arm64-emu:{cpu.qemu_arg}"
        self.threads = 1  # one emulated thread: deterministic, and emulation is slow either way
        self.logits, self.activation, self.spec, self.threshold = logits, activation, spec, threshold
        self.xnnpack = xnnpack
        self.guest: dict[str, Any] = {}
        self.parity = None

    @classmethod
    def from_model(cls, model, cpu: EmuCpu, env: Arm64Env | None = None) -> "Arm64EmuRunner":
        """From a :class:`~edgeretina.inference.modelfile.ModelFile`."""
        return cls(model.path, cpu=cpu, logits=model.outputs_logits, activation=model.activation,
                   spec=model.config.spec, threshold=model.config.threshold, env=env)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Dequantized raw outputs of the file on emulated aarch64, one image at a time."""
        raw, self.guest = emulated_raw(self.path, x, self.cpu, self.env, threads=self.threads, xnnpack=self.xnnpack)
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        arm = self.raw(x)
        x86 = LiteRTModel(self.path, threads=1, xnnpack=self.xnnpack).raw(x)
        if self.spec is not None:
            self.parity = compare_outputs(self.spec, self.threshold, arm, x86, self.logits, self.activation)
        return to_probabilities(arm, self.logits, self.activation)

    def time(self, x: np.ndarray, runs: int = 10, warmup: int = 3):
        return NOT_TIMED

    @property
    def facts(self) -> dict[str, Any]:
        g = self.guest
        return {"cpu": f"emulated {self.cpu.qemu_arg}", "emulated_cpu": self.cpu.qemu_arg, "arch": g.get("machine"),
                "cores": 1, "isa": isa_flags(g.get("isa") or ()) if g else None,
                "runtime": f"ai-edge-litert {g.get('litert') or self.env.litert}",
                "delegate": g.get("delegate") or ("xnnpack" if self.xnnpack else "none (built-in kernels)"),
                "threads": self.threads, "emulator": f"qemu-user {self.env.qemu_version}",
                "vs_x86": self.parity.to_dict() if self.parity is not None else None, "latency": LATENCY_NOTE}


@dataclass(frozen=True)
class _NoTiming:
    """What an emulated runner's ``time`` returns: no latency (the report shows "–")."""

    p50: None = None
    p90: None = None
    mean: None = None
    n: int = 0
    images_per_s: None = None


NOT_TIMED = _NoTiming()


def check(cpu: str | None = None) -> None:
    """``DeviceError`` when the environment is missing (naming the build command) or the CPU is refused."""
    c = EmuCpu.parse(cpu)
    env = load_env()
    check_sme(c, env.qemu_version)


def load(model, *, cpu: str | None = None, threads: int | None = None) -> Arm64EmuRunner:
    return Arm64EmuRunner.from_model(model, EmuCpu.parse(cpu))
