"""The arm64 emulation environment of ``--device arm64-emu`` (issue 17): build it, find it, run Python in it.

``python -m edgeretina.emulation.arm64_env build`` makes, in
:func:`env_dir` (``$EDGERETINA_ARM64_ENV``, default ``~/.cache/edgeretina/arm64``):

- ``sysroot/``: an arm64 CPython 3.11 from Debian's arm64 .debs (``dpkg --add-architecture arm64``,
  ``apt-get download``, ``dpkg -x``; nothing arm64 is installed on the host, and a foreign architecture the
  build added is removed again), with an ARM-style ``sysroot/proc/cpuinfo``: qemu-user shows the guest the
  x86 host's ``/proc/cpuinfo``, and LiteRT's CPU probing segfaults on it; qemu's ``-L`` redirects the read;
- ``site/``: the aarch64 wheels of ai-edge-litert (``LITERT_VERSION``) and numpy (the host's version) with
  their dependencies, unzipped (``pip download --platform manylinux_2_27_aarch64 ...``: the 2.x LiteRT wheels
  are tagged manylinux_2_27, asking for manylinux2014 alone silently falls back to 1.4.0);
- ``env.json``: what was built (qemu binary and version, versions in the guest), written last.

qemu-user comes from the host (``qemu-aarch64`` on PATH, ``$EDGERETINA_QEMU``, else ``apt-get install
qemu-user`` when run as root). :func:`guest_command` is the one place that starts the emulated Python; the
guest runs :mod:`edgeretina.runtime.emulated` (the same ``LiteRTModel`` code as the host).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgeretina.env import package_version
from edgeretina.errors import DeviceError
from edgeretina.io import write_json_atomic
from edgeretina.runtime.emulated import decode_hwcaps

SCHEMA = "edgeretina.arm64_env/1"
LITERT_VERSION = "2.3.0"
PYTHON = "python3.11"
BUILD_HINT = "python -m edgeretina.emulation.arm64_env build"
# the arm64 .debs of a CPython 3.11 that imports numpy and LiteRT (Debian bookworm names; apt-get download
# resolves nothing, so the closure is listed: python3.11-minimal + libpython3.11-stdlib's Depends, recursively,
# without dpkg / tar / perl, + libstdc++6 for the wheels' C++ code)
DEBS = ("libc6", "libgcc-s1", "gcc-12-base", "libstdc++6", "python3.11-minimal", "libpython3.11-minimal",
        "libpython3.11-stdlib", "libexpat1", "zlib1g", "libffi8", "libbz2-1.0", "liblzma5", "libzstd1",
        "libcrypt1", "libssl3", "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1",
        "libnsl2", "libtirpc3", "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0",
        "libkeyutils1", "libcom-err2", "libdb5.3", "libselinux1", "libpcre2-8-0", "libacl1", "libmd0")
WHEEL_PLATFORMS = ("manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64",
                   "manylinux_2_17_aarch64")
QEMU_NAMES = ("qemu-aarch64", "qemu-aarch64-static")

# An ARM-style /proc/cpuinfo (one Cortex-A76-like core). Its content only has to parse: XNNPACK/cpuinfo take
# the CPU's features from the auxiliary vector (HWCAP/HWCAP2), which qemu sets from ``-cpu``.
CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""


def env_dir() -> Path:
    """Where the environment lives: ``$EDGERETINA_ARM64_ENV`` or ``~/.cache/edgeretina/arm64``."""
    d = os.environ.get("EDGERETINA_ARM64_ENV")
    return Path(d).expanduser() if d else Path.home() / ".cache" / "edgeretina" / "arm64"


@dataclass(frozen=True)
class Arm64Env:
    """A built environment (``env.json``)."""

    root: Path
    qemu: str
    qemu_version: str
    python: str  # the guest interpreter inside the sysroot
    litert: str
    numpy: str

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def src(self) -> Path:
        """A folder whose only entry is a link to this edgeretina package (the guest imports its runtime)."""
        return self.root / "src"

    def facts(self) -> dict:
        return {"emulator": f"qemu-user {self.qemu_version}", "litert": self.litert, "guest_numpy": self.numpy}


def find_qemu() -> str | None:
    q = os.environ.get("EDGERETINA_QEMU")
    if q:
        return q if Path(q).is_file() else shutil.which(q)
    for n in QEMU_NAMES:
        p = shutil.which(n)
        if p:
            return p
    return None


def qemu_version(qemu: str) -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
    first = (out.splitlines() or ["?"])[0]
    return first.split("version", 1)[1].strip().split()[0] if "version" in first else first.strip()


def load_env(root: Path | None = None) -> Arm64Env:
    """The environment at ``root`` (default :func:`env_dir`); ``DeviceError`` naming the build command when
    it is missing or incomplete."""
    root = Path(root) if root is not None else env_dir()
    meta = root / "env.json"
    if not meta.is_file():
        raise DeviceError(f"arm64-emu: no arm64 emulation environment at {root}; build it with {BUILD_HINT}")
    d = json.loads(meta.read_text())
    qemu, version = d["qemu"], d["qemu_version"]
    override = os.environ.get("EDGERETINA_QEMU")
    if override or not Path(qemu).is_file():  # $EDGERETINA_QEMU, or the recorded binary is gone: the host's
        qemu = find_qemu() or qemu
        version = qemu_version(qemu) if Path(qemu).is_file() else version
    env = Arm64Env(root=root, qemu=qemu, qemu_version=version, python=d["python"], litert=d["litert"],
                   numpy=d["numpy"])
    missing = [p for p in (env.sysroot / env.python.lstrip("/"), env.site, Path(env.qemu)) if not Path(p).exists()]
    if missing:
        raise DeviceError(f"arm64-emu: the environment at {root} is incomplete ({missing[0]} is missing); "
                          f"build it again with {BUILD_HINT}")
    _link_src(env)
    return env


def _link_src(env: Arm64Env) -> None:
    """``src/edgeretina`` → this installation's package (re-pointed when the checkout moved)."""
    pkg = Path(__file__).resolve().parents[1]  # edgeretina/ (this file is edgeretina/emulation/arm64_env.py)
    link = env.src / "edgeretina"
    env.src.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == pkg:
        return
    tmp = env.src / f".edgeretina.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(pkg, target_is_directory=True)
    os.replace(tmp, link)


# MIDR implementer / part of qemu's CPU models (what /proc/cpuinfo says on such a core). XNNPACK's cpuinfo
# reads them: on a known core it enables features by model (a Cortex-A76 part number turns on dot product
# even on an emulated Cortex-A53, which then dies of SIGILL), so every emulated CPU gets its own cpuinfo.
MIDR = {"cortex-a35": (0x41, 0xd04), "cortex-a53": (0x41, 0xd03), "cortex-a55": (0x41, 0xd05),
        "cortex-a57": (0x41, 0xd07), "cortex-a72": (0x41, 0xd08), "cortex-a76": (0x41, 0xd0b),
        "cortex-a710": (0x41, 0xd47), "neoverse-n1": (0x41, 0xd0c), "neoverse-n2": (0x41, 0xd49),
        "neoverse-v1": (0x41, 0xd40), "a64fx": (0x46, 0x001), "max": (0x00, 0x051)}
HWCAP_PROBE = ("import ctypes; c = ctypes.CDLL(None); c.getauxval.restype = ctypes.c_ulong; "
               "c.getauxval.argtypes = [ctypes.c_ulong]; print(c.getauxval(16), c.getauxval(26))")


def cpuinfo_text(cpu: str, features: Sequence[str]) -> str:
    """An ARM-style /proc/cpuinfo for emulated CPU ``cpu`` (qemu ``-cpu`` text) with its HWCAP features."""
    impl, part = MIDR.get(cpu.split(",")[0], (0x00, 0x000))
    return (f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: 0x{impl:02x}\n"
            f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x{part:03x}\nCPU revision\t: 0\n\n")


def cpu_root(env: Arm64Env, cpu: str) -> Path:
    """The sysroot as emulated CPU ``cpu`` sees it: links to every entry of ``sysroot/`` but ``proc``, whose
    ``cpuinfo`` names this CPU and lists the features qemu gives it (made once, probed in the guest)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in cpu)
    root = env.root / "cpus" / safe
    if (root / "proc" / "cpuinfo").is_file():
        return root
    argv = [env.qemu, "-cpu", cpu, "-L", str(env.sysroot), str(env.sysroot / env.python.lstrip("/")),
            "-S", "-c", HWCAP_PROBE]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={"PYTHONNOUSERSITE": "1"})
    if r.returncode != 0:
        raise DeviceError(f"arm64-emu:{cpu}: qemu refuses this CPU ({(r.stderr or r.stdout).strip()[-200:]})")
    hwcap, hwcap2 = (int(v) for v in r.stdout.split()[-2:])
    tmp = Path(tempfile.mkdtemp(dir=env.root, prefix=".cpu."))
    for entry in env.sysroot.iterdir():
        if entry.name != "proc":
            (tmp / entry.name).symlink_to(entry)
    (tmp / "proc").mkdir()
    (tmp / "proc" / "cpuinfo").write_text(cpuinfo_text(cpu, decode_hwcaps(hwcap, hwcap2)))
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, root)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def guest_command(env: Arm64Env, cpu: str, args: Sequence[str]) -> tuple[list[str], dict]:
    """(argv, environment) that run ``python3.11 ARGS`` as aarch64 on emulated CPU ``cpu``."""
    argv = [env.qemu, "-cpu", cpu, "-L", str(cpu_root(env, cpu)),
            str(env.sysroot / env.python.lstrip("/")), *args]
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    return argv, {**keep, "PYTHONPATH": f"{env.site}{os.pathsep}{env.src}", "PYTHONNOUSERSITE": "1",
                  "PYTHONDONTWRITEBYTECODE": "1"}


def run_guest(env: Arm64Env, cpu: str, args: Sequence[str], timeout: float | None = None
              ) -> subprocess.CompletedProcess:
    argv, genv = guest_command(env, cpu, args)
    return subprocess.run(argv, env=genv, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------------- build
def _sh(cmd: Sequence[str], log, **kw) -> subprocess.CompletedProcess:
    log(" ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def ensure_qemu(log) -> str:
    q = find_qemu()
    if q:
        return q
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-user"], check=False, stdout=subprocess.DEVNULL)
        q = find_qemu()
    if not q:
        raise DeviceError("arm64-emu: qemu-user is not installed (apt-get install qemu-user, or set "
                          "EDGERETINA_QEMU to a qemu-aarch64 binary)")
    return q


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (from ``apt-cache policy``), for the newest-qemu download."""
    out = subprocess.run(["apt-cache", "policy"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit() and parts[2].endswith("/main") and "security" not in parts[2] \
                and parts[1].startswith("http"):
            return parts[1]
    raise DeviceError("arm64-emu: no Debian main archive in apt's sources (needed for --qemu newest)")


def fetch_newest_qemu(dest: Path, work: Path, log, suite: str = "unstable") -> str:
    """Debian ``suite``'s qemu-user (statically linked since 9.x) unpacked, its ``qemu-aarch64`` copied to
    ``dest``; apt runs on private lists and cache (the host's apt sources are not touched)."""
    apt = work / "apt"
    for d in ("lists/partial", "cache/archives/partial"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    for d in (apt, *apt.rglob("*")):
        if d.is_dir():
            os.chmod(d, 0o777)
    (apt / "sources.list").write_text(f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                                      f"{apt_mirror()} {suite} main\n")
    opts = [f"-o=Dir::Etc::SourceList={apt / 'sources.list'}", "-o=Dir::Etc::SourceParts=/dev/null",
            f"-o=Dir::State::Lists={apt / 'lists'}", f"-o=Dir::Cache={apt / 'cache'}", "-o=APT::Architectures::=amd64"]
    _sh(["apt-get", *opts, "update", "-qq"], log)
    _sh(["apt-get", *opts, "download", "-qq", "qemu-user"], log, cwd=apt, stdout=subprocess.DEVNULL)
    deb = next(apt.glob("qemu-user_*.deb"))
    _sh(["dpkg", "-x", deb, work / "qemu"], log)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "qemu" / "usr" / "bin" / "qemu-aarch64", dest)
    return str(dest)


def build_sysroot(sysroot: Path, work: Path, log) -> None:
    """Debian's arm64 CPython 3.11 unpacked into ``sysroot`` (nothing is installed on the host)."""
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise DeviceError("arm64-emu: building the sysroot needs Debian's apt-get and dpkg")
    foreign = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    added = "arm64" not in foreign
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    os.chmod(debs, 0o777)  # apt's download user (_apt) writes here
    try:
        if added:
            _sh(["dpkg", "--add-architecture", "arm64"], log)
            _sh(["apt-get", "update", "-qq"], log)
        _sh(["apt-get", "download", "-qq", *[f"{p}:arm64" for p in DEBS]], log, cwd=debs, stdout=subprocess.DEVNULL)
    finally:
        if added:
            subprocess.run(["dpkg", "--remove-architecture", "arm64"], check=False)
            subprocess.run(["apt-get", "update", "-qq"], check=False)
    for deb in sorted(debs.glob("*.deb")):
        _sh(["dpkg", "-x", deb, sysroot], log)
    (sysroot / "proc").mkdir(exist_ok=True)
    (sysroot / "proc" / "cpuinfo").write_text(CPUINFO)


def fetch_wheels(site: Path, work: Path, log) -> None:
    """The aarch64 wheels of ai-edge-litert and numpy (+ dependencies) unzipped into ``site``."""
    wheels = work / "wheels"
    numpy = package_version("numpy")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
           "--implementation", "cp", "-d", wheels]
    for p in WHEEL_PLATFORMS:
        cmd += ["--platform", p]
    _sh(cmd + [f"ai-edge-litert=={LITERT_VERSION}", f"numpy=={numpy}" if numpy else "numpy"], log)
    for whl in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)


GUEST_PROBE = ("import json, importlib.metadata as m, numpy, ai_edge_litert.interpreter; "
               "print(json.dumps({'litert': m.version('ai-edge-litert'), 'numpy': numpy.__version__}))")


def build(root: Path | None = None, force: bool = False, log=print, qemu: str = "host") -> Arm64Env:
    """Build the environment into ``root`` (default :func:`env_dir`) and check that LiteRT imports under
    emulation. An existing complete environment is kept unless ``force``. ``qemu``: ``host`` (the installed
    qemu-user, Debian bookworm's 7.2: no SME) or ``newest`` (Debian unstable's statically linked qemu-user,
    copied into the environment; SME emulated correctly since at least 11.1.3; falls back to the host's)."""
    root = Path(root) if root is not None else env_dir()
    if not force:
        try:
            return load_env(root)
        except DeviceError:
            pass
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("sysroot", "site", "cpus", "env.json"):
        p = root / sub
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    host_qemu = ensure_qemu(log)
    with tempfile.TemporaryDirectory(dir=root, prefix=".build.") as tmp:
        build_sysroot(root / "sysroot", Path(tmp), log)
        fetch_wheels(root / "site", Path(tmp), log)
        if qemu == "newest":
            try:
                host_qemu = fetch_newest_qemu(root / "qemu" / "qemu-aarch64", Path(tmp), log)
            except (DeviceError, subprocess.CalledProcessError, OSError, StopIteration) as e:
                log(f"warning: newest qemu-user not fetched ({e}); using {host_qemu}")
    env = Arm64Env(root=root, qemu=host_qemu, qemu_version=qemu_version(host_qemu), python=f"/usr/bin/{PYTHON}",
                   litert="?", numpy="?")
    _link_src(env)
    r = run_guest(env, "cortex-a76", ["-c", GUEST_PROBE], timeout=600)
    if r.returncode != 0:
        raise DeviceError(f"arm64-emu: LiteRT does not import under emulation (exit {r.returncode}): "
                          f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    write_json_atomic(root / "env.json", {"schema": SCHEMA, "qemu": env.qemu, "qemu_version": env.qemu_version,
                                          "python": env.python, **got,
                                          "built_s": round(time.monotonic() - t0, 1)})
    return load_env(root)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeretina.emulation.arm64_env",
                                 description="Build / show the arm64 emulation environment of bench --device arm64-emu")
    ap.add_argument("action", choices=("build", "show"))
    ap.add_argument("--dir", default=None, help="environment folder (default $EDGERETINA_ARM64_ENV or "
                                                 "~/.cache/edgeretina/arm64)")
    ap.add_argument("--force", action="store_true", help="rebuild even when a complete environment exists")
    ap.add_argument("--qemu", choices=("host", "newest"), default="host",
                    help="host: the installed qemu-user (apt-get install qemu-user when missing); newest: Debian "
                         "unstable's static qemu-user, kept in the environment (needed for SME CPUs such as max)")
    a = ap.parse_args(argv)
    try:
        env = build(a.dir and Path(a.dir), force=a.force, qemu=a.qemu) if a.action == "build" else load_env(a.dir and Path(a.dir))
    except (DeviceError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"root": str(env.root), "qemu": env.qemu, **env.facts()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
