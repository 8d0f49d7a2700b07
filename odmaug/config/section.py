"""The base of every recipe section and the one-line form of a validation error."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_serializer

# Upper bounds: a typo such as train.steps=1e23 (an ETA of 6e18 hours) is refused, naming the key.
MAX_STEPS = 10_000_000
"""Optimizer steps (or step intervals): 10 M is ~4 months at one step a second."""
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_IMAGES = 10_000_000
"""Images asked for (per grade, or a set's size)."""
Count = Annotated[int, Field(ge=1, le=1_000_000)]
"""A count or size from 1 to a million (images per grade, a channel multiplier, a map size)."""
Seed = Annotated[int, Field(ge=0, lt=2**63)]
"""A seed: numpy's generators refuse negative ones and torch's take at most 64 bits."""
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
"""A number in [0, 1)."""


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated, and no
    number may be infinite or NaN (``--guidance-scale inf`` once wrote all-black images)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {}
    """Options added after results were stored, with the values those results were made under: at
    that value an option is left out of every dump, so the stage keys hashed over the section
    (odmaug.benchmark.store, odmaug.classify.state) of stored results stay the same."""

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler):
        data = handler(self)
        for name, default in self.LATER_DEFAULTS.items():
            if name in data and data[name] == default:
                del data[name]
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads True as 1: "seed: yes" trained with seed 1 and "epochs: on" for one epoch
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) for v in items) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError("a YAML boolean (yes/no, on/off, true/false) is not a number")
        return value


def _numeric(annotation: Any) -> bool:
    """Whether a field takes numbers and no booleans (bool, a bool literal or Any anywhere in it: no)."""
    def kinds(node: Any) -> set[str]:
        origin = typing.get_origin(node)
        if node is bool:
            return {"bool"}
        if node in (int, float):
            return {"number"}
        if origin is Literal:
            return {"bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else "other"
                    for v in typing.get_args(node)}
        if origin in (Annotated, Union, types.UnionType, list, tuple):
            args = typing.get_args(node)[:1] if origin is Annotated else typing.get_args(node)
            return set().union(*(kinds(a) for a in args if a is not Ellipsis and a is not type(None)))
        return {"bool" if node is Any else "other"}
    found = kinds(annotation)
    return "number" in found and "bool" not in found


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
