"""The machine and the installed packages, as recorded in export manifests and bench reports (one place)."""
from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# distribution names whose versions an artifact records
PACKAGES = ("edgeretina", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
            "ai-edge-quantizer", "numpy")


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``; None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{"python": ..., <distribution>: <version>}`` of the installed ones among ``packages`` (the export
    manifest's ``versions``)."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        v = package_version(pkg)
        if v is not None:
            out[pkg] = v
    return out


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


# The CPU features that decide which kernels XNNPACK / LiteRT run, in report order. x86 names are the kernel's
# /proc/cpuinfo ``flags``; arm64 ``Features`` (= HWCAP names) are reported by what they mean to a kernel
# (ARM_NAMES), so a phone, an emulated core and an ARM server read alike.
X86_ISA = ("sse4_2", "avx", "fma", "f16c", "avx2", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
           "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
ARM_NAMES = {"asimd": "neon", "asimdhp": "fp16", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16",
             "sve": "sve", "sve2": "sve2", "sme": "sme", "sme2": "sme2"}
ARM_ISA = ("neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme", "sme2")


def isa_flags(names) -> list[str]:
    """The kernel-relevant ISA flags among CPU feature ``names`` (x86 ``flags`` or arm64 ``Features``/HWCAP
    names), in :data:`X86_ISA` / :data:`ARM_ISA` order."""
    have = {str(n).strip().lower() for n in names or ()}
    arm = {ARM_NAMES[n] for n in have if n in ARM_NAMES}
    return [f for f in X86_ISA if f in have] + [f for f in ARM_ISA if f in arm]


def parse_cpuinfo(text: str) -> dict:
    """``{"cpu": model name, "isa": [...]}`` from a /proc/cpuinfo text (x86 ``model name``/``flags``; arm64
    ``Features`` and, without a model name, ``CPU implementer``/``CPU part``)."""
    name, feats, part = None, set(), {}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not name:
            name = val.strip() or None
        elif key in ("flags", "features"):
            feats.update(val.split())
        elif key in ("cpu implementer", "cpu part") and key not in part:
            part[key] = val.strip()
    if not name and part:
        name = "ARM implementer {} part {}".format(part.get("cpu implementer", "?"), part.get("cpu part", "?"))
    return {"cpu": name, "isa": isa_flags(feats)}


def cpu_facts(cpuinfo: str | None = None) -> dict:
    """This machine's CPU as every report row records it: ``cpu`` (model), ``arch``, ``cores`` and ``isa``
    (:func:`isa_flags`). ``cpuinfo``: a /proc/cpuinfo text to read instead of this machine's."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    got = parse_cpuinfo(cpuinfo)
    return {"cpu": got["cpu"] or cpu_name(), "arch": platform.machine(), "cores": os.cpu_count(), "isa": got["isa"]}


def device_facts(delegate: str, threads: int | None, runtime: str | None = "ai-edge-litert", **extra) -> dict:
    """The facts of one report row run on this machine: :func:`cpu_facts`, the runtime and its version
    (``runtime``: a distribution name, e.g. ``ai-edge-litert`` or ``tensorflow``), the delegate and threads;
    ``extra`` adds device-specific entries (a GPU's name, ...)."""
    rt = {"runtime": f"{runtime} {package_version(runtime) or '?'}"} if runtime else {}
    return {**cpu_facts(), **rt, "delegate": delegate, "threads": threads, **extra}


def machine_info() -> dict:
    """The machine a benchmark ran on (report.json ``machine``): platform, CPU, cores, ISA flags and the
    versions of the packages that run models (None when not installed)."""
    facts = cpu_facts()
    return {"platform": platform.platform(), "cpu": facts["cpu"], "cpu_count": os.cpu_count(),
            "arch": facts["arch"], "isa": facts["isa"],
            "python": platform.python_version(), "numpy": package_version("numpy"),
            "tensorflow": package_version("tensorflow"), "tf_keras": package_version("tf-keras"),
            "ai_edge_litert": package_version("ai-edge-litert")}


def machine_line(m: dict) -> str:
    """One line naming a machine from :func:`machine_info` / :func:`device_facts` entries: "AMD EPYC …,
    2 cores (avx2, avx512f, …), x86_64"."""
    cores = m.get("cpu_count") or m.get("cores")
    isa = ", ".join(m.get("isa") or []) or "ISA flags not recorded"
    name = m.get("cpu") or " ".join(str(m[k]) for k in ("manufacturer", "model") if m.get(k)) or "?"
    return f"{name}, {cores or '?'} cores ({isa}), {m.get('arch') or m.get('abi') or m.get('platform') or '?'}"


__all__ = ["PACKAGES", "package_version", "package_versions", "cpu_name", "machine_info", "X86_ISA", "ARM_ISA",
           "isa_flags", "parse_cpuinfo", "cpu_facts", "device_facts", "machine_line"]
