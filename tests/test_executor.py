"""``odmaug benchmark --executor``: the stages as submitit jobs (issue 30, item 2).

The end-to-end test runs submitit's real ``LocalExecutor`` (a process per stage job, no cluster):
a generator job is killed with SIGKILL mid-stage (held at its second checkpoint write by the test
hook ``ODMAUG_TEST_PAUSE_AT``), the benchmark stops naming that job and its log, the same command
again takes over the dead job's stage lock, resumes the generator, runs the remaining stages as
fresh jobs, and ends with the results and the images of an in-process run, each stage built once.
The Slurm side is checked against submitit's own sbatch writer (a stand-in ``srun`` on PATH makes
it believe it is on a cluster); the README's sbatch script against the same writer's option names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_refused

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"
ARGS = ["benchmark", "--recipe", str(SMOKE), "--set", "classifier.epochs=2", "--set", "benchmark.arms=[real, dm]",
        "--device", "cpu", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FIGURES = ("qwk", "accuracy", "macro_f1", "balanced_accuracy", "mae", "confusion")

submitit = pytest.importorskip("submitit")


def _odmaug(runs: Path, *extra: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "odmaug", *ARGS, "--runs-dir", str(runs), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**ENV, **env})


def _finish(proc: subprocess.Popen, code: int = 0) -> str:
    out, _ = proc.communicate(timeout=480)
    assert proc.returncode == code, out[-4000:]
    return out


def _figures(runs: Path) -> dict:
    """Per arm and seed the test figures, and the generators' figures, of the newest benchmark run."""
    results = json.loads((sorted(runs.glob("*-benchmark-smoke"))[-1] / "results.json").read_text())
    arms = {a: {s: {k: r[k] for k in FIGURES} for s, r in d["seeds"].items()} for a, d in results["arms"].items()}
    return {"arms": arms, "paired": results["paired"], "generators": results["generators"]}


def _images(store: Path) -> dict[str, str]:
    return {p.relative_to(store).as_posix().split("/", 1)[1]: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.glob("generator-*/synthetic-*/*/*.png"))}


def _paused_generator_pid(runs: Path, deadline: float) -> int:
    """The pid of the generator job held by the test hook, read from its stage lock."""
    while time.monotonic() < deadline:
        logs = list(runs.glob("*-benchmark-smoke/jobs/*_log.err"))
        if any("odmaug-test-paused" in p.read_text(errors="replace") for p in logs):
            [lock] = (runs / "store" / ".locks").glob("generator-dm-*/.odmaug.lock")
            return json.loads(lock.read_text())["pid"]
        time.sleep(0.5)
    pytest.fail("the generator job never reached its paused checkpoint write")


@pytest.mark.slow
def test_a_generator_job_killed_mid_stage_and_resubmitted_gives_the_in_process_results(tmp_path):
    straight = _odmaug(tmp_path / "in-process")
    killed = _odmaug(tmp_path / "jobs", "--executor", "local", ODMAUG_TEST_PAUSE_AT="checkpoint-write@4")
    os.kill(_paused_generator_pid(tmp_path / "jobs", time.monotonic() + 300), signal.SIGKILL)
    out = _finish(killed, 2)
    [error] = [line for line in out.splitlines() if line.startswith("error:")]
    assert "stage job generator-dm" in error and "killed" in error and "_log.err" in error and "Traceback" not in out
    again = _finish(_odmaug(tmp_path / "jobs", "--executor", "local", "--set", "benchmark.executor.max_jobs=1"))
    assert "classifiers: 2 job(s) (local, 1 at a time)" in again  # the same command, one job at a time
    _finish(straight)

    store = tmp_path / "jobs" / "store"
    assert len(list(store.glob("generator-dm-*"))) == 1  # nothing built twice
    assert len(list(store.glob("generator-dm-*/synthetic-*"))) == 1
    assert sorted(p.name.split("-seed")[0] for p in store.glob("classifier-*")) == ["classifier-dm", "classifier-real"]
    assert not list(store.glob(".locks/*/.odmaug.lock"))  # every lock released
    resumed = "".join(p.read_text() for p in sorted(tmp_path.glob("jobs/00001-*/jobs/*_log.out")))
    assert "resume from step 2 to 4" in resumed  # the killed stage continued from its checkpoint
    assert _figures(tmp_path / "jobs") == _figures(tmp_path / "in-process")
    assert _images(store) == _images(tmp_path / "in-process" / "store") and _images(store)


def test_the_stage_lock_waits_for_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    import threading

    from odmaug.benchmark.stage_jobs import lock_dir, stage_lock
    from odmaug.errors import OdmaugError

    store, folder = tmp_path / "store", tmp_path / "store" / "generator-dm-abc"
    lock = lock_dir(store, folder) / ".odmaug.lock"
    with stage_lock(store, folder, 0.0):
        with pytest.raises(OdmaugError, match=f"in use by another odmaug benchmark stage .*pid {os.getpid()}"):
            with stage_lock(store, folder, 0.3):
                pass
    assert not lock.exists()

    held, order = threading.Event(), []

    def holder() -> None:
        with stage_lock(store, folder, 0.0):
            held.set()
            time.sleep(1.0)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    with stage_lock(store, folder, 30.0):  # waits, then builds (finds) the stage
        order.append("second")
    thread.join()
    assert order == ["holder done", "second"]

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for record, age in (({"pid": int(dead.stdout), "host": socket.gethostname()}, 0),  # killed here
                        ({"pid": 1, "host": "another-node", "lease_s": 300.0}, 3600)):  # lease run out
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(json.dumps(record | {"started": "earlier", "command": "benchmark stage x"}))
        os.utime(lock, (time.time() - age, time.time() - age))
        with stage_lock(store, folder, 0.0):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": 1, "host": "another-node", "lease_s": 300.0}))  # renewed just now
    with pytest.raises(OdmaugError, match="another-node"):
        with stage_lock(store, folder, 0.0):
            pass


@pytest.mark.parametrize("override, message", [
    ("benchmark.executor.generator.gpus=-1", "benchmark.executor.generator.gpus: Input should be greater than"),
    ("benchmark.executor.classifier.partition='gpu a100'", "one word"),
    ("benchmark.executor.results.time_min=0", "benchmark.executor.results.time_min: Input should be greater than"),
    ("benchmark.executor.synthesis.mem_gb=0", "benchmark.executor.synthesis.mem_gb: Input should be greater than"),
    ("benchmark.executor.lock_wait_min=-1", "benchmark.executor.lock_wait_min: Input should be greater than"),
    ("benchmark.executor.max_jobs=0", "benchmark.executor.max_jobs: Input should be greater than"),
])
def test_executor_settings_are_checked(override, message):
    from odmaug.config import load_recipe
    from odmaug.errors import OdmaugError

    with pytest.raises(OdmaugError, match=message):
        load_recipe(SMOKE, [override])


@pytest.mark.parametrize("executor, modules, expected", [
    ("local", {"submitit": None}, ('--executor local needs submitit', 'pip install "odmaug[slurm]"')),
    ("pbs", {}, "--executor must be one of local, slurm (got 'pbs')"),
    ("slurm", {}, "--executor slurm: no Slurm here"),
])
def test_an_executor_that_cannot_run_is_one_error_line(executor, modules, expected, tmp_path, monkeypatch):
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    no_srun = lambda work: {"PATH": str(work)}  # noqa: E731
    assert_refused(["benchmark", "--recipe", "{smoke}", "--executor", executor], no_srun, expected, tmp_path,
                   monkeypatch, SMOKE)


def _fake_slurm(tmp_path: Path, monkeypatch) -> None:
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")


def test_slurm_jobs_ask_for_their_stage_kind_resources(tmp_path, monkeypatch):
    from odmaug.benchmark.executor import Submitter, check_executor
    from odmaug.benchmark.stage_jobs import StageJob
    from odmaug.config import load_recipe

    _fake_slurm(tmp_path, monkeypatch)
    check_executor("slurm")
    recipe = load_recipe(SMOKE, ["benchmark.executor.generator.partition=gpu", "benchmark.executor.generator.gpus=2",
                                 "benchmark.executor.generator.mem_gb=32", "benchmark.executor.generator.time_min=600",
                                 "benchmark.executor.classifier.partition=short", "benchmark.executor.account=lab"])
    submitter = Submitter("slurm", tmp_path / "jobs", recipe)
    scripts = {}
    for job in (StageJob("generator", "fold1-generator-odm", 1, "odm"), StageJob("selection", "selection-odm-translate"),
                StageJob("results", "results")):
        executor = submitter.executor(job.resources)
        executor.update_parameters(name=job.name)
        text = executor._executor._make_submission_file_text("true", "uid")  # submitit's own sbatch writer
        scripts[job.kind] = set(re.findall(r"^#SBATCH (\S+)$", text, re.M))
    assert {"--partition=gpu", "--gpus-per-node=2", "--mem=32GB", "--time=600", "--account=lab",
            "--job-name=fold1-generator-odm", "--ntasks-per-node=1", "--cpus-per-task=2"} <= scripts["generator"]
    assert {"--partition=short", "--gpus-per-node=1", "--time=240"} <= scripts["selection"]  # a classifier job
    assert not any(o.startswith("--partition") for o in scripts["results"])  # the cluster's default


def test_the_readme_sbatch_script_uses_real_sbatch_options_and_a_parsed_torchrun_line():
    from submitit.slurm.slurm import _get_default_parameters

    from test_readme import check_command, markdown_commands

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [script] = [b for b in re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M) if "#SBATCH" in b]
    assert script.startswith("#!/bin/bash\n")
    known = {k.replace("_", "-") for k in _get_default_parameters()} | {"gres", "ntasks-per-node"}
    options = re.findall(r"^#SBATCH (.*)$", script, re.M)
    assert options
    for option in options:
        match = re.fullmatch(r"--([a-z-]+)=(\S+)", option)
        assert match and match.group(1) in known, f"not an sbatch option submitit writes: {option}"
    [launch] = [c for c in markdown_commands(f"```\n{script}```\n") if c.startswith("torchrun")]
    check_command(launch)  # torchrun's own parser, then odmaug's CLI and the recipe's overrides
    commands = markdown_commands(readme)
    assert any("--executor slurm" in c for c in commands) and any("--executor local" in c for c in commands)


def test_the_waves_cover_every_stage_of_every_fold(tmp_path, monkeypatch):
    import odmaug.benchmark.classifiers as classifiers
    from odmaug.benchmark.executor import _classifier_wave, _first_waves, _selection_wave

    monkeypatch.setattr(classifiers, "is_stored", lambda *args: False)  # the images here are names, not tables
    from odmaug.benchmark.plan import make_plan
    from odmaug.benchmark.protocol import benchmark_splits
    from odmaug.config import load_recipe
    from odmaug.data import load_table

    recipe = load_recipe(SMOKE, ["benchmark.protocol=cv", "benchmark.cv.folds=2", "benchmark.arms=[real, dm, odm-translate]",
                                 "benchmark.filter.max_grade_error=1", "benchmark.seeds=[0, 1]"])
    passes = benchmark_splits(recipe, load_table(recipe.data))
    plans = [make_plan(recipe, tmp_path / "store", splits) for splits in passes]
    generators, synthesis = _first_waves(recipe, plans, passes, "cpu")
    images = {(s.index, s.target): f"images {s.name}" for s, _ in synthesis}
    selection, chosen = _selection_wave(recipe, plans, passes, "cpu", images)
    chosen |= {(s.index, s.target): 0.7 for s, _ in selection}
    classifiers = _classifier_wave(recipe, plans, passes, "cpu", "bench", images, chosen)
    names = lambda wave: [s.name for s, _ in wave]  # noqa: E731
    for fold in ("fold0-", "fold1-"):
        assert {f"{fold}generator-dm", f"{fold}generator-odm", f"{fold}filter-real-seed0"} <= set(names(generators))
        assert {f"{fold}synthesis-dm", f"{fold}synthesis-odm-translate@0.5", f"{fold}synthesis-odm-translate@0.7"} \
            <= set(names(synthesis))
        assert f"{fold}selection-odm-translate" in names(selection)
    assert len(classifiers) == 2 * 3 * 2 and len(set(names(classifiers))) == 12  # folds x arms x seeds
    given = {s.name: args[-1]["synthetic"] for s, args in classifiers}
    assert given["fold1-classifier-odm-translate-seed1"] == {"odm-translate": "images fold1-synthesis-odm-translate@0.7"}
    assert given["fold0-classifier-real-seed0"] == {}


def test_a_rerun_submits_jobs_only_for_stages_not_stored(tmp_path):
    from typer.testing import CliRunner

    from odmaug.benchmark.executor import _classifier_wave, _first_waves
    from odmaug.benchmark.plan import make_plan
    from odmaug.benchmark.stage import Splits
    from odmaug.cli import app
    from odmaug.config import load_recipe
    from odmaug.data import load_table

    sets = ["benchmark.arms=[real, class-weighted, dm]", "classifier.epochs=1", "train.steps=2", "benchmark.seeds=[0]"]
    recipe = load_recipe(SMOKE, sets)
    splits = Splits.of(load_table(recipe.data))

    def waves() -> tuple[list[str], list[str]]:
        plans = [make_plan(recipe, tmp_path / "runs" / "store", splits)]
        generators, _ = _first_waves(recipe, plans, [splits], "cpu")
        classifiers = _classifier_wave(recipe, plans, [splits], "cpu", "bench", {}, {})
        return [s.name for s, _ in generators], [s.name for s, _ in classifiers]

    assert waves() == (["generator-dm"], ["classifier-real-seed0", "classifier-class-weighted-seed0", "classifier-dm-seed0"])
    args = ["benchmark", "--recipe", str(SMOKE), "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    assert CliRunner().invoke(app, [*args, *(x for item in sets for x in ("--set", item))]).exit_code == 0
    # stored: no job; the dm classifier's key needs its images, which the synthesis wave hands over
    assert waves() == ([], ["classifier-dm-seed0"])
