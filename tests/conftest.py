"""Shared fixtures: the real RetinaMNIST file (through ODMAUG_DATA_DIR) and isolated caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests may find the project's shared data beside the checkout when CI has not set the variable.
if not os.environ.get("ODMAUG_DATA_DIR") and (SHARED_DATA / "retinamnist.npz").is_file():
    os.environ["ODMAUG_DATA_DIR"] = str(SHARED_DATA)

# Never download anything during tests; the code says what it skips instead.
os.environ.setdefault("ODMAUG_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Run every test's torch work on one thread.

    The test models are tiny, so a second thread gains little; on a shared 2-core machine a second
    OpenMP thread spinning against other processes made them 10-80x slower. Subprocesses the tests
    start (kill -9, torchrun) keep torch's own default.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


WIDE_CONSOLE = 10_000
"""Columns of odmaug's consoles during the tests: wider than any path (PATH_MAX is 4096) plus its message."""


@pytest.fixture(autouse=True, scope="session")
def wide_console():
    """Give odmaug's stdout and stderr consoles :data:`WIDE_CONSOLE` columns for the whole session.

    Outside a terminal they wrap at 150 columns (on one, at its width), so a message holding a
    temporary path was split across lines wherever pytest's folder (TMPDIR) put the break, and a
    test looking for a phrase in ``result.output`` passed or failed by the path's length; here no
    line wraps, whatever the width of the terminal or the path. Session scope: module fixtures that
    run the CLI come after it. Subprocesses build their own consoles (150 columns):
    tests of their output look for short text without paths.
    """
    from odmaug import console as odm_console

    with pytest.MonkeyPatch.context() as patch:
        for shared in (odm_console.console, odm_console.err_console):
            patch.setattr(shared, "width", WIDE_CONSOLE)
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own user cache, so nothing leaks between tests or into ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def retinamnist_dir() -> Path:
    """Folder holding the real retinamnist.npz (CI sets ODMAUG_DATA_DIR)."""
    folder = os.environ.get("ODMAUG_DATA_DIR")
    if not folder or not (Path(folder) / "retinamnist.npz").is_file():
        pytest.skip("retinamnist.npz not available: set ODMAUG_DATA_DIR to the folder that holds it")
    return Path(folder)


@pytest.fixture
def smoke_recipe_path() -> Path:
    return REPO / "recipes" / "smoke.yaml"


SMOKE_RECIPE = REPO / "recipes" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, one_thread) -> Path:
    """A smoke generator trained for 4 steps through the CLI (once per test module)."""
    from typer.testing import CliRunner

    from odmaug.cli import app

    runs = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(
        app, ["train-generator", "--recipe", str(SMOKE_RECIPE), "--runs-dir", str(runs), "--set", "train.sample_every=1000"]
    )
    assert result.exit_code == 0, result.output
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def smoke_generator_step2(tmp_path_factory) -> Path:
    """A smoke generator at step 2 (a checkpoint at step 2), trained in-process (once per test module)."""
    from odmaug.config import load_recipe
    from odmaug.diffusion.trainer import train_generator
    from odmaug.runs import create_run

    recipe = load_recipe(SMOKE_RECIPE, ["train.steps=2", "train.sample_every=1000"])
    run = create_run(recipe, tmp_path_factory.mktemp("trained"))
    train_generator(run, recipe, show_progress=False)
    return run.root


@pytest.fixture(scope="module")
def tiny_unet():
    """A tiny class-conditional U-Net (5 grades, 8 px) with random weights everywhere, in eval mode."""
    import torch

    from odmaug.config import GeneratorConfig
    from odmaug.diffusion import build_generator

    torch.manual_seed(0)
    cfg = GeneratorConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4], dropout=0.0)
    model = build_generator(cfg, 5, 8)
    with torch.no_grad():  # the output layer starts at zero; give it weights so labels and inputs matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()
