"""User-facing errors: one clear line, a non-zero exit code, never a traceback."""

from __future__ import annotations


class OdmaugError(Exception):
    """An error caused by the user's input (a path, a recipe, a file, a value).

    The CLI prints ``error: <message>`` on one line and exits with code 2. Library callers
    can catch it like any exception.
    """

    exit_code = 2


class MissingDataError(OdmaugError):
    """A dataset or weights file could not be found, and could not (or may not) be downloaded."""
