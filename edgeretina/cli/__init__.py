"""The ``edgeretina`` command: a thin click group. Each subcommand lives in its own module
(``edgeretina/cli/<name>.py``), parses its options, makes one library call and prints the result.

Rules for subcommand modules: no TensorFlow import at module level (``--help`` must stay fast); user
mistakes raise ``edgeretina.errors.EdgeRetinaError`` and are printed here as one ``error: ...`` line with
exit code 2 — never a traceback.
"""
from __future__ import annotations

import importlib
import sys

import click

from edgeretina import __version__
from edgeretina.errors import EdgeRetinaError

# name -> (module, attribute). One entry per subcommand; order is the order of --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("edgeretina.cli.demo", "demo"),
    "data": ("edgeretina.cli.data", "data"),
    "train": ("edgeretina.cli.train", "train"),
    "export": ("edgeretina.cli.export", "export"),
    "bench": ("edgeretina.cli.bench", "bench"),
    "predict": ("edgeretina.cli.predict", "predict"),
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
        try:
            return super().invoke(ctx)
        except EdgeRetinaError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="edgeretina")
def cli():
    """edgeretina: fine-tune fundus CNNs, export edge variants, benchmark them side by side."""


def main(argv=None):
    return cli.main(args=argv, prog_name="edgeretina")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
