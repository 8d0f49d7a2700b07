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
