"""Issue 15.3 and 15.7: inputs that exhaust the machine, and small things a user meets at once.

* ``augment --n 1000000000`` is one error line within seconds, in bounded memory (it grew to 21 GB).
* Atomically written files get the umask's mode (mkstemp's 0600 hid reports on shared machines).
* A command that fails right after making its run folder leaves no empty folder; a folder with
  output, or one given with ``--resume``, is never removed.
* KID is printed × 10³ with the scale in the header, the same in every table.
* ``--help`` shows no ``<bool>`` placeholder after flags; ``odmaug --version`` works.
* A blank-looking manifest path (spaces) is a "blank path" error, not the manifest's folder.
* A multi-seed classifier run stands for its first seed wherever one classifier is expected.
* The per-grade FID figure's legend covers no bar.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.config import load_recipe
from odmaug.errors import OdmaugError
from odmaug.atomic import atomic_write_text
from odmaug.runs import create_run, removed_if_it_fails_empty

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------------------------------
# 15.3: a request far beyond the machine


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = invoke("train-generator", "--recipe", SMOKE, "--runs-dir", runs, "--set", "train.steps=2",
                    "--set", "train.sample_every=1000")
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    return run


def test_a_billion_images_is_one_line_at_once_in_bounded_memory(generator_run, tmp_path):
    cmd = [sys.executable, "-m", "odmaug", "augment", "--run", str(generator_run), "--n", "1000000000",
           "--out", str(tmp_path / "out"), "--device", "cpu"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    status = usage = None
    while time.monotonic() - started < 60:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # this child's own peak memory, not the suite's
        if pid:
            break
        time.sleep(0.05)
    else:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pytest.fail("augment --n 1000000000 still running after 60 s")
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
    stderr = proc.stderr.read()
    proc.stdout.close(), proc.stderr.close()
    assert proc.returncode == 2 and seconds < 20, (proc.returncode, seconds, stderr[-2000:])
    # disk here (17 TB for 4 grades x 10^9); memory (8 TB) on a machine with more disk than that
    assert stderr.startswith("error: not enough ") and stderr.count("\n") == 1, stderr
    assert usage.ru_maxrss < 2 * 2**20, f"peak memory {usage.ru_maxrss / 2**20:.1f} GiB"  # KiB: the import is ~0.8 GiB
    assert not (tmp_path / "out").exists()


def test_requests_and_memory_estimates_come_from_counts():
    from odmaug.augment.plan import Item, Request
    from odmaug.augment.space import check_memory

    request = Request({3: 10**12, 4: 2}, seed_start=5)
    assert request.total == 10**12 + 2
    assert Item(3, 10**12 + 4) in request and Item(3, 10**12 + 5) not in request and Item(2, 5) not in request
    missing = request.missing({Item(3, 5)})  # lazily: a list of 10**12 pairs would never finish
    assert next(missing) == Item(3, 6) and next(missing) == Item(3, 7)
    assert request.per_grade([Item(4, 6), Item(4, 9), Item(0, 5)]) == {3: 0, 4: 1}
    with pytest.raises(OdmaugError, match=r"not enough memory.*1000000000000 images"):
        check_memory(10**12)


# --------------------------------------------------------------------------------------------------
# 15.7: file modes


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX modes")
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
        run = create_run(load_recipe(SMOKE), tmp_path / "runs")
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == mode
    assert (run.config_path.stat().st_mode & 0o777, run.env_path.stat().st_mode & 0o777) == (mode, mode)


# --------------------------------------------------------------------------------------------------
# 15.7: empty run folders


def test_failed_commands_leave_no_empty_run_folder(tmp_path):
    runs = tmp_path / "runs"
    result = invoke("train-generator", "--recipe", SMOKE, "--runs-dir", runs,
                    "--set", "data.source=manifest", "--set", f"data.path={tmp_path / 'missing.csv'}")
    assert result.exit_code == 2 and "manifest not found" in result.output
    result = invoke("train-classifier", "--recipe", SMOKE, "--runs-dir", runs,
                    "--set", f"classifier.pretrained={tmp_path / 'missing.safetensors'}")
    assert result.exit_code == 2 and "pretrained weights not found" in result.output
    assert list(runs.iterdir()) == []  # both made a run folder, then failed before any output


def test_a_folder_with_output_or_given_by_the_user_is_kept(tmp_path):
    recipe = load_recipe(SMOKE)
    with_checkpoint = create_run(recipe, tmp_path / "a")
    (with_checkpoint.root / "generator" / "step-00000002").mkdir(parents=True)
    (with_checkpoint.root / "generator" / "step-00000002" / "model.safetensors").write_bytes(b"x")
    with_state = create_run(recipe, tmp_path / "b")
    (with_state.root / "classifier").mkdir()
    (with_state.root / "classifier" / "train_state.safetensors").write_bytes(b"x")
    with_steps = create_run(recipe, tmp_path / "c")
    with_steps.log("train", step=1, loss=0.5)  # steps logged, killed before the first checkpoint
    empty = create_run(recipe, tmp_path / "e")
    empty.log("train_start", step=0)
    (empty.root / "generator" / "samples").mkdir(parents=True)  # folders alone are no output
    for run in (with_checkpoint, with_state, with_steps, empty):
        with pytest.raises(KeyboardInterrupt), removed_if_it_fails_empty(run):
            raise KeyboardInterrupt
    assert with_checkpoint.root.is_dir() and with_state.root.is_dir() and with_steps.root.is_dir()
    assert not empty.root.exists()

    # --resume of a folder with nothing in it that fails: the user's folder stays.
    given = create_run(recipe, tmp_path / "d")
    result = invoke("train-generator", "--resume", given.root, "--set", "data.source=manifest",
                    "--set", f"data.path={tmp_path / 'missing.csv'}")
    assert result.exit_code == 2 and given.config_path.is_file()


# --------------------------------------------------------------------------------------------------
# 15.7: KID's scale


def _kid_row(grade, mean, std):
    return {"grade": grade, "n_real": 40, "n_generated": 40, "too_few": False, "fid": 3.0, "fid_small_set": True,
            "kid_mean": mean, "kid_std": std, "kid_std_omitted": None, "precision": 0.5, "recall": 0.5}


def test_kid_is_printed_times_a_thousand_with_the_scale_in_every_header():
    from odmaug.metrics.generative_table import generative_table
    from odmaug.benchmark.report.tables import GENERATOR_HEADER, PER_GRADE_HEADER, generator_rows, per_grade_generator_rows

    overall, grade = _kid_row("all", 26.5017189, 0.75), _kid_row(0, 2.1e-5, 3.3e-6)
    result = {"overall": overall, "per_grade": [grade], "extractor": "domain:r", "feature_dim": 8, "image_size": 16,
              "generated": {"name": "g"}, "real": {"name": "r"}, "settings": {}}
    console = Console(width=250, record=True)
    console.print(generative_table(result))
    text = console.export_text()
    assert "KID ×10³" in text and "26502 ± 750" in text and "0.0210 ± 0.0033" in text
    assert "26501.7189" not in text and "e+0" not in text and "e-0" not in text

    results = {"generators": {"odm": {"metrics": {"domain": {"overall": overall, "per_grade": [grade]}}}}}
    assert GENERATOR_HEADER[3] == PER_GRADE_HEADER[5] == "KID ×10³"
    assert generator_rows(results)[0][3] == "26502 ± 750"
    assert per_grade_generator_rows(results)[0][5] == "0.0210"


# --------------------------------------------------------------------------------------------------
# 15.7: help and version

COMMANDS = [[], ["train-generator"], ["sample"], ["balance"], ["augment"], ["train-classifier"], ["evaluate"],
            ["metrics"], ["benchmark"], ["data"], ["data", "info"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "odmaug")
def test_help_shows_flags_without_a_type_placeholder(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--help" in result.output and "<bool>" not in result.output


def test_flags_still_parse():
    result = invoke("augment", "--help")
    assert "--no-grid" in result.output and "--force" in result.output
    result = invoke("augment", "--run", "/nonexistent", "--force", "--no-grid", "--no-ema")
    assert result.exit_code == 2 and "run folder not found" in result.output


def test_version():
    from odmaug import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output == f"odmaug {__version__}\n"


# --------------------------------------------------------------------------------------------------
# 15.7: a manifest path of spaces


def test_a_path_of_spaces_is_a_blank_path(tmp_path):
    from odmaug.data.sources import read_manifest

    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,1\n   ,2\n")
    with pytest.raises(OdmaugError, match=r"blank 'path' in row 2 \(every row needs an image\)"):
        read_manifest(manifest, 5)
    result = invoke("balance", "--recipe", SMOKE, "--synthetic", manifest, "--out", tmp_path / "b.csv")
    assert result.exit_code == 2 and "blank 'path' in row 2" in result.output and "nan" not in result.output


# --------------------------------------------------------------------------------------------------
# 15.7: a multi-seed classifier run where one classifier is expected


def test_a_multi_seed_run_stands_for_its_first_seed(tmp_path):
    from odmaug.classify.models import read_meta, resolve_classifier_dir

    runs = tmp_path / "runs"
    result = invoke("train-classifier", "--recipe", SMOKE, "--runs-dir", runs, "--seeds", "2,0",
                    "--set", "classifier.epochs=1")
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    assert resolve_classifier_dir(run) == resolve_classifier_dir(run / "classifiers") == run / "classifiers" / "seed0"
    assert read_meta(run).extra["seed"] == 0
    result = invoke("evaluate", "--classifier", run, "--data", "synthetic:test", "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    assert result.output.count("holds 2 classifier(s), seeds 0, 2: using the first") == 1  # unwrapped (conftest.wide_console)
    with pytest.raises(OdmaugError, match="no trained classifier here"):
        resolve_classifier_dir(tmp_path)


# --------------------------------------------------------------------------------------------------
# 15.7: the per-grade FID figure


def test_the_per_grade_fid_legend_covers_no_bar(tmp_path, monkeypatch):
    from odmaug.benchmark.report import figures as report_figures

    per_grade = [{"grade": g, "fid": 50.0 + 40 * g, "too_few": False} for g in range(5)]
    results = {"num_classes": 5, "generators": {name: {"metrics": {"domain": {"per_grade": per_grade}}}
                                                 for name in ("dm", "odm")}}
    seen = {}
    save = report_figures._save

    def inspect(fig, path):
        fig.tight_layout()
        fig.canvas.draw()
        ax = fig.axes[0]
        seen["legend"], seen["axes"] = ax.get_legend().get_window_extent(), ax.get_window_extent()
        seen["figure"] = fig.bbox
        return save(fig, path)

    monkeypatch.setattr(report_figures, "_save", inspect)
    assert report_figures.per_grade_fid_figure(results, "domain", tmp_path / "fid.png").is_file()
    legend, axes = seen["legend"], seen["axes"]
    assert not legend.overlaps(axes), (legend, axes)  # before: inside the axes, over the grade-4 bars
    assert seen["figure"].contains(legend.x0, legend.y0) and seen["figure"].contains(legend.x1, legend.y1)  # not cut off
