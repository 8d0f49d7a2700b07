"""Grade translation (SDEdit): the strength -> t0 mapping, its two limits, ``augment --from-real``
(training-split sources only, determinism, resume, refusals) and ``odmaug translate``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from odmaug.augment import SynthesisRequest, run_synthesis
from odmaug.config import SampleConfig, merge_options
from odmaug.augment.from_real import FromReal, parse_source_grades
from odmaug.cli import app
from odmaug.data import load_table, to_uint8
from odmaug.diffusion import generate, load_generator
from odmaug.diffusion.translate import start_timestep, translate, translation_timesteps
from odmaug.errors import OdmaugError
from odmaug.runs import open_run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
FAST = SampleConfig(sampler="ddim", steps=4, eta=0.0, guidance_scale=2.0, precision="fp32")



def invoke(*args: str):
    return CliRunner().invoke(app, [*args])


def test_strength_maps_to_start_timestep():
    assert start_timestep(0.6, 100) == 60
    assert start_timestep(1.0, 100) == 99  # the last index of a 100-step schedule
    assert start_timestep(0.0, 100) == -1
    with pytest.raises(OdmaugError):
        start_timestep(1.5, 100)
    assert parse_source_grades("auto", [0, 2, 4], np.array([5, 5, 0, 5, 5])) == {0: [1], 2: [1, 3], 4: [3]}
    with pytest.raises(OdmaugError, match="no images of grade 2"):
        parse_source_grades("2", [4], np.array([5, 5, 0, 5, 5]))


def test_strength_limits_source_and_generation(smoke_run):
    gen = load_generator(smoke_run, device="cpu")
    steps = translation_timesteps(gen.schedule, 0.6, 10)
    assert steps[0] <= 60 and steps == sorted(steps, reverse=True)
    source = torch.rand(8, 3, gen.image_size, gen.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels, seeds = [4] * 8, list(range(8))
    settings = SampleConfig(steps=5, guidance_scale=2.0, precision="fp32")
    assert torch.equal(translate(gen.model, gen.schedule, source, labels, seeds, 0.0, settings), source)
    near = translate(gen.model, gen.schedule, source, labels, seeds, 0.01, settings)  # t0 = 1: one tiny step
    assert (to_uint8(near).int() - to_uint8(source).int()).abs().float().mean() < 8
    full = translate(gen.model, gen.schedule, source, labels, seeds, 1.0, settings)
    noise = generate(gen.model, gen.schedule, labels, seeds, merge_options(settings, batch_size=8))
    assert torch.equal(to_uint8(full), to_uint8(noise))


class ConstantEps(torch.nn.Module):
    """An eps network that ignores its input: DDIM inversion then denoising must give the source back."""

    num_classes = 5

    def forward(self, x, t, labels):
        return torch.full_like(x, 0.3)


def test_ddim_inversion_reconstructs_and_ignores_the_seed(smoke_run):
    gen = load_generator(smoke_run, device="cpu")
    source = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    exact = SampleConfig(guidance_scale=1.0, precision="fp32")
    back = translate(ConstantEps(), gen.schedule, source, [0, 4], [0, 1], 0.6, merge_options(exact, steps=10),
                     invert=True)
    assert torch.allclose(back, source, atol=1e-4)
    x0 = torch.zeros(2, 3, gen.image_size, gen.image_size)
    one = translate(gen.model, gen.schedule, x0, [4, 4], [0, 1], 0.6, merge_options(exact, steps=4), invert=True)
    two = translate(gen.model, gen.schedule, x0, [4, 4], [7, 9], 0.6, merge_options(exact, steps=4), invert=True)
    assert torch.equal(one, two)


def _train_paths(run: Path) -> set[str]:
    return set(load_table(open_run(run).recipe().data).split("train").paths)


def test_from_real_sources_determinism_and_resume(smoke_run, tmp_path):
    real = FromReal(0.6, "auto")
    a = run_synthesis(SynthesisRequest(smoke_run, tmp_path / "a", [0, 4], 5, settings=FAST, from_real=real),
                      device="cpu", show_progress=False)
    frame = pd.read_csv(a.manifest)
    assert len(frame) == 10 and set(frame["strength"]) == {0.6}
    assert set(frame["source_path"]) <= _train_paths(smoke_run)  # never a val/test image
    labels = load_table(open_run(smoke_run).recipe().data).frame.set_index("path")["label"]
    assert set(labels[frame[frame.label == 4].source_path]) == {3}  # auto: the next grade
    assert set(labels[frame[frame.label == 0].source_path]) == {1}
    # the same images, whatever the batch size; a rerun adds nothing
    b = run_synthesis(SynthesisRequest(smoke_run, tmp_path / "b", [0, 4], 5,
                                       settings=merge_options(FAST, batch_size=1), from_real=real),
                      device="cpu", show_progress=False)
    for p in sorted((tmp_path / "a").glob("*/*.png")):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
    assert pd.read_csv(b.manifest)["source_path"].tolist() == frame["source_path"].tolist()
    again = run_synthesis(SynthesisRequest(smoke_run, tmp_path / "a", [0, 4], 5, settings=FAST, from_real=real),
                          device="cpu", show_progress=False)
    assert again.generated == 0 and again.present == 10
    # another strength is another identity: refused without --force
    with pytest.raises(OdmaugError, match="strength"):
        run_synthesis(SynthesisRequest(smoke_run, tmp_path / "a", [0, 4], 5, settings=FAST,
                                       from_real=dataclasses.replace(real, strength=0.5)),
                      device="cpu", show_progress=False)


def test_cli_from_real_and_translate_strip(smoke_run, tmp_path):
    out = tmp_path / "syn"
    result = invoke("augment", "--run", str(smoke_run), "--target-class", "4", "--n", "2", "--out", str(out),
                    "--from-real", "--source-grades", "2,3", "--strength", "0.5", "--steps", "2", "--no-grid")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out / "manifest.csv")) == 2
    image = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    strip = tmp_path / "strip.png"
    result = invoke("translate", "--run", str(smoke_run), "--image", str(image), "--grades", "0-4",
                    "--out", str(strip), "--steps", "2")
    assert result.exit_code == 0, result.output
    with Image.open(strip) as img:
        assert img.format == "PNG" and img.size == (640, 150)  # 6 cells x 0.9 in + 1 in, 100 dpi


@pytest.mark.parametrize("args, message", [
    (["--strength", "0"], "--strength must be in (0, 1]"),
    (["--strength", "1.5"], "--strength must be in (0, 1]"),
    (["--source-grades", "7"], "--source-grades 7 is outside"),
    (["--source-grades", "2"], "no images of grade 2"),
])
def test_bad_from_real_input_is_one_line(smoke_run, tmp_path, monkeypatch, args, message):
    import odmaug.augment.from_real as from_real

    real_load = from_real.load_table

    def without_grade_2(cfg):  # a training split with no image of grade 2
        table = real_load(cfg)
        table.frame = table.frame[~((table.frame["split"] == "train") & (table.frame["label"] == 2))]
        return table

    monkeypatch.setattr(from_real, "load_table", without_grade_2)
    out = tmp_path / "bad"
    result = invoke("augment", "--run", str(smoke_run), "--target-class", "4", "--n", "2", "--out", str(out),
                    "--from-real", *args, "--steps", "2", "--no-grid")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in result.output, result.output
    assert not out.exists()
    bad = invoke("translate", "--run", str(smoke_run), "--image", "x.png", "--out", str(tmp_path / "s.png"),
                 "--strength", "0")
    assert bad.exit_code == 2 and "--strength must be in (0, 1]" in bad.output
