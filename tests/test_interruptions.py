"""Issue 15: every interruption resumes exactly, and a refused command changes nothing.

* Ctrl-C at any moment of ``train-generator`` (in-process at chosen moments, and a real SIGINT to
  the CLI), then ``--resume``: bitwise the weights, EMA, optimizer and RNG state of a run that was
  never interrupted.
* A run killed before its first checkpoint resumes from step 0.
* A ``--resume`` whose recipe the checkpoint refuses leaves ``config.yaml`` (and the log) as it was.
* A refused ``augment`` (more steps than T) records nothing in its output folder; a retry works.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.config import load_recipe
from odmaug.diffusion import train_generator
from odmaug import train_step
from odmaug.diffusion import checkpointer, trainer
from odmaug.diffusion.checkpoint import read_pointer
from odmaug.runs import create_run
from helpers import assert_same_state, generator_state  # tests/helpers.py

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
# dropout > 0 draws from torch's global RNG, the ordinal term and the batches from the data stream:
# both streams must come back exactly. Checkpoints at 3 and 6, sample grids at 4 and 6.
SETTINGS = ["generator.dropout=0.1", "train.checkpoint_every=3", "train.sample_every=4", "train.log_every=1",
            "train.grid_per_grade=1", "train.ema_warmup=1", "sample.steps=2"]
runner = CliRunner()


def smoke(*overrides: str):
    return load_recipe(SMOKE, [*SETTINGS, *overrides])




@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final state of 6 uninterrupted steps."""
    recipe = smoke("train.steps=6")
    run = create_run(recipe, tmp_path_factory.mktemp("straight"))
    train_generator(run, recipe, show_progress=False)
    return generator_state(run.root)


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in these tests even where the suite itself runs with SIGINT
    ignored (a background job of a non-interactive shell inherits SIG_IGN, and Python keeps it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _sigint_as_default() -> None:
    """In a child process before exec: SIGINT back to its default, so the child's Python turns it
    into KeyboardInterrupt whatever this process inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigint_on_call(monkeypatch, owner, name: str, call: int, after: bool = False) -> None:
    """Send this process SIGINT (what Ctrl-C sends) on the ``call``-th call of ``owner.name``."""
    original, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call and not after:
            signal.raise_signal(signal.SIGINT)
        result = original(*args, **kwargs)
        if len(calls) == call and after:
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(owner, name, wrapper)


MOMENTS = {
    # step 5's batch already drawn from the data stream (the bug: that state went into the checkpoint)
    "after-batch-drawn": (trainer._Trainer, "_batch", 5, True, 4),
    # between optimizer.step() and the EMA update of step 4: held back until step 4 is whole
    "inside-the-update": (train_step.EMA, "update", 4, False, 4),
    # while the step-3 checkpoint is being written: it completes, then the interrupt stops the run
    "during-a-checkpoint": (checkpointer, "save_checkpoint", 1, False, 3),
    # while the step-4 sample grid is drawn
    "during-a-sample-grid": (trainer._Trainer, "sample_grid", 1, False, 4),
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_ctrl_c_at_any_moment_then_resume_is_bitwise_exact(moment, straight, tmp_path, monkeypatch):
    owner, name, call, after, kept_step = MOMENTS[moment]
    recipe = smoke("train.steps=6")
    run = create_run(recipe, tmp_path)
    with monkeypatch.context() as patch:
        sigint_on_call(patch, owner, name, call, after)
        with pytest.raises(KeyboardInterrupt):
            train_generator(run, recipe, show_progress=False)
    assert read_pointer(run.root / "generator")["step"] == kept_step
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the guard put Python's back
    result = train_generator(run, recipe, resume=True, show_progress=False)
    assert result.step == 6 and result.steps_this_call == 6 - kept_step
    assert_same_state(generator_state(run.root), straight)


def test_sigint_to_the_cli_then_resume_is_bitwise_exact(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ODMAUG_RUNS_DIR": str(tmp_path)}
    sets = [a for s in SETTINGS for a in ("--set", s)]
    cmd = [sys.executable, "-m", "odmaug", "train-generator", "--recipe", str(SMOKE), *sets,
           "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000", "--set", "train.sample_every=100000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=_sigint_as_default)
    try:
        deadline = time.monotonic() + 120
        log = None
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list(tmp_path.glob("*-smoke/log.jsonl"))
            if logs and '"step": 2,' in logs[0].read_text():  # a few steps done: Ctrl-C now
                log = logs[0]
                break
            time.sleep(0.02)
        assert log is not None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    run_root = log.parent
    kept = read_pointer(run_root / "generator")["step"]
    assert kept >= 2
    # the interrupted run, resumed to kept + 2 steps, equals kept + 2 uninterrupted steps
    # (train.steps changes no step's arithmetic, only where the loop stops)
    result = runner.invoke(app, ["train-generator", "--resume", str(run_root), "--set", f"train.steps={kept + 2}",
                                 "--set", "train.checkpoint_every=3", "--set", "train.sample_every=4"])
    assert result.exit_code == 0, result.output
    recipe = smoke(f"train.steps={kept + 2}")
    reference = create_run(recipe, tmp_path / "reference")
    train_generator(reference, recipe, show_progress=False)
    assert_same_state(generator_state(run_root), generator_state(reference.root))


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(straight, tmp_path):
    recipe = smoke("train.steps=6")
    run = create_run(recipe, tmp_path)
    # killed -9 while writing its first checkpoint: a partial folder, no pointer
    partial = run.root / "generator" / "step-00000003"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"torn")
    result = runner.invoke(app, ["train-generator", "--resume", str(run.root)])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in run.read_log("train_start")] == [0]
    assert run.read_log("resume_from_start")
    assert_same_state(generator_state(run.root), straight)



def test_a_refused_resume_changes_nothing_in_the_run(smoke_generator_step2, tmp_path):
    run = tmp_path / smoke_generator_step2.name
    shutil.copytree(smoke_generator_step2, run)
    config, log = (run / "config.yaml").read_bytes(), (run / "log.jsonl").read_bytes()
    result = runner.invoke(app, ["train-generator", "--resume", str(run), "--set", "generator.base_channels=32",
                                 "--set", "train.steps=3"])
    assert result.exit_code == 2 and "does not fit the recipe's generator" in result.stderr, result.output
    assert "Traceback" not in result.output
    assert (run / "config.yaml").read_bytes() == config and (run / "log.jsonl").read_bytes() == log
    # the run still samples and resumes as before
    result = runner.invoke(app, ["sample", "--run", str(run), "--out", str(tmp_path / "s.png"), "--per-grade", "1",
                                 "--steps", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train-generator", "--resume", str(run), "--set", "train.steps=3"])
    assert result.exit_code == 0, result.output
    assert read_pointer(run / "generator")["step"] == 3 and "steps: 3" in (run / "config.yaml").read_text()


def test_a_refused_augment_records_nothing_and_a_retry_works(smoke_generator_step2, tmp_path):
    out = tmp_path / "syn"
    args = ["augment", "--run", str(smoke_generator_step2), "--target-class", "4", "--n", "2", "--out", str(out), "--no-grid"]
    result = runner.invoke(app, [*args, "--steps", "500"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    result = runner.invoke(app, [*args, "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "synthesis.json").read_text())["identity"]["steps"] == 2
    assert sorted(p.name for p in (out / "4").glob("*.png")) == ["0.png", "1.png"]
