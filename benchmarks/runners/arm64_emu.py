"""The ``arm64-emu[:CPU]`` device: a .tflite scored by aarch64 LiteRT under qemu-user (issue 17).

The guest (:mod:`edgeretina.runtime.emulated` on the arm64 CPython of ``benchmarks/arm64_env.py``) runs the
same ``LiteRTModel`` code as the host on the same preprocessed float32 inputs (handed over as an .npy) and
returns the raw outputs; ``predict`` also scores the file on this x86 machine and keeps the comparison
(:func:`edgeretina.benchmarks.arm_parity.compare_outputs`) for the row's ``device_info["vs_x86"]``.
Emulated time says nothing about a phone: ``time`` measures nothing (:data:`NOT_TIMED`).

CPU: a qemu ``-cpu`` model with optional properties (``max,sme=off``). An SME CPU on a qemu that mis-emulates
SME (:data:`SME_BAD_BEFORE`) is refused with the reason (docs/arm.md).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeretina.env import isa_flags
from edgeretina.errors import DeviceError, ModelError
from edgeretina.runtime import LiteRTModel, to_probabilities

from ..arm64_env import Arm64Env, load_env, run_guest
from ..arm_parity import LATENCY_NOTE, compare_outputs

DEFAULT_CPU = "cortex-a76"
# qemu -cpu models for aarch64 (qemu 7.2 and later)
CPUS = ("cortex-a35", "cortex-a53", "cortex-a55", "cortex-a57", "cortex-a72", "cortex-a76", "cortex-a710",
        "neoverse-n1", "neoverse-n2", "neoverse-v1", "a64fx", "max")
# CPUs with SME as qemu models them (a "sme=off" property removes it)
SME_CPUS = ("max",)
# qemu 7.2 runs XNNPACK's SME int8 kernels (KleidiAI *_sme_mopa) wrong: int8 outputs saturate; qemu 11.1.3 runs
# the same kernels bit-identically to x86 (docs/arm.md). Versions in between are untested: refused too.
SME_BAD_BEFORE = (11, 1)
SECONDS_PER_IMAGE = 30.0  # a generous timeout per image (float MobileNetV2-224: ~4 s emulated)


@dataclass(frozen=True)
class EmuCpu:
    """A parsed ``arm64-emu:CPU[,prop=value...]``."""

    model: str
    props: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> "EmuCpu":
        text = (text or DEFAULT_CPU).strip()
        model, *rest = [t.strip() for t in text.split(",")]
        if model not in CPUS:
            raise DeviceError(f"arm64-emu: unknown CPU '{model}' (choose from: {', '.join(CPUS)}; properties as "
                              "in qemu, e.g. max,sme=off)")
        props = []
        for r in rest:
            k, eq, v = r.partition("=")
            if not eq or not k or not v:
                raise DeviceError(f"arm64-emu:{text}: '{r}' is not a CPU property (write name=value, e.g. sme=off)")
            props.append((k, v))
        return cls(model, tuple(props))

    @property
    def qemu_arg(self) -> str:
        return ",".join([self.model] + [f"{k}={v}" for k, v in self.props])

    @property
    def has_sme(self) -> bool:
        off = {k: v.lower() in ("off", "false", "no", "0") for k, v in self.props}
        return self.model in SME_CPUS and not off.get("sme", False)


def version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in str(text).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_sme(cpu: EmuCpu, qemu_version: str) -> None:
    """``DeviceError`` when ``cpu`` has SME and the emulator is one known (or not known not) to mis-run it."""
    if cpu.has_sme and version_tuple(qemu_version) < SME_BAD_BEFORE:
        need = ".".join(map(str, SME_BAD_BEFORE))
        raise DeviceError(
            f"arm64-emu:{cpu.qemu_arg}: qemu {qemu_version} mis-emulates SME (XNNPACK's SME int8 kernels give "
            f"saturated outputs there; qemu 11.1.3 runs them bit-identically to x86, docs/arm.md). Use "
            f"arm64-emu:{cpu.model},sme=off, or qemu >= {need} (python -m edgeretina.benchmarks.arm64_env build "
            "--qemu newest, or EDGERETINA_QEMU=/path/to/qemu-aarch64)")


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
        """From a :class:`~edgeretina.benchmarks.modelfile.ModelFile`."""
        return cls(model.path, cpu=cpu, logits=model.outputs_logits, activation=model.activation,
                   spec=model.config.spec, threshold=model.config.threshold, env=env)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Dequantized raw outputs of the file on emulated aarch64, one image at a time."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        with tempfile.TemporaryDirectory(prefix="edgeretina-arm64-") as tmp:
            t = Path(tmp)
            np.save(t / "x.npy", x)
            args = ["-m", "edgeretina.runtime.emulated", str(self.path.resolve()), str(t / "x.npy"),
                    str(t / "out.npy"), "--threads", str(self.threads), "--facts", str(t / "facts.json")]
            if not self.xnnpack:
                args.append("--no-xnnpack")
            try:
                r = run_guest(self.env, self.cpu.qemu_arg, args, timeout=120 + SECONDS_PER_IMAGE * len(x))
            except OSError as e:
                raise DeviceError(f"{self.device}: cannot start the emulator ({e})") from None
            if r.returncode != 0 or not (t / "out.npy").is_file():
                lines = [ln for ln in (r.stderr or r.stdout or "").strip().splitlines() if not ln.startswith("INFO:")]
                why = lines[-1] if lines else f"exit status {r.returncode}"
                raise ModelError(f"{self.path}: emulated aarch64 LiteRT failed on {self.device} ({why})")
            self.guest = json.loads((t / "facts.json").read_text())
            return np.load(t / "out.npy")

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
