"""`edgeretina bench` (issue 6)."""
import click

from edgeretina.cli import not_ready


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args):
    """Not implemented yet (issue 6)."""
    not_ready("bench", "issue 6")
