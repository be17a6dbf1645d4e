"""`edgeretina explain` (issue 4)."""
import click

from edgeretina.cli import not_ready


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def explain(args):
    """Not implemented yet (issue 4)."""
    not_ready("explain", "issue 4")
