"""Emulated aarch64 CPUs: qemu ``-cpu`` models with optional properties (``max,sme=off``), and the refusal of
an SME CPU on a qemu that mis-emulates SME (docs/arm.md)."""
from __future__ import annotations

from dataclasses import dataclass

from edgeretina.errors import DeviceError

from .arm64_env import BUILD_HINT

DEFAULT_CPU = "cortex-a76"
# qemu -cpu models for aarch64 (qemu 7.2 and later)
CPUS = ("cortex-a35", "cortex-a53", "cortex-a55", "cortex-a57", "cortex-a72", "cortex-a76", "cortex-a710",
        "neoverse-n1", "neoverse-n2", "neoverse-v1", "a64fx", "max")
# the CPUs a parity check covers by default: plain NEON, NEON + fp16 + dot product (two cores of that tier)
PARITY_CPUS = ("cortex-a53", "cortex-a76", "neoverse-n1")
# CPUs with SME as qemu models them (a "sme=off" property removes it)
SME_CPUS = ("max",)
# qemu 7.2 runs XNNPACK's SME int8 kernels (KleidiAI *_sme_mopa) wrong: int8 outputs saturate; qemu 11.1.3 runs
# the same kernels bit-identically to x86 (docs/arm.md). Versions in between are untested: refused too.
SME_BAD_BEFORE = (11, 1)


@dataclass(frozen=True)
class EmuCpu:
    """A parsed ``CPU[,prop=value...]``."""

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
            f"arm64-emu:{cpu.model},sme=off, or qemu >= {need} ({BUILD_HINT} --qemu newest, or "
            "EDGERETINA_QEMU=/path/to/qemu-aarch64)")
