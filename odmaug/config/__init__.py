"""Typed recipes: strict YAML loading, validation, ``--set section.key=value`` overrides and the
one option-merge rule (:func:`merge_options`).

One module per group of sections; every name is importable from ``odmaug.config``.
"""

from odmaug.config.data import DataConfig, SyntheticDataConfig
from odmaug.config.evaluation import BenchmarkConfig, ClassifierConfig, MetricsConfig
from odmaug.config.generator import DiffusionConfig, GeneratorConfig, OrdinalConfig, TrainConfig
from odmaug.config.options import apply_overrides, merge_options, parse_override
from odmaug.config.recipe import Recipe, dump_recipe, load_recipe, recipe_from_dict
from odmaug.config.sampling import AugmentConfig, SampleConfig, Strength, check_strength
from odmaug.config.section import Section, validation_line

__all__ = [
    "AugmentConfig",
    "BenchmarkConfig",
    "ClassifierConfig",
    "DataConfig",
    "DiffusionConfig",
    "GeneratorConfig",
    "MetricsConfig",
    "OrdinalConfig",
    "Recipe",
    "SampleConfig",
    "Section",
    "Strength",
    "SyntheticDataConfig",
    "TrainConfig",
    "apply_overrides",
    "check_strength",
    "dump_recipe",
    "load_recipe",
    "merge_options",
    "parse_override",
    "recipe_from_dict",
    "validation_line",
]
