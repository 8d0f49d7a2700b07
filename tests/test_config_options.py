"""The one option-merge rule (``merge_options``: None keeps the recipe's value), the one image-size
rule (``Recipe.image_size``), the shared CLI option groups, and ``odmaug.config`` as a package."""

from __future__ import annotations

from pathlib import Path

import pytest

from odmaug.config import Recipe, SampleConfig, load_recipe, merge_options
from odmaug.errors import OdmaugError

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"


def test_none_keeps_the_recipe_value_and_the_input_is_not_changed():
    recipe = load_recipe(SMOKE)
    merged = merge_options(recipe, "sample", steps=3, guidance_scale=None, use_ema=False)
    assert (merged.sample.steps, merged.sample.guidance_scale, merged.sample.use_ema) == (3, 2.0, False)
    assert recipe.sample.steps == 5 and recipe.sample.use_ema  # untouched
    assert merge_options(recipe, "sample", steps=None) is recipe
    top = merge_options(recipe, device="cpu", seed=None)
    assert top.device == "cpu" and top.seed == recipe.seed and top.name == recipe.name
    assert merge_options(recipe, "data", data_dir=Path("/x/y")).data.data_dir == "/x/y"  # paths become strings


@pytest.mark.parametrize("options, message", [
    (dict(steps=0), "--steps must be at least 1 (got 0)"),
    (dict(eta=1.5), "--eta must be at most 1.0 (got 1.5)"),
    (dict(timestep_spacing="uniform"), "unknown timestep spacing 'uniform': --timestep-spacing must be one of "
                                       "trailing, leading, linspace"),
])
def test_a_refused_option_is_one_line_naming_it(options, message):
    with pytest.raises(OdmaugError) as err:
        merge_options(SampleConfig(), **options)
    assert str(err.value) == message


def test_a_cross_field_error_names_the_section():
    with pytest.raises(OdmaugError, match="data.val_fraction \\+ data.test_fraction must be below 1"):
        merge_options(Recipe(), "data", val_fraction=0.9)


def test_one_image_size_rule():
    recipe = Recipe()
    assert recipe.image_size() == recipe.image_size("classifier") == recipe.image_size("metrics") == 32
    sized = merge_options(merge_options(recipe, "classifier", image_size=64), "metrics", image_size=48)
    assert (sized.image_size("data"), sized.image_size("classifier"), sized.image_size("metrics")) == (32, 64, 48)
    assert sized.image_size("generator") == 32  # a section without its own size: the data's
    with pytest.raises(OdmaugError, match="no recipe section"):
        recipe.image_size("nope")


def test_pixel_settings_are_the_synthesis_identity_fields():
    assert list(SampleConfig().pixel_settings()) == ["sampler", "steps", "eta", "guidance_scale", "clip_x0",
                                                       "precision", "timestep_spacing"]


def test_every_name_still_imports_from_odmaug_config():
    import odmaug.config as config

    for name in ("DataConfig", "DiffusionConfig", "GeneratorConfig", "MetricsConfig", "OrdinalConfig", "Recipe",
                 "SampleConfig", "TrainConfig", "AugmentConfig", "ClassifierConfig", "BenchmarkConfig",
                 "SyntheticDataConfig", "Section", "dump_recipe", "load_recipe", "recipe_from_dict",
                 "apply_overrides", "parse_override", "merge_options"):
        assert hasattr(config, name), name


def test_grouped_cli_options_reach_the_command_as_one_value():
    import typer
    from typer.testing import CliRunner

    from odmaug.cli.options import RecipeOptions, recipe_options, sample_options

    seen = {}
    local = typer.Typer()

    @local.command()
    @recipe_options("recipe", "overrides", "device")
    @sample_options("steps", "guidance_scale", "use_ema")
    def show(options: RecipeOptions, sample: dict, extra: int = 1) -> None:
        seen.update(options=options, sample=sample, extra=extra, cfg=options.load())

    result = CliRunner().invoke(local, ["--recipe", str(SMOKE), "--set", "sample.steps=7", "--device", "cpu",
                                        "--guidance", "1.5", "--no-ema", "--extra", "3"])
    assert result.exit_code == 0, result.output
    assert seen["sample"] == {"steps": None, "guidance_scale": 1.5, "use_ema": False} and seen["extra"] == 3
    assert seen["cfg"].sample.steps == 7 and seen["cfg"].device == "cpu" and seen["cfg"].name == "smoke"
