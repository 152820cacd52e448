"""``python -m lmmrec`` runs the command line."""

from lmmrec.cli import main

main()
