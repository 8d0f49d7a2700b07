"""Issue 15: an output that cannot be written is one ``error: cannot write <path>: <reason>`` line and
exit code 2, never a traceback; the temporary file is gone and the previous file (or checkpoint) is
still the one in use.

Tests run as root, which ignores permission bits, so a read-only folder is simulated (a failing
``mkstemp``, a refusing ``os.access``); a path through a file and an existing folder are real.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import typer
from safetensors import SafetensorError
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.cli.app import OdmaugGroup
from odmaug.diffusion.checkpoint import read_pointer
from odmaug.atomic import WriteError, atomic_path, atomic_write_text

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
runner = CliRunner()


def assert_cannot_write(result, *fragments: str) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    # a progress bar may come before it; the error is one line, the last
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    assert errors[0].startswith("error: cannot write "), errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def places(tmp_path) -> dict[str, Path]:
    """An existing folder, a file, and a path whose parent is that file."""
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    return {"folder": tmp_path / "folder.png", "file": tmp_path / "afile", "under_file": tmp_path / "afile" / "x.png"}



@pytest.mark.parametrize("where,reason", [("folder", "it is a folder"), ("under_file", "is a file, not a folder")])
def test_data_info_grid(where, reason, places):
    result = runner.invoke(app, ["data", "info", "--recipe", str(SMOKE), "--grid", str(places[where])])
    assert_cannot_write(result, str(places[where]), reason)


@pytest.mark.parametrize("where,reason", [("folder", "it is a folder"), ("under_file", "is a file, not a folder")])
def test_balance_out(where, reason, places):
    out = places[where].with_suffix(".csv") if where == "under_file" else places[where]
    result = runner.invoke(app, ["balance", "--recipe", str(SMOKE), "--strategy", "oversample", "--out", str(out)])
    assert_cannot_write(result, str(out), reason)


def test_balance_out_in_a_read_only_folder(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "ro" / "m.csv"
    result = runner.invoke(app, ["balance", "--recipe", str(SMOKE), "--strategy", "oversample", "--out", str(out)])
    assert_cannot_write(result, str(out), "Permission denied")
    assert not out.exists()


def test_metrics_out_is_checked_before_any_feature(places, monkeypatch):
    import odmaug.metrics.generative as generative

    monkeypatch.setattr(generative, "evaluate_generated", lambda *a, **k: pytest.fail("computed before the check"))
    result = runner.invoke(app, ["metrics", "--recipe", str(SMOKE), "--real", "synthetic", "--generated", "synthetic",
                                 "--out", str(places["folder"])])
    assert_cannot_write(result, "it is a folder")


@pytest.mark.parametrize("where,reason", [("file", "it is a file, not a folder"), ("under_file", "is a file, not a folder"),
                                          ("read_only", "no permission")])
def test_train_classifier_out_is_checked_before_training(where, reason, places, tmp_path, monkeypatch):
    import odmaug.classify.datasets as splits

    monkeypatch.setattr(splits, "training_splits", lambda *a, **k: pytest.fail("data loaded before the check"))
    if where == "read_only":
        (tmp_path / "ro").mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != tmp_path / "ro" and real_access(p, mode, **k))
        out = tmp_path / "ro" / "clf"
    else:
        out = places[where]
    result = runner.invoke(app, ["train-classifier", "--recipe", str(SMOKE), "--out", str(out)])
    assert_cannot_write(result, str(out), reason)


def test_sample_out_is_an_existing_folder(smoke_generator_step2, places):
    result = runner.invoke(app, ["sample", "--run", str(smoke_generator_step2), "--out", str(places["folder"]), "--per-grade", "1",
                                 "--steps", "2"])
    assert_cannot_write(result, str(places["folder"]), "it is a folder")
    assert places["folder"].is_dir() and not list(places["folder"].iterdir())


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(smoke_generator_step2, tmp_path, monkeypatch):
    import odmaug.train_state as train_state  # the training-state format writes the checkpoint files

    run = tmp_path / smoke_generator_step2.name
    shutil.copytree(smoke_generator_step2, run)
    gen = run / "generator"
    pointer = (gen / "checkpoint.json").read_bytes()

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    with monkeypatch.context() as patch:
        patch.setattr(train_state, "save_file", full)
        result = runner.invoke(app, ["train-generator", "--resume", str(run), "--set", "train.steps=4"])
    assert_cannot_write(result, "model.safetensors", "No space left on device")
    assert (gen / "checkpoint.json").read_bytes() == pointer and read_pointer(gen)["step"] == 2
    assert sorted(p.name for p in gen.iterdir() if p.name != "samples") == ["checkpoint.json", "step-00000002"]
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    result = runner.invoke(app, ["train-generator", "--resume", str(run), "--set", "train.steps=4"])
    assert result.exit_code == 0, result.output
    starts = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in starts if r["event"] == "train_start"][-1] == 2
    assert read_pointer(gen)["step"] == 4


def test_too_little_space_for_a_checkpoint_stops_before_the_first_step(tmp_path, monkeypatch):
    import odmaug.atomic as atomic

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    result = runner.invoke(app, ["train-generator", "--recipe", str(SMOKE), "--runs-dir", str(tmp_path)])
    assert_cannot_write(result, "generator", "MiB needed")
    # No step was taken: the run folder held nothing worth keeping and is gone (issue 15.7; a
    # logged step would have kept it, see odmaug.runs.has_no_output).
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "kept.txt"
    atomic_write_text(target, "old")
    with pytest.raises(WriteError, match=r"cannot write .*kept.txt: No space left on device") as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC  # a cache may still tolerate it
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.txt"]
    # an error that is not about the destination (a bug, a network error) passes through unchanged
    with pytest.raises(ConnectionResetError):
        with atomic_path(target):
            raise ConnectionResetError(errno.ECONNRESET, "reset")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_any_other_os_error_with_a_path_is_one_line_too():
    local = typer.Typer(cls=OdmaugGroup)

    @local.command()
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/log.jsonl")

    @local.command()
    def other() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/runs/x")

    result = runner.invoke(local, ["full"])
    assert result.exit_code == 2 and result.stderr == "error: cannot write /runs/x/log.jsonl: No space left on device\n"
    result = runner.invoke(local, ["other"])
    assert result.exit_code == 2 and result.stderr == "error: /runs/x: Permission denied\n"
