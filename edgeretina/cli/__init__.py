"""The ``edgeretina`` command: a thin click group. Each subcommand lives in its own module
(``edgeretina/cli/<name>.py``), parses its options, makes one library call and prints the result.

Rules for subcommand modules: no TensorFlow import at module level (``--help`` must stay fast); user
mistakes raise ``edgeretina.errors.EdgeRetinaError`` and are printed here as one ``error: ...`` line with
exit code 2 — never a traceback.
"""
from __future__ import annotations

import errno
import importlib
import signal
import sys
import threading

import click

from edgeretina import __version__
from edgeretina.errors import EdgeRetinaError

# name -> (module, attribute). One entry per subcommand; order is the order of --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("edgeretina.cli.demo", "demo"),
    "data": ("edgeretina.cli.data", "data"),
    "train": ("edgeretina.cli.train", "train"),
    "import": ("edgeretina.cli.import_", "import_"),
    "export": ("edgeretina.cli.export", "export"),
    "bench": ("edgeretina.cli.bench", "bench"),
    "predict": ("edgeretina.cli.predict", "predict"),
    "calibrate": ("edgeretina.cli.calibrate", "calibrate"),
    "explain": ("edgeretina.cli.explain", "explain"),
}


class _Group(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        mod, attr = COMMANDS[name]
        return getattr(importlib.import_module(mod), attr)

    def invoke(self, ctx):
        _terminate_as_interrupt()
        try:
            return super().invoke(ctx)
        except EdgeRetinaError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except Terminated:
            click.echo("error: terminated (SIGTERM)", err=True)
            ctx.exit(143)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except OSError as e:
            line = os_error_line(e)
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            ctx.exit(2)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``with`` blocks clean up (staging folders, temp files)."""


def _terminate_as_interrupt() -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise Terminated()

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


# OS errors that are the user's environment, not a bug: one line naming the file, exit 2.
_OS_ERRNOS = {
    errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop?)", errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long", errno.EMFILE: "too many open files", errno.EIO: "input/output error",
    errno.ENOENT: "no such file or directory", errno.ENOTDIR: "not a directory", errno.EISDIR: "is a directory",
    errno.EEXIST: "file exists", errno.EXDEV: "cross-device link", errno.ENOMEM: "out of memory",
    errno.EFBIG: "file too large", errno.ENOTEMPTY: "directory not empty", errno.EBUSY: "device or resource busy",
}


def os_error_line(e: OSError) -> str | None:
    """``OSError`` → one line ``<file>: <what> (<strerror>)``; None for errors not in the table."""
    what = _OS_ERRNOS.get(e.errno)
    if what is None:
        return None
    names = [str(x) for x in (e.filename, e.filename2) if x is not None]
    where = " → ".join(names) + ": " if names else ""
    detail = f" ({e.strerror})" if e.strerror and e.strerror.lower() != what else ""
    return f"{where}{what}{detail}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="edgeretina")
def cli():
    """edgeretina: fine-tune fundus CNNs, export edge variants, benchmark them side by side."""


def main(argv=None):
    return cli.main(args=argv, prog_name="edgeretina")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
