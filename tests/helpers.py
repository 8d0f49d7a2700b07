"""Helpers shared by the tests that compare a resumed generator or classifier with an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from odmaug.diffusion.checkpoint import read_pointer


def generator_state(run_root: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run's newest generator checkpoint (weights, EMA, optimizer and RNG state),
    keyed ``<file>/<name>``."""
    gen = Path(run_root) / "generator"
    folder = gen / read_pointer(gen)["folder"]
    return {f"{name}/{k}": v for name in ("model", "ema", "state")
            for k, v in load_file(str(folder / f"{name}.safetensors")).items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bitwise equality of two tensor dicts, naming the first key that differs."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def classifier_cut_after_one_epoch(recipe, splits, folder: Path, seed: int = 3):
    """Train a classifier over ``splits`` (train, val, test) uninterrupted into ``folder / "full"``,
    and again into ``folder / "cut"`` stopped by Ctrl-C after epoch 1; returns the full run's result."""
    import pytest

    from odmaug.classify.train import train_classifier

    train, val, test = splits
    full = train_classifier(recipe, train, val, test, folder / "full", seed=seed, device="cpu", show_progress=False)

    def crash_after_first_epoch(event, **fields):
        if fields["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(recipe, train, val, test, folder / "cut", seed, "cpu", crash_after_first_epoch, False)
    return full


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> content hash ('dir' for folders)."""
    import hashlib

    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        out[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_refused(args: list[str], prepare, expected: str | tuple[str, ...], tmp_path: Path, monkeypatch,
                   smoke: Path) -> None:
    """Run the CLI on ``args`` (``{tmp}``: the work folder, also the working directory and the runs
    folder's parent; ``{smoke}``: ``smoke``) after ``prepare(work)`` (which may return environment
    variables to set, None to unset), and assert the bad-input contract: one ``error:`` line on
    stderr holding every ``expected`` text, exit code 2, no traceback, nothing created or changed."""
    from typer.testing import CliRunner

    from odmaug.cli import app

    work = tmp_path / "work"
    work.mkdir()
    for key, value in (prepare(work) or {}).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(work)  # default outputs (sample.png, ./runs) land where the snapshot sees them
    monkeypatch.setenv("ODMAUG_RUNS_DIR", str(work / "runs"))
    before = snapshot(work)
    result = CliRunner().invoke(app, [a.format(tmp=work, smoke=smoke) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    wanted = (expected,) if isinstance(expected, str) else expected
    assert lines[0].startswith("error:") and all(w in lines[0] for w in wanted), lines[0]
    assert snapshot(work) == before, "bad input must not create or change files"
