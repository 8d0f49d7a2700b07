"""A whole recipe (every section) and its YAML file: load, validate, override, dump.

A recipe is a YAML file with one mapping per stage (``data``, ``generator``, ``diffusion``,
``train``, ``sample``, ``augment``, ``classifier``, ``metrics``, ``benchmark``). Every section is a
pydantic model that forbids unknown keys, so a typo is an error that names the key, the section
and the file instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from odmaug.config.data import DataConfig
from odmaug.config.evaluation import BenchmarkConfig, ClassifierConfig, MetricsConfig
from odmaug.config.generator import DiffusionConfig, GeneratorConfig, TrainConfig
from odmaug.config.options import apply_overrides, parse_override
from odmaug.config.sampling import AugmentConfig, SampleConfig
from odmaug.config.section import Section, Seed, validation_line
from odmaug.errors import OdmaugError
from odmaug.yaml_strict import strict_safe_load

SIZED_SECTIONS = ("classifier", "metrics")
"""Sections with their own ``image_size`` (None: ``data.image_size``, the generator's size)."""


class Recipe(Section):
    """A whole recipe: every section with its defaults, plus a name, a seed and a device."""

    name: str = "run"
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)

    @field_validator("name")
    @classmethod
    def _name_is_path_safe(cls, value: str) -> str:
        if not value or any(ch in value for ch in "/\\\0") or value.startswith("."):
            raise ValueError("must be a plain folder name (no slashes, not starting with '.')")
        return value

    @model_validator(mode="after")
    def _sampled_ema_is_kept(self) -> "Recipe":
        # checked with the recipe, so a benchmark does not train a generator whose synthesis then fails
        kept = (self.train.ema_decay, *self.train.ema_decays)
        if self.sample.ema_decay is not None and self.sample.ema_decay not in kept:
            raise ValueError(f"sample.ema_decay {self.sample.ema_decay:g} is an EMA training does not keep: use "
                             f"train.ema_decay ({self.train.ema_decay:g}) or one of train.ema_decays "
                             f"({', '.join(f'{d:g}' for d in self.train.ema_decays) or 'none'})")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-serialisable dict of every setting (defaults included)."""
        return self.model_dump(mode="json")

    def image_size(self, section: str = "data") -> int:
        """The side length (pixels) a stage works at: ``<section>.image_size`` where that section has
        its own and it is set (``classifier``, ``metrics``), else ``data.image_size`` (the images
        as loaded, and the generator's size). The one rule for every stage.

        Raises:
            OdmaugError: ``section`` is not a recipe section.
        """
        if section not in type(self).model_fields:
            raise OdmaugError(f"no recipe section '{section}'")
        own = getattr(self, section).image_size if section in SIZED_SECTIONS else None
        return int(own or self.data.image_size)


def recipe_from_dict(raw: dict[str, Any], origin: str = "recipe", overrides: list[str] | None = None) -> Recipe:
    """Validate a recipe mapping (after overrides); raise OdmaugError with one line on failure."""
    if not isinstance(raw, dict):
        raise OdmaugError(f"{origin}: a recipe must be a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise OdmaugError(validation_line(err, _blamed(err, origin, overrides or []))) from None


def _blamed(err: ValidationError, origin: str, overrides: list[str]) -> str:
    """Where the user should look: ``--set <override>`` when the failing key is one an override
    wrote (the last such, as it won), or an unknown key an override introduced; ``<origin> with
    --set <override>`` when a check over a whole section fails and an override wrote into it
    (either may be at fault); else ``origin`` (the recipe file, or ``defaults``)."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    paths = [(text, [str(p) for p in parse_override(text)[0]]) for text in reversed(overrides)]
    for text, path in paths:
        if loc[:len(path)] == path or (first["type"] == "extra_forbidden" and path[:len(loc)] == loc):
            return f"--set {text}"
    for text, path in paths:
        if loc and path[:len(loc)] == loc:
            return f"{origin} with --set {text}"
    return origin


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe YAML file; ``None`` gives the defaults (plus overrides)."""
    if path is None:
        return recipe_from_dict({}, "defaults", overrides)
    path = Path(path)
    if not path.is_file():
        raise OdmaugError(f"recipe not found: {path}")
    try:
        raw = strict_safe_load(path.read_text(), str(path))  # a repeated key is an error, not last-wins
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise OdmaugError(f"{path}: not valid YAML{where}") from None
    if raw is None or raw == {}:  # it ran the built-in defaults (RetinaMNIST, 10,000 steps) under its name
        raise OdmaugError(f"{path}: the recipe is empty (no settings, only blank lines or comments); "
                          "write its settings, or leave out --recipe for the built-in defaults")
    recipe = recipe_from_dict(raw, str(path), overrides)
    if "name" not in raw and not any(o.split("=", 1)[0].strip() == "name" for o in overrides or []):
        recipe.name = path.stem
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text (every default written out)."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
