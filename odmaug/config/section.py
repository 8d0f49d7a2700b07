"""The base of every recipe section and the one-line form of a validation error."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Count = Annotated[int, Field(ge=1)]
"""A count or size that must be at least 1 (images per grade, a channel multiplier, a map size)."""
Seed = Annotated[int, Field(ge=0, lt=2**63)]
"""A seed: numpy's generators refuse negative ones and torch's take at most 64 bits."""
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
"""A number in [0, 1)."""


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
