"""``python -m dotrio``: the same command as the ``dotrio`` console script."""

from .server._cli import main

main(prog_name="dotrio")
