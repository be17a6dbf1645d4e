"""`edgeretina export` (issue 5)."""
import click

from edgeretina.cli import not_ready


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def export(args):
    """Not implemented yet (issue 5)."""
    not_ready("export", "issue 5")
