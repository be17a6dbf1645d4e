"""``export --verify-arm CPU`` (issue 17): every exported file is also run by aarch64 LiteRT under qemu-user
on the first ``--verify-arm-n`` verification images and compared with the same bytes on this x86 machine.

A phone runs other kernels than x86 XNNPACK (NEON, dot product, i8mm, SME tiers), so "the int8 file keeps the
float model's decisions" is checked where the app will run it. The export fails — nothing is published —
when a decision differs on an emulated CPU (the file would answer differently on such a phone); otherwise
each variant's manifest entry carries one :class:`ArmCheck` per CPU (flips, max |Δ| of the raw outputs,
bit-identity, the kernel tier the CPU offers). Emulated time is not a speed: no latency is recorded.
The environment is built once by ``python -m edgeretina.emulation.arm64_env build`` (docs/arm.md).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeretina.emulation.arm64_env import Arm64Env, load_env
from edgeretina.emulation.cpus import PARITY_CPUS, EmuCpu, check_sme
from edgeretina.emulation.guest import emulated_raw
from edgeretina.emulation.parity import compare_outputs, kernel_tier
from edgeretina.env import isa_flags
from edgeretina.errors import ExportError
from edgeretina.runtime import LiteRTModel
from edgeretina.tasks import TaskSpec

DEFAULT_N = 16  # emulation is slow: ~0.3–1.5 s per image for an int8 / float MobileNetV2
DEFAULT_WORD = "default"  # --verify-arm default = PARITY_CPUS


@dataclass(frozen=True)
class ArmCheck:
    """One exported file on one emulated CPU vs the same bytes on x86, on the same verification images."""

    cpu: str
    kernel_tier: str
    n: int
    flips: int
    max_abs_diff: float
    identical: bool
    output: str  # what max_abs_diff is measured in: logits or probabilities
    emulator: str
    litert: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_cpus(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """``--verify-arm`` values → qemu CPU texts (``default`` = :data:`PARITY_CPUS`); ``DeviceError`` for an
    unknown CPU or property. Duplicates dropped, order kept."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = (values,)
    out: list[str] = []
    for v in values:
        for cpu in (PARITY_CPUS if str(v).strip() == DEFAULT_WORD else (str(v),)):
            arg = EmuCpu.parse(cpu).qemu_arg
            if arg not in out:
                out.append(arg)
    return tuple(out)


def ready(cpus: Sequence[str]) -> Arm64Env:
    """The environment, checked before any work: ``DeviceError`` naming the build command when it is
    missing, or when an SME CPU would run on a qemu that mis-emulates SME."""
    env = load_env()
    for c in cpus:
        check_sme(EmuCpu.parse(c), env.qemu_version)
    return env


@dataclass(frozen=True)
class ArmJob:
    """What one variant's check needs besides the bytes: the task, decisions and the raw-output convention."""

    spec: TaskSpec
    threshold: Any
    logits: bool
    activation: str | None
    variant: str


def check_file(buf: bytes, x: np.ndarray, job: ArmJob, cpus: Sequence[str], env: Arm64Env) -> list[ArmCheck]:
    """:class:`ArmCheck` per CPU; ``ExportError`` when a decision differs from x86 on any of them."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    x86 = LiteRTModel(buf, threads=1, name=job.variant).raw(x)
    out = []
    with tempfile.TemporaryDirectory(prefix="edgeretina-verify-arm-") as tmp:
        path = Path(tmp) / f"{job.variant}.tflite"
        path.write_bytes(buf)
        for c in cpus:
            raw, guest = emulated_raw(path, x, EmuCpu.parse(c), env)
            p = compare_outputs(job.spec, job.threshold, raw, x86, job.logits, job.activation)
            chk = ArmCheck(cpu=c, kernel_tier=kernel_tier(isa_flags(guest.get("isa") or ())), n=p.n,
                           flips=p.flips, max_abs_diff=p.max_abs_diff, identical=p.identical, output=p.output,
                           emulator=f"qemu-user {env.qemu_version}", litert=guest.get("litert"))
            if chk.flips:
                raise ExportError(
                    f"{job.variant}: on emulated {c} ({chk.kernel_tier}) {chk.flips} of {chk.n} verification "
                    f"images get another decision than the same file on x86 (max |Δ| {chk.max_abs_diff:.3g} "
                    f"{chk.output}); nothing was published (docs/arm.md)")
            out.append(chk)
    return out
