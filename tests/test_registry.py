"""One registry shape: unknown names are one line naming the known ones, and a new sampler, data
source or objective is one registration that every caller then finds by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from odmaug.commands.names import check_names
from odmaug.config import DataConfig, SampleConfig, load_recipe
from odmaug.data.sources import DATA_SOURCES, DataSource, load_table
from odmaug.data.table import ImageTable
from odmaug.diffusion import NoiseSchedule, generate
from odmaug.diffusion.parameterization import OBJECTIVES, to_eps
from odmaug.diffusion.samplers import SAMPLERS, Sampler
from odmaug.errors import OdmaugError
from odmaug.registry import Entry, Registry


def test_registry_basics():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1, "first")
    assert reg.register("b")(2) == 2
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2 and reg.get("b") == 2
    assert reg.entry("a").summary == "first"
    with pytest.raises(OdmaugError, match=r"^unknown widget 'c' \(known: a, b\)$"):
        reg.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 3)


def test_every_registry_knows_its_builtins():
    assert SAMPLERS.names() == ["ddim", "ddpm", "dpmpp-2m", "unipc"]
    assert DATA_SOURCES.names() == ["retinamnist", "synthetic", "folder", "manifest"]
    assert OBJECTIVES.names() == ["eps", "v"]
    assert [n for n in SAMPLERS if SAMPLERS.get(n).mid_chain] == ["ddim", "ddpm"]


def test_a_new_sampler_is_one_registration(tiny_unet, monkeypatch, smoke_recipe_path):
    # a deterministic one-step "sampler": the x0 estimate at the first timestep
    def one_step(walk):
        from odmaug.diffusion.ddim import level
        from odmaug.diffusion.parameterization import to_x0

        t = walk.timesteps[0]
        alpha, sigma = level(walk.schedule, t)
        return to_x0(walk.denoiser(walk.x, t), walk.x, alpha, sigma, walk.schedule.prediction).clamp(-1, 1)

    monkeypatch.setitem(SAMPLERS._entries, "one-step", Entry("one-step", Sampler(one_step, False), ""))
    schedule = NoiseSchedule.from_config(load_recipe(smoke_recipe_path).diffusion)
    images = generate(tiny_unet, schedule, [0, 1], [0, 1],
                      SampleConfig(sampler="one-step", steps=3, guidance_scale=1.0, precision="fp32"))
    assert images.shape[0] == 2 and torch.isfinite(images).all() and images.abs().max() <= 1
    recipe = load_recipe(smoke_recipe_path, ["sample.sampler=one-step"])
    assert check_names(recipe) is recipe  # the recipe check finds it too


def test_a_new_data_source_is_one_registration(monkeypatch, smoke_recipe_path):
    base = load_table(load_recipe(smoke_recipe_path).data)

    def reversed_labels(cfg: DataConfig, check_images: bool) -> ImageTable:
        frame = base.frame.assign(label=cfg.num_classes - 1 - base.frame["label"])
        return ImageTable(pd.DataFrame(frame), cfg.num_classes, "reversed")

    entry = Entry("reversed", DataSource(reversed_labels, named=True), "")
    monkeypatch.setitem(DATA_SOURCES._entries, "reversed", entry)
    recipe = check_names(load_recipe(smoke_recipe_path, ["data.source=reversed"]))
    table = load_table(recipe.data)
    assert np.array_equal(table.frame["label"], recipe.data.num_classes - 1 - base.frame["label"])


def test_objective_conversions_agree_with_the_formulas():
    x, out = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a, s = 0.6, 0.8
    assert torch.equal(to_eps(out, x, a, s, "eps"), out)
    assert torch.allclose(to_eps(out, x, a, s, "v"), a * out + s * x)
    with pytest.raises(OdmaugError, match=r"unknown objective 'x0' \(known: eps, v\)"):
        to_eps(out, x, a, s, "x0")
