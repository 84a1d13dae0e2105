"""``dotrio fsck DATA_DIR [--repair]``: check a data dir no server is using.

Prints one line per finding; exits 0 when nothing is left to do, 1 when a
problem remains (or the data dir cannot be checked: not there, in use).
"""

from __future__ import annotations

import sys

import click

from .._errors import DataDirError
from ..runtime._fsck import fsck as run_fsck

__all__ = ["fsck"]

EXIT_RUNTIME = 1  # as dotrio.server._cli: a problem remains, or the check could not run


@click.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--repair", is_flag=True, default=False,
              help="Rebuild a missing, corrupt or incomplete alarm index from the objects' databases.")
def fsck(data_dir: str, repair: bool) -> None:
    """Check DATA_DIR: the id secret, every object database (quick_check) and
    the alarm index. Stop the server first: it holds the data dir's lock."""
    try:
        report = run_fsck(data_dir, repair=repair)
    except DataDirError as exc:
        click.echo(f"dotrio: error: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    click.echo(f"data dir: {report.data_dir}")
    for note in report.notes:
        click.echo(note)
    for problem in report.problems:
        click.echo(f"PROBLEM: {problem}")
    if report.problems:
        n = len(report.problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} remain{'s' if n == 1 else ''}")
        sys.exit(EXIT_RUNTIME)
    click.echo("ok")
