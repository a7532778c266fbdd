"""The ``compozy`` command line: ``init`` and ``migrate up|down|status``."""

from compozy.cli.main import main

__all__ = ["main"]
