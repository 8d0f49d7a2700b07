"""A network that cannot run at the configured image size says so (one error line) before training
or writing anything; one that can passes the probe unchanged (issue 13, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from odmaug.registry import Entry
from odmaug.classify.models import check_classifier, create_model
from odmaug.cli import app
from odmaug.config import GeneratorConfig
from odmaug.diffusion.unet import GENERATORS, build_generator, unreached_attention
from odmaug.errors import OdmaugError

SMOKE = str(Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml")
runner = CliRunner()


@pytest.mark.parametrize("name", ["convnext_atto", "edgenext_xx_small"])
def test_classifier_too_small_for_16px_names_model_size_and_smallest_size(name):
    # Both downsample by 32 with a 2x2 stride-2 conv: at 16 px it meets a 1x1 map; 24 fails too.
    with pytest.raises(OdmaugError) as info:
        create_model(name, 5, 16)
    message = str(info.value)
    assert message.startswith(f"classifier {name} cannot run on 16x16 px images")
    assert "the smallest size above 16 px it runs at is 32 px" in message
    assert "data.image_size" in message and "\n" not in message
    assert create_model(name, 5, 32) is not None  # the size it names does work


def test_working_classifier_passes_and_probe_leaves_no_trace():
    from odmaug import probe

    rng = torch.get_rng_state()
    check_classifier("test_resnet", 5, 16)
    assert torch.equal(torch.get_rng_state(), rng)  # the pre-check does not shift training's seeds
    probe._PASSED.clear()
    torch.manual_seed(0)
    model = create_model("test_resnet", 5, 16)  # built and probed
    after_probe = torch.get_rng_state()
    torch.manual_seed(0)
    create_model("test_resnet", 5, 16)  # built, probe skipped (this configuration passed)
    assert torch.equal(torch.get_rng_state(), after_probe)  # so probing draws no random numbers
    assert model.training  # eval mode only for the probe, then restored
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 5)


def test_unknown_model_is_still_named():
    with pytest.raises(OdmaugError, match="unknown timm model 'convnext_attoo'.*convnext_atto"):
        check_classifier("convnext_attoo", 5, 32)


def test_train_classifier_cli_refuses_before_writing(tmp_path):
    runs = tmp_path / "runs"
    for extra in ([], ["--out", str(tmp_path / "clf")]):
        result = runner.invoke(app, ["train-classifier", "--recipe", SMOKE, "--runs-dir", str(runs), "--device", "cpu",
                                     "--set", "data.image_size=16", "--set", "classifier.model=convnext_atto", *extra])
        assert result.exit_code == 2, result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("error: classifier convnext_atto cannot run on 16x16 px") and "32 px" in last
        assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # no runs folder, no run folder, no --out folder


def test_benchmark_plan_refuses_a_classifier_that_cannot_run(tmp_path):
    result = runner.invoke(app, ["benchmark", "--recipe", SMOKE, "--runs-dir", str(tmp_path / "runs"),
                                 "--set", "classifier.model=convnext_atto"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: classifier convnext_atto cannot run on 16x16")
    assert not (tmp_path / "runs").exists()


def test_unet_size_rule_is_named_with_the_nearest_sizes(tmp_path):
    with pytest.raises(OdmaugError) as info:
        build_generator(GeneratorConfig(base_channels=8, channel_mult=[1, 2, 2, 2]), 5, 28)
    assert "image size 28 is not divisible by 2^3 = 8" in str(info.value)
    assert "use 24 px or 32 px, or fewer levels" in str(info.value)
    result = runner.invoke(app, ["train-generator", "--recipe", SMOKE, "--runs-dir", str(tmp_path / "runs"),
                                 "--set", "data.image_size=20", "--set", "generator.channel_mult=[1,2,2,2]"])
    assert result.exit_code == 2, result.output
    assert "not divisible by 2^3 = 8" in result.output.strip().splitlines()[-1] and "16 px or 24 px" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


class _NeedsTwentyFour(nn.Module):
    """A generator whose 24x24 pooling window does not fit inputs under 24 px."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return x * F.avg_pool2d(x, 24).mean()


def test_any_generator_that_fails_its_forward_pass_names_the_smallest_size(monkeypatch):
    monkeypatch.setitem(GENERATORS._entries, "picky", Entry("picky", lambda cfg, num_classes, size, channels: _NeedsTwentyFour(), ""))
    with pytest.raises(OdmaugError) as info:
        build_generator(GeneratorConfig(name="picky"), 5, 16)
    message = str(info.value)
    assert message.startswith("generator 'picky' cannot run on 16x16 px images (RuntimeError:")
    assert "the smallest size above 16 px it runs at is 24 px (set data.image_size)" in message
    assert isinstance(build_generator(GeneratorConfig(name="picky"), 5, 24), _NeedsTwentyFour)


def test_unet_attention_resolutions_that_never_occur_are_reported():
    cfg = GeneratorConfig(base_channels=8, channel_mult=[1, 2, 2, 2], attention_resolutions=[16])
    note = unreached_attention(cfg, 24)
    assert note is not None and "[16]" in note and "[24, 12, 6, 3]" in note
    assert unreached_attention(cfg, 32) is None
