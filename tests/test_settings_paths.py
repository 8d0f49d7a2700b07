"""Each setting has one home: a command-line value is merged onto its recipe section once, in the
commands layer, and reaches its use unchanged (issue 26, item 2)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.config import AugmentConfig, SampleConfig, load_recipe


def invoke(*args: str):
    return CliRunner().invoke(app, [*args])


def _command(name: str, run, tmp_path) -> list[str]:
    """A small call of command ``name`` (sample, augment or translate) on ``run``."""
    if name == "sample":
        return ["sample", "--run", str(run), "--out", str(tmp_path / "grid.png"), "--per-grade", "1"]
    if name == "augment":
        return ["augment", "--run", str(run), "--target-class", "4", "--n", "1", "--out", str(tmp_path / "syn"),
                "--no-grid"]
    from PIL import Image

    Image.new("RGB", (32, 32), (90, 90, 90)).save(tmp_path / "x.png")
    return ["translate", "--run", str(run), "--image", str(tmp_path / "x.png"), "--grades", "0,4",
            "--out", str(tmp_path / "strip.png")]


@pytest.mark.parametrize("command", ["sample", "augment", "translate"])
def test_a_cli_guidance_scale_is_merged_once_and_reaches_guided_eps_unchanged(smoke_run, tmp_path, monkeypatch,
                                                                              command):
    import odmaug.diffusion.sampling as sampling

    scales, merges = [], []
    real_guided, real_validate = sampling.guided_eps, SampleConfig.model_validate.__func__

    def guided(model, x, t, labels, guidance_scale, null_label):
        scales.append(guidance_scale)
        return real_guided(model, x, t, labels, guidance_scale, null_label)

    def validate(cls, raw, *args, **kwargs):  # merge_options validates a merged section through here
        if isinstance(raw, dict) and raw.get("guidance_scale") == 3.25:
            merges.append(raw)
        return real_validate(cls, raw, *args, **kwargs)

    monkeypatch.setattr(sampling, "guided_eps", guided)
    monkeypatch.setattr(SampleConfig, "model_validate", classmethod(validate))
    result = invoke(*_command(command, smoke_run, tmp_path), "--steps", "2", "--guidance-scale", "3.25",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(merges) == 1  # merged onto the run's sample section exactly once
    assert scales and set(scales) == {3.25}  # every step's guidance is the option's value, unchanged


def test_library_calls_without_settings_use_the_recipe_defaults():
    import inspect

    from odmaug.diffusion.sampling import generate, sample
    from odmaug.diffusion.translate import translate

    for fn in (sample, generate, translate):
        params = inspect.signature(fn).parameters
        assert params["settings"].default is None  # None: SampleConfig(), the recipe's defaults
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values())  # no loose **options
    assert SampleConfig().guidance_scale == load_recipe(None).sample.guidance_scale == 2.0


def test_strength_has_one_home_default_and_check(smoke_recipe_path):
    assert AugmentConfig().strength == load_recipe(None).augment.strength == 0.6
    for bad in ("augment.strength=0", "augment.strength=1.5", "benchmark.translate.strengths=[0.5, 0]"):
        with pytest.raises(Exception, match=r"must be in \(0, 1\]"):
            load_recipe(smoke_recipe_path, [bad])


def test_augment_from_real_and_translate_use_the_recipes_strength(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["augment"]["strength"] = 0.45
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "syn"
    result = invoke("augment", "--run", str(run), "--target-class", "4", "--n", "1", "--out", str(out),
                    "--from-real", "--steps", "2", "--no-grid", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out / "manifest.csv")["strength"]) == {0.45}
    given = invoke("augment", "--run", str(run), "--target-class", "4", "--n", "1", "--out", str(tmp_path / "b"),
                   "--from-real", "--strength", "0.3", "--steps", "2", "--no-grid", "--device", "cpu")
    assert given.exit_code == 0, given.output
    assert set(pd.read_csv(tmp_path / "b" / "manifest.csv")["strength"]) == {0.3}  # the option wins for one call
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (90, 90, 90)).save(image)
    strip = invoke("translate", "--run", str(run), "--image", str(image), "--grades", "0,4",
                   "--out", str(tmp_path / "strip.png"), "--steps", "2", "--device", "cpu")
    assert strip.exit_code == 0, strip.output
    assert "strength 0.45" in strip.output
