"""The whole pipeline at one channel: the built-in radiograph-like set (recipes/smoke-gray.yaml).

The smoke benchmark trains 1-channel generators and classifiers, writes grayscale PNGs and
reports finite metrics; the set itself is deterministic and its grade is anatomy (the joint space).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.config import load_recipe
from odmaug.data import load_table, load_uint8
from odmaug.data.pixels import PixelFormat
from odmaug.data.radiograph import draw_radiograph

GRAY = Path(__file__).resolve().parents[1] / "recipes" / "smoke-gray.yaml"


def test_the_radiograph_set_is_deterministic_gray_and_its_joint_narrows_with_grade():
    a, b = draw_radiograph(3, 5, 48, seed=0, index=7), draw_radiograph(3, 5, 48, seed=0, index=7)
    assert a.shape == (48, 48, 1) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, draw_radiograph(3, 5, 48, seed=1, index=7))

    def gap(image):  # rows across the middle darker than halfway from soft tissue (~64) to bone (~158)
        return int((image[12:36, 20:28, 0].mean(axis=1) < 110).sum())

    gaps = [np.mean([gap(draw_radiograph(g, 5, 48, 0, i)) for i in range(8)]) for g in range(5)]
    assert all(x > y for x, y in zip(gaps, gaps[1:])), gaps


def test_the_gray_recipe_resolves_one_channel_and_prepares_one_channel(capsys):
    recipe = load_recipe(GRAY)
    table = load_table(recipe.data)
    assert table.pixel_format() == PixelFormat(1, 8)
    assert "1 channel (grayscale), 8-bit levels (data.channels: auto" in capsys.readouterr().err
    assert load_uint8(table.split("val"), 16).shape[1] == 1
    colour = load_table(recipe.data.model_copy(update={"channels": 3}))
    assert load_uint8(colour.split("val"), 16).shape[1] == 3  # the same set, repeated to RGB when asked


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~40 s on an idle 2-core machine
def test_smoke_gray_benchmark_runs_end_to_end_at_one_channel(tmp_path):
    args = ["benchmark", "--recipe", str(GRAY), "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--set", "classifier.epochs=3", "--set", "benchmark.arms=[real, dm, odm]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    bench = next((tmp_path / "runs").glob("*-benchmark-smoke-gray"))
    store = tmp_path / "runs" / "store"

    generators = sorted(store.glob("generator-*/generator"))
    assert len(generators) == 2
    for gen in generators:
        pointer = json.loads((gen / "checkpoint.json").read_text())
        assert pointer["pixels"] == {"channels": 1, "bits": 8}
        weights = load_file(str(gen / pointer["folder"] / "ema.safetensors"))
        assert weights["stem.weight"].shape[1] == 1 and weights["out_conv.weight"].shape[0] == 1

    pngs = sorted(store.glob("generator-*/**/*.png"))
    samples = [p for p in pngs if p.parent.name.isdigit()]
    assert samples and {Image.open(p).mode for p in samples} == {"L"}

    classifiers = sorted(p.parent for p in store.rglob("classifier.json"))
    metas = [json.loads((c / "classifier.json").read_text()) for c in classifiers]
    assert metas and {m["channels"] for m in metas} == {1} and {len(m["mean"]) for m in metas} == {1}
    for folder in classifiers:  # timm's test_resnet built with in_chans=1
        assert load_file(str(folder / "model.safetensors"))["conv1.0.weight"].shape[1] == 1

    results = json.loads((bench / "results.json").read_text())
    for arm, data in results["arms"].items():
        for record in data["seeds"].values():
            for key in ("qwk", "accuracy", "macro_f1", "balanced_accuracy"):
                assert math.isfinite(record[key]), (arm, key)
    for gen in results["generators"].values():
        overall = gen["metrics"]["domain"]["overall"]
        assert math.isfinite(overall["fid"]) and math.isfinite(overall["kid_mean"]) and 0 <= overall["precision"] <= 1
    assert (bench / "report" / "report.md").is_file()


def test_inception_sees_gray_as_three_equal_channels_and_a_gray_classifier_sees_one(tmp_path):
    import torch

    from odmaug.classify.features import load_classifier_features
    from odmaug.classify.models import ClassifierMeta, create_model, save_classifier
    from odmaug.config import MetricsConfig
    from odmaug.metrics.features import build_extractor
    from odmaug.metrics.inception import save_random_inception_weights

    weights = save_random_inception_weights(tmp_path / "inception.safetensors", seed=0)
    inception = build_extractor("inception", MetricsConfig(inception_weights=str(weights), batch_size=4))
    gray = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    assert torch.equal(inception(gray), inception(gray.repeat(1, 3, 1, 1)))  # torch-fidelity repeats the channel
    assert torch.equal(inception(gray.to(torch.int32).mul(257).to(torch.uint16)), inception(gray))  # 16-bit -> 8

    torch.manual_seed(0)
    model = create_model("test_resnet", 5, 16, channels=1)
    save_classifier(model, ClassifierMeta("test_resnet", 5, 16, (0.449,), (0.226,), channels=1), tmp_path / "clf")
    domain = load_classifier_features(tmp_path / "clf")
    from odmaug.metrics.features import as_extractor

    adapted = as_extractor(domain)
    assert adapted.channels == 1 and adapted(gray).shape == (2, domain.dim)
    rgb = gray.repeat(1, 3, 1, 1)  # equal channels: their luma is the gray image itself
    assert torch.equal(adapted(rgb), adapted(gray))


def test_sixteen_bit_radiographs_train_a_generator_that_writes_sixteen_bit_pngs(tmp_path):
    from odmaug.augment.synthesis import SynthesisRequest, run_synthesis
    from odmaug.config import SampleConfig
    from odmaug.diffusion import load_generator, train_generator
    from odmaug.runs import create_run

    rng = np.random.default_rng(0)
    for grade in range(5):
        (tmp_path / "knees" / str(grade)).mkdir(parents=True)
        for i in range(4):
            base = draw_radiograph(grade, 5, 16, 0, grade * 10 + i)[:, :, 0].astype(np.uint16) * 257
            deep = (base + rng.integers(0, 257, base.shape)).clip(0, 65535).astype(np.uint16)  # levels between 8-bit steps
            Image.fromarray(deep).save(tmp_path / "knees" / str(grade) / f"{i}.png")
    recipe = load_recipe(GRAY, ["data.source=folder", f"data.path={tmp_path / 'knees'}", "data.val_fraction=0",
                                "data.test_fraction=0", "data.min_split_images=0", "train.steps=2",
                                "train.sample_every=1000", f"data.cache_dir={tmp_path / 'cache'}"])
    run = create_run(recipe, tmp_path / "runs")
    train_generator(run, recipe, show_progress=False)
    loaded = load_generator(run.root)
    assert loaded.pixels == PixelFormat(1, 16) and loaded.model.in_channels == 1
    assert run.read_log("train_start")[0]["bits"] == 16
    run_synthesis(SynthesisRequest(run.root, tmp_path / "made", "4", 2,
                                   settings=SampleConfig(sampler="ddim", steps=2, eta=0.0)),
                  device="cpu", show_progress=False)
    made = sorted((tmp_path / "made" / "4").glob("*.png"))
    assert len(made) == 2 and {Image.open(p).mode for p in made} == {"I;16"}
