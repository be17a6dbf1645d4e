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


def machine_info() -> dict:
    """The machine a benchmark ran on (report.json ``machine``): platform, CPU, cores and the versions of
    the packages that run models (None when not installed)."""
    return {"platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": package_version("numpy"),
            "tensorflow": package_version("tensorflow"), "tf_keras": package_version("tf-keras"),
            "ai_edge_litert": package_version("ai-edge-litert")}


__all__ = ["PACKAGES", "package_version", "package_versions", "cpu_name", "machine_info"]
