"""`edgeretina demo` (issue 2)."""
import click

from edgeretina.cli import not_ready


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def demo(args):
    """Not implemented yet (issue 2)."""
    not_ready("demo", "issue 2")
