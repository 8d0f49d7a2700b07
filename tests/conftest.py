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
