"""`edgeretina train` (issue 4)."""
import click

from edgeretina.cli import not_ready


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args):
    """Not implemented yet (issue 4)."""
    not_ready("train", "issue 4")
