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
