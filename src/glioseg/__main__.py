"""``python -m glioseg`` runs the ``glioseg`` command."""

from glioseg.cli import main

main()
