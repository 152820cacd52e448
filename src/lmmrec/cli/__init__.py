"""The ``lmmrec`` command line. ``main`` is the console-script entry point.

Each command group lives in its own module (``main.py``: demo, train, evaluate, models, dataset;
further groups are added to ``app`` in :mod:`lmmrec.cli.main`) and is a thin layer over the API.
"""

from lmmrec.cli.main import app, main

__all__ = ["app", "main"]
