"""A generator trained with ``diffusion.prediction=v`` (plus min-SNR weighting and zero terminal SNR)
through the CLI: the run records the objective, and ``sample``, ``translate`` and ``augment`` sample it
as a v-network without the option being repeated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.config import SampleConfig, load_recipe
from odmaug.diffusion import NoiseSchedule, generate, load_generator
from odmaug.runs import open_run

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
OBJECTIVE = ["diffusion.prediction=v", "diffusion.zero_terminal_snr=true", "diffusion.snr_gamma=5"]


def invoke(*args: str):
    return CliRunner().invoke(app, [*args])


@pytest.fixture(scope="module")
def v_run(tmp_path_factory) -> Path:
    """The smoke generator (ODM, gamma 1) trained 4 steps as a v-prediction network, through the CLI."""
    runs = tmp_path_factory.mktemp("runs")
    sets = [a for o in [*OBJECTIVE, "train.sample_every=1000"] for a in ("--set", o)]
    result = invoke("train-generator", "--recipe", str(SMOKE), "--runs-dir", str(runs), *sets)
    assert result.exit_code == 0, result.output
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def test_the_run_records_the_objective_and_trains_on_it(v_run):
    diffusion = open_run(v_run).recipe().diffusion
    assert (diffusion.prediction, diffusion.zero_terminal_snr, diffusion.snr_gamma) == ("v", True, 5.0)
    logged = open_run(v_run).read_log("train")
    assert len(logged) == 4 and all(np.isfinite(r["loss"]) for r in logged)
    assert any(r["l_ord"] > 0 for r in logged)  # the ordinal term ran, on eps converted from v
    assert (v_run / "generator" / "samples").is_dir()  # the end-of-training grid sampled the v-network


def test_a_loaded_generator_samples_as_a_v_network(v_run):
    gen = load_generator(v_run, device="cpu")
    assert gen.schedule.prediction == "v" and gen.schedule.zero_terminal_snr
    explicit = NoiseSchedule.from_config(load_recipe(SMOKE, OBJECTIVE).diffusion)
    assert torch.equal(gen.schedule.alphas_cumprod, explicit.alphas_cumprod)
    kw = SampleConfig(sampler="ddim", steps=5, guidance_scale=2.0, precision="fp32")
    images = generate(gen.model, gen.schedule, [0, 4], [0, 1], kw)
    assert torch.equal(images, generate(gen.model, explicit, [0, 4], [0, 1], kw)) and bool(torch.isfinite(images).all())


def test_cli_sample_translate_and_augment_a_v_generator(v_run, tmp_path):
    for sampler in ("ddim", "ddpm", "unipc"):
        out = tmp_path / f"{sampler}.png"
        result = invoke("sample", "--run", str(v_run), "--per-grade", "1", "--out", str(out), "--sampler", sampler,
                        "--steps", "5", "--seed", "0")
        assert result.exit_code == 0, result.output
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    result = invoke("translate", "--run", str(v_run), "--image", str(image), "--grades", "0-4", "--out",
                    str(tmp_path / "strip.png"), "--steps", "2", "--invert")
    assert result.exit_code == 0, result.output
    out = tmp_path / "syn"
    result = invoke("augment", "--run", str(v_run), "--target-class", "4", "--n", "2", "--out", str(out),
                    "--steps", "2", "--no-grid")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out / "manifest.csv")) == 2


def test_generator_store_keys_change_only_when_an_objective_is_set(smoke_recipe_path):
    from odmaug.benchmark.store import LATER_DIFFUSION_OPTIONS, generator_key
    from odmaug.config import SampleConfig, load_recipe
    from odmaug.digest import json_digest

    recipe = load_recipe(smoke_recipe_path)
    settings = recipe.to_dict()
    parts = {k: settings[k] for k in ("data", "generator", "diffusion", "train", "seed")}
    parts["data"].pop("data_dir", None)
    parts["train"].pop("steps", None)
    for option in LATER_DIFFUSION_OPTIONS:
        parts["diffusion"].pop(option)
    assert generator_key(recipe) == json_digest(parts, 12)  # the key of generators stored before the options
    assert generator_key(load_recipe(smoke_recipe_path, ["diffusion.prediction=v"])) != generator_key(recipe)
    assert generator_key(load_recipe(smoke_recipe_path, ["diffusion.snr_gamma=5"])) != generator_key(recipe)
