"""``odmaug train-generator`` and ``odmaug sample`` end to end on the smoke recipe."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from odmaug.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def test_train_resume_and_sample(tmp_path, smoke_recipe_path):
    result = runner.invoke(app, ["train-generator", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path),
                                 "--set", "train.grid_per_grade=2"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "00000-smoke"
    assert str(run) in result.output and "img/s" in result.output
    grids = sorted((run / "generator" / "samples").glob("grid-*.png"))
    assert [g.name for g in grids] == ["grid-00000002.png", "grid-00000004.png"]
    assert grids[-1].read_bytes()[:8] == PNG
    pointer = json.loads((run / "generator" / "checkpoint.json").read_text())
    assert pointer["step"] == 4 and len(list((run / "generator").glob("step-*"))) == 1
    events = [json.loads(line)["event"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert events.count("train") == 4 and "train_start" in events and "train_end" in events

    result = runner.invoke(app, ["train-generator", "--resume", str(run), "--set", "train.steps=5",
                                 "--set", "train.grid_per_grade=2"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "generator" / "checkpoint.json").read_text())["step"] == 5
    assert "steps: 5" in (run / "config.yaml").read_text()

    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", "--run", str(run), "--per-grade", "2", "--out", str(out),
                                 "--sampler", "ddim", "--steps", "3", "--guidance", "2", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG and "10 images (2 per grade)" in result.output
    result = runner.invoke(app, ["sample", "--run", str(run), "--per-grade", "1", "--out", str(tmp_path / "raw.png"),
                                 "--sampler", "ddpm", "--steps", "4", "--no-ema"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "raw.png").is_file()


def test_cli_errors_are_one_line(tmp_path, smoke_recipe_path):
    cases = [
        (["sample", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")], "run folder not found"),
        (["train-generator", "--recipe", str(smoke_recipe_path), "--resume", str(tmp_path)], "either --recipe"),
        (["train-generator", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path),
          "--set", "diffusion.ordinal.mode=sideways"], "diffusion.ordinal.mode"),
        (["train-generator", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path),
          "--set", "train.precision=fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
        (["train-generator", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path),
          "--set", "generator.channel_mult=[1,1,1,1,1,1]"], "not divisible"),
        (["train-generator", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path),
          "--set", "sample.steps=500"], "exceeds diffusion.timesteps"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], (args, result.output)
        assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # a refused recipe leaves no run folder behind
    # a run folder without a checkpoint
    empty = tmp_path / "00001-empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((smoke_recipe_path).read_text())
    result = runner.invoke(app, ["sample", "--run", str(empty), "--out", str(tmp_path / "y.png")])
    assert result.exit_code == 2 and "no generator checkpoint" in result.output
    assert not (tmp_path / "y.png").exists()
