import json

import pytest

from odmaug.atomic import atomic_path, atomic_write_text
from odmaug.config import load_recipe
from odmaug.errors import OdmaugError
from odmaug.runs import create_run, open_run


def test_create_run_writes_config_env_and_log(tmp_path, smoke_recipe_path):
    recipe = load_recipe(smoke_recipe_path)
    first = create_run(recipe, tmp_path)
    second = create_run(recipe, tmp_path)
    assert first.root.name == "00000-smoke" and second.root.name == "00001-smoke"
    assert first.recipe() == recipe
    env = json.loads(first.env_path.read_text())
    for key in ("torch", "python", "seed", "device", "git_commit", "time"):
        assert key in env
    assert env["seed"] == recipe.seed
    first.log("train", step=1, loss=0.5)
    events = [r["event"] for r in first.read_log()]
    assert events == ["run_created", "train"]
    assert first.read_log("train")[0]["loss"] == 0.5


def test_read_log_skips_a_torn_last_line(tmp_path, smoke_recipe_path):
    run = create_run(load_recipe(smoke_recipe_path), tmp_path)
    run.log("a", x=1)
    with open(run.log_path, "a") as fh:
        fh.write('{"event": "b", "x"')  # a crash in the middle of a line
    assert [r["event"] for r in run.read_log()] == ["run_created", "a"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "manifest.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]


def test_open_run_errors(tmp_path):
    with pytest.raises(OdmaugError, match="run folder not found"):
        open_run(tmp_path / "missing")
    with pytest.raises(OdmaugError, match="not an odmaug run folder"):
        open_run(tmp_path)
