"""`edgeretina predict` (issue 6)."""
import click

from edgeretina.cli import not_ready


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def predict(args):
    """Not implemented yet (issue 6)."""
    not_ready("predict", "issue 6")
