"""How settings from outside a recipe file reach it: ``--set section.key=value`` strings, and
command-line options (or keyword arguments) by the one rule of :func:`merge_options`."""

from __future__ import annotations

import copy
import os
import re
from typing import Any, Optional, TypeVar

import yaml
from pydantic import ValidationError

from odmaug.config.section import Section, validation_line
from odmaug.errors import OdmaugError

S = TypeVar("S", bound=Section)

_BOUNDS = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most"),
           "greater_than": ("gt", "above"), "less_than": ("lt", "below")}


def merge_options(settings: S, section: Optional[str] = None, /, **options: Any) -> S:
    """``settings`` with every option that is not None set in it, validated as a whole.

    The one rule by which command-line options and keyword arguments override a recipe: None means
    "not given", so the recipe's value stays (the convention of EDM's ``generate.py`` and timm's
    ``create_model``, which drop unset options). ``settings`` itself is not changed.

    Args:
        settings: a :class:`~odmaug.config.Recipe` or one of its sections.
        section: dotted path of the section inside ``settings`` that takes the options
            (``"sample"``, ``"data"``); None: ``settings`` itself.
        options: field name -> value; a path (``os.PathLike``) becomes its string.

    Returns:
        A new object of the type of ``settings`` (``settings`` itself when every option is None).

    Raises:
        OdmaugError: a value the section refuses, as one line naming the option the way the command
            line spells it, e.g. ``--steps must be at least 1 (got 0)``.
    """
    given = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items() if v is not None}
    if not given:
        return settings
    raw = settings.model_dump()
    node = raw
    for part in section.split(".") if section else []:
        node = node[part]
    node.update(given)
    try:
        return type(settings).model_validate(raw)
    except ValidationError as err:
        raise OdmaugError(_option_line(err, given)) from None


def _option_line(err: ValidationError, given: dict[str, Any]) -> str:
    """``--<option> <reason> (got <value>)`` for an error on a given option; else the recipe's line."""
    first = err.errors()[0]
    name = str(first["loc"][-1]) if first["loc"] else ""
    if name not in given:
        return validation_line(err, "options")
    ctx = first.get("ctx") or {}
    if first["type"] in _BOUNDS:
        key, words = _BOUNDS[first["type"]]
        reason = f"must be {words} {ctx.get(key)}"
    elif first["type"] == "literal_error":  # a name: say it is unknown, then the known ones
        known = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"unknown {name.replace('_', ' ')} {given[name]!r}: --{name.replace('_', '-')} must be one of {known}"
    elif first["type"] == "finite_number":
        reason = "must be a finite number"
    else:
        reason = first["msg"].removeprefix("Value error, ")
    return f"--{name.replace('_', '-')} {reason} (got {given[name]!r})"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` into a key path and a YAML-typed value."""
    if "=" not in text:
        raise OdmaugError(f"--set expects section.key=value, got '{text}'")
    key, raw = text.split("=", 1)
    path = [p.strip() for p in key.split(".") if p.strip()]
    if not path:
        raise OdmaugError(f"--set expects section.key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``section.key=value`` override applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise OdmaugError(f"--set {text}: '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return out
