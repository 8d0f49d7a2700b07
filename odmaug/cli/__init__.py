"""Command-line interface: ``odmaug <command>``; see ``odmaug --help``."""

from __future__ import annotations

import importlib
import pkgutil

from odmaug.cli.app import app

# Each cmd_*.py module registers its commands on import.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")):
    importlib.import_module(f"{__name__}.{_module}")


def main() -> None:
    """Entry point of the ``odmaug`` console script."""
    app()


__all__ = ["app", "main"]
