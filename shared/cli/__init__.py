"""The ``pmo`` command line: run the system locally, operate it, talk to it."""

from shared.cli.main import main

__all__ = ["main"]
