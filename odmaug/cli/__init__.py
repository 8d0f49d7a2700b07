"""Command-line interface: ``odmaug <command>``; see ``odmaug --help``."""

from __future__ import annotations

import importlib
import pkgutil

from odmaug.cli.app import app

# Each cmd_*.py module registers its commands on import; --help lists them in pipeline order.
PIPELINE_ORDER = ["cmd_data", "cmd_generator", "cmd_augment", "cmd_translate", "cmd_classify", "cmd_metrics", "cmd_benchmark"]
_found = {m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")}
for _module in [m for m in PIPELINE_ORDER if m in _found] + sorted(_found - set(PIPELINE_ORDER)):
    importlib.import_module(f"{__name__}.{_module}")


def main() -> None:
    """Entry point of the ``odmaug`` console script."""
    app()


__all__ = ["app", "main"]
