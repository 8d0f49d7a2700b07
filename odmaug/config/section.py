"""The base of every recipe section and the one-line form of a validation error."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated, and no
    number may be infinite or NaN (``--guidance-scale inf`` once wrote all-black images)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def validation_line(err: ValidationError, origin: str) -> str:
    """The first error of ``err`` as one line: ``<origin>: <section.key>: <message> (got <value>)``,
    or ``<origin>: unknown key '<key>' in section '<section>'``."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if first["type"] == "extra_forbidden":
        key, section = loc[-1], ".".join(loc[:-1]) or "top level"
        return f"{origin}: unknown key '{key}' in section '{section}'"
    where = ".".join(loc) or "recipe"
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
    return f"{origin}: {where}: {msg}{shown}"
