"""Issue 15.8: kill -9 anywhere, lose nothing.

* ``train-generator`` SIGKILLed while it writes a checkpoint (the new folder half written, the
  pointer still on the previous one; reached through the test hook ``ODMAUG_TEST_PAUSE_AT``, see
  :func:`odmaug.diffusion.checkpointer._pause_for_tests`), then ``--resume``: bitwise the weights, EMA,
  optimizer and RNG state of a run that was never killed.
* ``train-classifier`` SIGKILLed in the middle of its training (after some epoch was saved), then
  the same command again: it resumes from the last saved epoch and ends with bitwise the weights
  and metrics of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from odmaug.classify import train as classifier_train
from odmaug.cli import app
from odmaug.config import load_recipe
from odmaug.diffusion import train_generator
from odmaug.diffusion.checkpoint import read_pointer
from odmaug.runs import create_run, open_run
from helpers import assert_same_state, generator_state  # tests/helpers.py

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
# dropout > 0 draws from torch's global RNG, the ordinal term and the batches from the data stream:
# both must come back exactly. Checkpoints at steps 3 and 6; no sample grids (time).
GENERATOR = ["generator.dropout=0.1", "train.steps=6", "train.checkpoint_every=3", "train.sample_every=1000",
             "train.log_every=1", "train.ema_warmup=1"]
CLASSIFIER = ["classifier.epochs=12"]
runner = CliRunner()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "ODMAUG_RUNS_DIR": str(tmp_path), **extra}


def _sets(overrides: list[str]) -> list[str]:
    return [a for s in overrides for a in ("--set", s)]


def _tensors(*files: Path) -> dict[str, torch.Tensor]:
    return {f"{f.name}/{k}": v for f in files for k, v in load_file(str(f)).items()}




def test_sigkill_during_a_checkpoint_write_then_resume_is_bitwise_exact(tmp_path):
    cmd = [sys.executable, "-m", "odmaug", "train-generator", "--recipe", str(SMOKE), *_sets(GENERATOR)]
    proc = subprocess.Popen(cmd, env=_env(tmp_path / "killed", ODMAUG_TEST_PAUSE_AT="checkpoint-write@6"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(180, proc.kill)  # a hang fails the test instead of blocking the suite
    watchdog.start()
    try:
        # The hook blocks inside the step-6 checkpoint write and says so; EOF means the run ended first.
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("odmaug-test-paused"):
                break
        assert lines and lines[-1] == "odmaug-test-paused checkpoint-write@6\n", "".join(lines)[-3000:]
        (run_root,) = (tmp_path / "killed").iterdir()
        torn = run_root / "generator" / "step-00000006"
        assert (torn / "model.safetensors").is_file() and not (torn / "state.json").exists()
        assert read_pointer(run_root / "generator")["step"] == 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    result = runner.invoke(app, ["train-generator", "--resume", str(run_root)])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in open_run(run_root).read_log("train_start")] == [0, 3]  # resumed from step 3
    assert read_pointer(run_root / "generator")["step"] == 6

    recipe = load_recipe(SMOKE, GENERATOR)
    reference = create_run(recipe, tmp_path / "reference")
    train_generator(reference, recipe, show_progress=False)
    assert_same_state(generator_state(run_root), generator_state(reference.root))


def _saved_epoch(out: Path) -> int:
    with safe_open(str(out / "train_state.safetensors"), framework="pt") as fh:
        return json.loads(fh.metadata()["state"])["epoch"]


def test_sigkill_mid_training_then_the_same_command_resumes_bitwise(tmp_path, monkeypatch):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    args = ["train-classifier", "--recipe", str(SMOKE), *_sets(CLASSIFIER), "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "odmaug", *args, "--out", str(killed)], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        # train_state.safetensors is written (atomically) after every finished epoch: kill -9 in the next one.
        while proc.poll() is None and time.monotonic() < deadline:
            if (killed / "train_state.safetensors").is_file():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-3000:]
    assert not (killed / "metrics.json").exists() and not (killed / "model.safetensors").exists()
    kept = _saved_epoch(killed)
    assert 1 <= kept < 12

    loaded: list[int] = []
    original = classifier_train.load_state

    def spy(*a, **k):
        out = original(*a, **k)
        loaded.append(out[0].epoch if out else 0)
        return out

    monkeypatch.setattr(classifier_train, "load_state", spy)
    result = runner.invoke(app, [*args, "--out", str(killed)])
    assert result.exit_code == 0, result.output
    assert loaded == [kept]  # resumed from the last saved epoch, not from scratch
    assert not (killed / "train_state.safetensors").exists()

    result = runner.invoke(app, [*args, "--out", str(reference)])
    assert result.exit_code == 0, result.output
    assert_same_state(_tensors(killed / "model.safetensors"), _tensors(reference / "model.safetensors"))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (killed, reference))
    assert (a["val"], a["test"], a["best_epoch"]) == (b["val"], b["test"], b["best_epoch"])
    assert [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in a["history"]] == \
        [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in b["history"]]
    # a kill inside the state file's atomic write leaves a temporary file: nothing else may be left over
    assert sorted(p.name for p in killed.iterdir() if not p.name.endswith(".tmp")) == \
        sorted(p.name for p in reference.iterdir())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
