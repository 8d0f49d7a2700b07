"""``--log tensorboard`` (issue 30 item 3): the generator's losses (l_dm and l_ord apart), learning rate,
throughput and EMA sample grids, and the classifier's train loss and val QWK per epoch, read back with
TensorBoard's own reader; log.jsonl stays the source of truth."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from odmaug.cli import app

pytest.importorskip("tensorboard")  # the optional extra odmaug[tensorboard]; part of [dev]
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"


@pytest.fixture(autouse=True)
def _tensorboard_off_afterwards():
    """``--log`` sets a per-process switch (one command per process in real use): leave it off for later tests."""
    yield
    from odmaug import tensorboard

    tensorboard.use(None)
    tensorboard.close_all()


def _events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_training_writes_tensorboard_events_that_match_the_jsonl_log(tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["train-generator", "--recipe", str(SMOKE), "--runs-dir", str(tmp_path), "--log",
                               "tensorboard", "--set", "train.steps=4", "--set", "train.sample_every=2"])
    assert done.exit_code == 0, done.output
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    events = _events(run)
    tags = events.Tags()
    assert {"train/l_dm", "train/l_ord", "train/loss", "train/lr", "train/images_per_second"} <= set(tags["scalars"])
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [r for r in logged if r["event"] == "train"]
    assert [e.step for e in events.Scalars("train/l_dm")] == [r["step"] for r in train]
    assert [e.value for e in events.Scalars("train/l_ord")] == pytest.approx([r["l_ord"] for r in train], rel=1e-6)
    grids = [r["step"] for r in logged if r["event"] == "sample_grid"]
    assert "samples/ema_grid" in tags["images"] and [e.step for e in events.Images("samples/ema_grid")] == grids

    out = tmp_path / "clf"
    done = runner.invoke(app, ["train-classifier", "--recipe", str(SMOKE), "--out", str(out), "--log", "tensorboard",
                               "--set", "classifier.epochs=2"])
    assert done.exit_code == 0, done.output
    history = json.loads((out / "metrics.json").read_text())["history"]
    events = _events(out)
    assert [e.value for e in events.Scalars("classifier/val_qwk")] == pytest.approx([h["val_qwk"] for h in history])
    assert [e.step for e in events.Scalars("classifier/train_loss")] == [1, 2]


def test_without_the_option_nothing_is_written_and_bad_values_are_one_line(tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["train-classifier", "--recipe", str(SMOKE), "--out", str(tmp_path / "c"),
                               "--set", "classifier.epochs=1"])
    assert done.exit_code == 0 and not (tmp_path / "c" / "tensorboard").exists()
    bad = runner.invoke(app, ["train-classifier", "--recipe", str(SMOKE), "--out", str(tmp_path / "d"), "--log", "wandb"])
    assert bad.exit_code == 2 and "--log must be one of jsonl, tensorboard (got 'wandb')" in bad.output
    assert not (tmp_path / "d").exists()
