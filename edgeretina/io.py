"""Atomic artifacts: write to a temporary file beside the target, then rename; folders of artifacts that
belong together are staged beside their target and published in one step (:class:`StagedDir`)."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgeretina.errors import EdgeRetinaError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check it is a writable directory, else a one-line error."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeRetinaError(f"{p}: cannot create output directory ({e.strerror or e})") from None
    if not p.is_dir():
        raise EdgeRetinaError(f"{p}: output path exists and is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise EdgeRetinaError(f"{p}: output directory is not writable")
    return p


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``target`` only on success.

    If the body raises (or is interrupted), the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        fault_point(f"write:{target.name}")
        yield tmp_path
        if tmp_path.is_file():  # mkstemp makes 0600 files; give artifacts the usual umask-based mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except OSError as e:
        if e.filename is None or str(e.filename) == str(tmp_path):  # name the artifact, not the temp file
            raise OSError(e.errno, e.strerror, str(target)) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, obj) -> Path:
    return write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(o):
    """``json.dumps(default=...)`` for NumPy scalars/arrays and paths (every edgeretina JSON artifact)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class SizedArtifact:
    """Mixin for result dataclasses that carry ``size_bytes`` and ``gzip_bytes`` fields: sizes in MB (1e6)."""

    size_bytes: int
    gzip_bytes: int

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    @property
    def gzip_mb(self) -> float:
        return self.gzip_bytes / 1e6


# ------------------------------------------------------------------------------ transactional folders
#
# A folder of artifacts that belong together (an export's variants + manifest.json, a bench report's
# json/md/csv/png) is built in a private staging folder beside the target, on the same filesystem, and
# published in one step: the staging folder and the target are exchanged atomically (Linux renameat2
# RENAME_EXCHANGE), or — where the filesystem cannot exchange — the target is renamed aside, the staging
# folder renamed into place and the old one deleted (a crash between the two renames is rolled back by the
# next run). A lock file beside the target (``.<name>.lock``, fcntl.flock) refuses a second concurrent
# writer; stale staging folders are removed by the next writer that holds the lock.

_STAGING, _OLD = "staging-", "old-"


def _hidden(real: Path, tag: str) -> str:
    return f".{real.name}.{tag}"


@contextlib.contextmanager
def dir_lock(target: str | os.PathLike, what: str = "edgeretina run") -> Iterator[Path]:
    """Hold an exclusive lock on ``target`` (a folder) for the whole block, else a one-line error."""
    import fcntl  # POSIX only: imported here so that edgeretina.io imports on any system

    real = Path(target)
    lock = real.parent / (_hidden(real, "lock"))
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise EdgeRetinaError(f"{real}: cannot create the lock file {lock} ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgeRetinaError(f"{real}: another {what} is writing into this folder (lock {lock.name} is "
                                  "held); wait for it to finish or choose another --out") from None
        yield lock
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def clean_stale(real: Path) -> list[Path]:
    """Remove staging / set-aside folders of ``real`` left by killed runs. Call only while holding
    :func:`dir_lock` (then no live run owns them). A target that a crash left renamed aside is restored."""
    removed: list[Path] = []
    try:
        entries = sorted(real.parent.iterdir())
    except OSError:
        return removed
    olds = [p for p in entries if p.name.startswith(_hidden(real, _OLD))]
    if olds and not real.exists():  # killed between "target → aside" and "staging → target": roll back
        os.rename(olds[-1], real)
        olds = olds[:-1]
    for p in entries:
        if p.name.startswith(_hidden(real, _STAGING)) or p in olds:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _is_part(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".part")


def _link_or_copy(src, dst, *, follow_symlinks=True):
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=follow_symlinks)
    return dst


def _carry(src: Path, dst: Path, keep: Callable[[Path], bool] | None) -> None:
    """Hard-link (else copy) the entries of ``src`` into ``dst``, except half-written ``.part`` files and
    entries ``keep`` rejects. Later writes into ``dst`` replace links, never the old files' contents."""
    for p in sorted(src.iterdir()):
        if _is_part(p) or (keep is not None and not keep(p)):
            continue
        if p.is_symlink():
            os.symlink(os.readlink(p), dst / p.name)
        elif p.is_dir():
            shutil.copytree(p, dst / p.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(p, dst / p.name)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delay SIGINT/SIGTERM (main thread) across the few renames of a publish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def publish_dir(stage: Path, real: Path) -> None:
    """Make ``stage`` the folder at ``real`` in one step; afterwards ``stage`` holds the old folder (or
    nothing) and may be deleted."""
    with _signals_held():
        fault_point(f"publish:{real.name}")
        if not real.exists():
            os.rename(stage, real)
        elif not _exchange(stage, real):
            aside = real.parent / (_hidden(real, _OLD) + os.urandom(4).hex())
            os.rename(real, aside)  # a kill right here is rolled back by clean_stale()
            os.rename(stage, real)
            os.rename(aside, stage)


class StagedDir:
    """``with StagedDir(target) as st:`` write into ``st.path``; on a clean exit the folder is published at
    ``target`` in one step; on an exception (or a kill) ``target`` is untouched. The existing target's
    entries are carried over (hard links) unless ``keep(path)`` rejects them. ``st.publish()`` publishes
    early (e.g. to keep finished work before re-raising)."""

    def __init__(self, target: str | os.PathLike, keep: Callable[[Path], bool] | None = None,
                 what: str = "edgeretina run"):
        self.target, self.keep, self.what = Path(target), keep, what
        self.real = Path(os.path.realpath(self.target))
        self.path: Path | None = None
        self.published = False
        self._lock = None

    def __enter__(self) -> "StagedDir":
        ensure_writable_dir(self.real.parent)
        self._lock = dir_lock(self.real, self.what)
        self._lock.__enter__()
        try:
            clean_stale(self.real)
            self.path = Path(tempfile.mkdtemp(prefix=_hidden(self.real, _STAGING), dir=self.real.parent))
            mode = self.real.stat().st_mode & 0o7777 if self.real.is_dir() else 0o777 & ~_umask()
            os.chmod(self.path, mode)
            if self.real.is_dir():
                _carry(self.real, self.path, self.keep)
        except BaseException:
            self._cleanup()
            raise
        return self

    def publish(self) -> None:
        if not self.published:
            publish_dir(self.path, self.real)
            self.published = True

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.publish()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        try:
            if self.path is not None and self.path.exists():
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            if self._lock is not None:
                self._lock.__exit__(None, None, None)
                self._lock = None


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike, keep: Callable[[Path], bool] | None = None,
               what: str = "edgeretina run") -> Iterator[Path]:
    """Yield a staging folder that replaces ``target`` in one step when the block ends cleanly (all files
    appear together or none does); see :class:`StagedDir`."""
    with StagedDir(target, keep, what) as st:
        yield st.path


# ------------------------------------------------------------------------------ fault injection (tests)


def fault_point(name: str) -> None:
    """Test hook: ``EDGERETINA_FAULT="PATTERN=ACTION[,…]"`` (fnmatch patterns over point names such as
    ``export:convert:int8``, ``write:report.json``, ``publish:export``) makes this process receive a signal
    (``sigkill``, ``sigterm``, ``sigint``) or raise ``enospc`` / ``eacces`` there. Unset: a no-op."""
    spec = os.environ.get("EDGERETINA_FAULT")
    if not spec:
        return
    for item in spec.split(","):
        pat, _, action = item.partition("=")
        if not fnmatch.fnmatchcase(name, pat.strip()):
            continue
        action = action.strip().lower()
        if action.startswith("sig"):
            os.kill(os.getpid(), getattr(signal, action.upper()))
        elif action in ("enospc", "eacces"):
            code = getattr(errno, action.upper())
            raise OSError(code, os.strerror(code), name.split(":", 1)[-1])
