"""`edgeretina data` (issue 3)."""
import click

from edgeretina.cli import not_ready


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def data(args):
    """Not implemented yet (issue 3)."""
    not_ready("data", "issue 3")
