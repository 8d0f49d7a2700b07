"""The benchmark's planning step: inputs checked before any work, stage times from a probe;
generators continued to a larger train.steps; one log line per event (rank 0, plain lines in logs)."""

import io
import json
import math
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import odmaug.benchmark as benchmark
import odmaug.benchmark.stage as bench_stage
import odmaug.console as odm_console
from odmaug.benchmark import (
    Splits,
    generator_folder,
    generator_key,
    generator_status,
    make_plan,
    synthesis_counts,
    synthesis_folder,
)
from odmaug.benchmark.estimate import UnitTimes, estimate_stages
from odmaug.cli import app
from odmaug.config import load_recipe
from odmaug.data import load_table
from odmaug.runs import Run

runner = CliRunner()
TIME_CELL = re.compile(r"^(<1 s|~\d+ s|~\d+ min|~\d+\.\d h)$")


def _bench(tmp_path: Path, recipe: Path, *sets: str, extra: tuple[str, ...] = ()):
    args = ["benchmark", "--recipe", str(recipe), "--runs-dir", str(tmp_path / "runs")]
    for item in sets:
        args += ["--set", item]
    return runner.invoke(app, [*args, *extra])


def _fake_generator(root: Path, step: int) -> None:
    """A generator folder whose checkpoint pointer says ``step`` (all the planner reads)."""
    (root / "generator").mkdir(parents=True, exist_ok=True)
    (root / "generator" / "checkpoint.json").write_text(json.dumps({"folder": f"step-{step}", "step": step, "sha256": {}}))


# ------------------------------------------------------------------------ inputs checked first


@pytest.mark.parametrize("arms, dry_run", [
    ('[real, "external:x=/nonexistent"]', True),  # the plan used to list it as fine
    ('[real, dm, "external:x=/nonexistent"]', False),  # ... and the run failed after training DM
])
def test_missing_external_arm_fails_in_planning(tmp_path, smoke_recipe_path, arms, dry_run):
    result = _bench(tmp_path, smoke_recipe_path, f"benchmark.arms={arms}", extra=("--dry-run",) if dry_run else ())
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: benchmark arm external:x=/nonexistent: "), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # no run folder, no store


def test_unusable_external_arms_are_named(tmp_path, smoke_recipe_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    (tmp_path / "empty").mkdir()
    for arm, says in [(f"external:x={bad}", "lacks column"), (f"external:x={tmp_path / 'empty'}", "no images"),
                      (f"external:dm={bad}", "name 'dm' is taken")]:
        result = _bench(tmp_path, smoke_recipe_path, f"benchmark.arms=[real, '{arm}']", extra=("--dry-run", "--no-estimate"))
        assert result.exit_code == 2 and says in result.output and f"benchmark arm {arm}" in result.output, result.output


# ------------------------------------------------------------------------ generator continuation


def test_generator_key_ignores_train_steps_only(smoke_recipe_path):
    two, four = (load_recipe(smoke_recipe_path, [f"train.steps={n}"]) for n in (2, 4))
    assert generator_key(two) == generator_key(four)
    assert generator_key(two) != generator_key(load_recipe(smoke_recipe_path, ["train.steps=2", "train.lr=1e-3"]))


def test_generator_folder_continues_a_shorter_run_and_branches_past_a_longer_one(tmp_path, smoke_recipe_path):
    recipe = {n: load_recipe(smoke_recipe_path, [f"train.steps={n}"]) for n in (2, 3, 4)}
    base = generator_folder(tmp_path, "dm", recipe[4])
    assert not base.exists() and generator_status(base, 4) == ("new", 0)
    _fake_generator(base, 2)
    assert generator_folder(tmp_path, "dm", recipe[4]) == base and generator_status(base, 4) == ("resume", 2)
    assert generator_status(base, 2) == ("reuse", 2)
    _fake_generator(base, 4)
    # A run past the request is never cut back: the shorter request trains in a branch from zero.
    branch = generator_folder(tmp_path, "dm", recipe[2])
    assert branch.name == f"{base.name}-b2" and not branch.exists()
    _fake_generator(branch, 2)
    assert generator_folder(tmp_path, "dm", recipe[3]) == branch  # furthest run not past 3 steps
    assert generator_folder(tmp_path, "dm", recipe[4]) == base
    _fake_generator(branch, 3)
    assert generator_folder(tmp_path, "dm", recipe[2]).name == f"{base.name}-b3"
    # Images of the 2-step generator never land beside those of the 4-step one (or another sampler).
    assert synthesis_folder(base, recipe[2]) != synthesis_folder(base, recipe[4])
    other = load_recipe(smoke_recipe_path, ["train.steps=4", "sample.steps=4"])
    assert synthesis_folder(base, other) != synthesis_folder(base, recipe[4])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two smoke benchmarks: ~1 min on an idle 2-core machine
def test_more_generator_steps_continue_the_stored_run(tmp_path, smoke_recipe_path):
    sets = ("benchmark.arms=[real, dm]", "classifier.epochs=1", "benchmark.metrics_per_grade=4")
    first = _bench(tmp_path, smoke_recipe_path, *sets, "train.steps=2", extra=("--quiet",))
    assert first.exit_code == 0, first.output
    # The Inception skip (no weights offline) is said once, not once per generator or per rank.
    assert first.output.count("Inception metrics skipped") == 1, first.output
    assert first.output.count("» classifier real, seed 0") == 1  # rank 0's collection pass is silent

    second = _bench(tmp_path, smoke_recipe_path, *sets, "train.steps=4", extra=("--quiet",))
    assert second.exit_code == 0, second.output
    assert "generator dm (gamma = 0): resume from step 2 to 4" in second.output
    [root] = (tmp_path / "runs" / "store").glob("generator-dm-*")
    run = Run(root)
    assert [e["step"] for e in run.read_log("train_start")] == [0, 2]
    assert run.recipe().train.steps == 4  # config.yaml names where the run stops now
    assert len(list(root.glob("synthetic-step2-*"))) == len(list(root.glob("synthetic-step4-*"))) == 1


# ------------------------------------------------------------------------ time estimates


def test_dry_run_shows_a_time_per_stage_and_a_total_from_a_probe(tmp_path, smoke_recipe_path):
    result = _bench(tmp_path, smoke_recipe_path, "benchmark.arms=[real, dm]", extra=("--dry-run",))
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "┃ stage" in line)
    column = [c.strip() for c in header.split("┃")].index("time")
    rows = [[c.strip() for c in line.split("│")] for line in result.output.splitlines() if line.startswith("│")]
    assert {r[1] for r in rows} == {"generator", "synthesis", "classifier", "metrics", "total"}
    assert all(TIME_CELL.match(r[column]) for r in rows), rows
    probe = re.search(r"estimate from a ([\d.]+) s probe on this machine", result.output)
    assert probe and float(probe.group(1)) < 10

    plain = _bench(tmp_path, smoke_recipe_path, "benchmark.arms=[real, dm]", extra=("--dry-run", "--no-estimate"))
    assert plain.exit_code == 0 and "probe" not in plain.output, plain.output
    assert "time" not in next(line for line in plain.output.splitlines() if "┃ stage" in line)


def test_stage_times_are_units_left_times_unit_times(tmp_path, smoke_recipe_path):
    recipe = load_recipe(smoke_recipe_path, ["benchmark.arms=[real, dm, dm-translate]", "train.steps=10",
                                             "classifier.epochs=2", "benchmark.translate.strengths=[0.5]"])
    real = load_table(recipe.data)
    counts = synthesis_counts(recipe, real.split("train").counts())
    store = tmp_path / "store"
    _fake_generator(generator_folder(store, "dm", benchmark.generator_recipe(recipe, "dm")), 4)
    plan = make_plan(recipe, store, Splits.of(real))
    # generator steps 1 s, denoising steps of a 16-image batch 1 s; set-ups and classifiers free
    units = UnitTimes(generator_step={"dm": 1.0}, generator_setup=0.0, sample_step=1.0, sample_setup=0.0,
                      sample_batch=16, classifier_batch=0.0, classifier_setup=0.0, classifier_image=0.0)
    total = estimate_stages(plan, recipe, Splits.of(real), units, counts)
    by_name = {(s.kind, s.name): s.seconds for s in plan.stages}
    t = recipe.train
    grids = t.steps // t.sample_every - 4 // t.sample_every  # grids still due, each a 5 x 2-image batch
    assert by_name["generator", "dm"] == pytest.approx(6 * 1.0 + grids * 10 * recipe.sample.steps / 16)
    batches = sum(math.ceil(n / 16) for n in counts)
    assert by_name["synthesis", "dm"] == pytest.approx(batches * recipe.sample.steps)
    # a translation at strength 0.5 runs the steps at or below t0 = T / 2 only
    assert by_name["synthesis", "dm-translate strength 0.5"] == pytest.approx(batches * math.ceil(0.5 * recipe.sample.steps))
    assert total == pytest.approx(sum(v for (kind, _), v in by_name.items() if kind in ("generator", "synthesis")))


def test_dry_run_says_which_real_image_classifiers_are_stored(tmp_path, smoke_recipe_path):
    sets = ("benchmark.arms=[real, class-weighted, dm]", "classifier.epochs=1", "train.steps=2", "benchmark.seeds=[0]")
    store = tmp_path / "runs" / "store"
    recipe = load_recipe(smoke_recipe_path, list(sets))
    splits = Splits.of(load_table(recipe.data))
    before = {s.name: s for s in make_plan(recipe, store, splits).stages if s.kind == "classifier"}
    assert {n: s.status for n, s in before.items()} == {"real seed 0": "new", "class-weighted seed 0": "new",
                                                         "dm seed 0": "planned"}
    assert _bench(tmp_path, smoke_recipe_path, *sets, extra=("--quiet",)).exit_code == 0
    after = {s.name: s for s in make_plan(recipe, store, splits).stages if s.kind == "classifier"}
    # stored and finished: reused, no time; the generated images' classifier keys on its images
    assert {n: (s.status, s.left) for n, s in after.items()} == {"real seed 0": ("reuse", 0),
                                                                   "class-weighted seed 0": ("reuse", 0),
                                                                   "dm seed 0": ("planned", 1)}
    more = load_recipe(smoke_recipe_path, [*sets, "classifier.epochs=2"])  # another key: trains anew
    assert {s.status for s in make_plan(more, store, splits).stages if s.kind == "classifier"} == {"new", "planned"}
    units = UnitTimes(generator_step={"dm": 1.0}, generator_setup=1.0, sample_step=1.0, sample_setup=1.0,
                      sample_batch=16, classifier_batch=1.0, classifier_setup=1.0, classifier_image=1.0)
    plan = make_plan(recipe, store, splits)
    estimate_stages(plan, recipe, splits, units, synthesis_counts(recipe, splits.train.counts()))
    assert [s.seconds for s in plan.stages if s.status == "reuse" and s.kind == "classifier"] == [0.0, 0.0]


# ------------------------------------------------------------------------ one line per event


@pytest.fixture
def captured(monkeypatch):
    """stderr and stdout consoles writing to buffers that are not terminals (as in a log file)."""
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(odm_console, "err_console", Console(file=err, width=150))
    monkeypatch.setattr(bench_stage, "console", Console(file=out, width=150))
    return err, out


def test_progress_writes_plain_periodic_lines_when_not_a_terminal(captured):
    err, _ = captured
    bar = odm_console.progress("img", every=0.0)
    bar.start()
    task = bar.add_task("classifier test_resnet", total=4, info="")
    bar.update(task, advance=2)
    assert "classifier test_resnet: 2/4 img (50%)" in err.getvalue()  # visible before the job ends
    bar.update(task, advance=2, info="loss 0.500")
    bar.stop()
    lines = err.getvalue().splitlines()
    assert lines[-1].startswith("classifier test_resnet: 4/4 img (100%)") and lines[-1].endswith("loss 0.500")
    assert not any("━" in line for line in lines)  # no bar drawing in a log


def test_a_short_job_writes_one_line_at_its_end(captured):
    err, _ = captured
    with odm_console.progress("step") as bar:  # the default period is far longer than this job
        task = bar.add_task("training generator", total=3, info="")
        for _ in range(3):
            bar.update(task, advance=1)
        assert err.getvalue() == ""
    assert err.getvalue().count("training generator: 3/3 step (100%)") == 1
    assert len(err.getvalue().splitlines()) == 1


def test_warnings_stage_lines_and_progress_come_from_rank_zero_only(captured, monkeypatch):
    err, out = captured
    monkeypatch.setenv("RANK", "1")
    odm_console.warn("seen by every rank")
    bench_stage.say("generator dm: new")
    with odm_console.progress("img", every=0.0) as bar:
        bar.update(bar.add_task("synthesize", total=2, info=""), advance=2)
    assert err.getvalue() == "" and out.getvalue() == ""
    monkeypatch.setenv("RANK", "0")
    odm_console.warn("seen by every rank [sic]")
    bench_stage.say("generator dm: new")
    assert err.getvalue() == "warning: seen by every rank [sic]\n"
    assert out.getvalue() == "» generator dm: new\n"
