"""``odmaug benchmark --executor slurm|local``: the benchmark's stages as submitit jobs.

The plan is made here (every input checked before any job starts) and turned into waves of
independent stage jobs, each wave submitted through submitit (``slurm``: sbatch jobs with the
resources of ``benchmark.executor.<kind>``; ``local``: submitit's ``LocalExecutor``, real
processes on this machine) and waited for before the next:

1. per pass (the holdout, or each cross-validation fold): one job per generator, and with
   ``benchmark.filter`` one for the filter's classifier;
2. one job per set of synthetic images (per candidate strength of a translation arm), returning
   its images;
3. per translation arm with several candidate strengths: the strength selection (its first-seed
   classifier per candidate), returning the chosen strength;
4. one job per classifier: arm x seed x pass;
5. one job for the results: every pass run as the in-process benchmark runs it, each stage found
   in the store (reused), then a separate judge if asked for, the generative metrics,
   ``results.json`` and the report.

Each job calls the in-process benchmark's own stage function on the shared store
(:mod:`odmaug.benchmark.stage_jobs`, with a lock per stage), so the results equal a single-process
run's. A failed or killed job stops the benchmark after its wave with one error naming the stage
and its log (``<run>/jobs/``); the same command again reuses every finished stage and resumes the
one that was cut off. submitit is an optional dependency: ``pip install "odmaug[slurm]"``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from odmaug.benchmark.stage import Plan, Splits, say
from odmaug.benchmark.stage_jobs import StageJob, run_results, run_stage
from odmaug.config import Recipe
from odmaug.errors import OdmaugError
from odmaug.runs import Run

EXECUTORS = ("local", "slurm")
"""``--executor`` values: submitit's local executor, or Slurm."""
INSTALL = 'pip install "odmaug[slurm]"'


def check_executor(name: str, dry_run: bool = False) -> None:
    """Refuse an ``--executor`` that cannot run here, before anything is read or written; a
    ``dry_run`` (the plan, previewed anywhere) checks the name only.

    Raises:
        OdmaugError: not ``local``/``slurm``, submitit not installed, ``slurm`` without ``srun``
            on PATH, or a launch under torchrun (the jobs are the processes).
    """
    if name not in EXECUTORS:
        raise OdmaugError(f"--executor must be one of {', '.join(EXECUTORS)} (got {name!r})")
    if dry_run:
        return
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise OdmaugError(f"--executor {name} needs submitit: {INSTALL}") from None
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise OdmaugError(f"--executor {name} submits the stages as jobs: run it as one process, not under torchrun")
    if name == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise OdmaugError("--executor slurm: no Slurm here (srun is not on PATH, which submitit's sbatch jobs "
                          "use); run it on a cluster's login node, preview it with --dry-run, or use --executor local")


class Submitter:
    """submitit executors (``AutoExecutor`` of cluster ``local`` or ``slurm``) writing their scripts
    and logs to ``folder``: one per stage kind, set once to its ``benchmark.executor`` resources
    (submitit's parameters accumulate, so a kind never inherits another's partition)."""

    def __init__(self, cluster: str, folder: Path, recipe: Recipe) -> None:
        self.cluster, self.folder, self.settings = cluster, folder, recipe.benchmark.executor
        self.executors: dict[str, Any] = {}

    def parameters(self, kind: str) -> dict[str, Any]:
        """submitit's parameters for a job of resources ``kind``: the generic ones, Slurm's partition and account."""
        r = getattr(self.settings, kind)
        params: dict[str, Any] = dict(timeout_min=r.time_min, mem_gb=r.mem_gb, cpus_per_task=r.cpus,
                                      gpus_per_node=r.gpus, nodes=1, tasks_per_node=1)
        if r.partition is not None:
            params["slurm_partition"] = r.partition
        if self.settings.account is not None:
            params["slurm_account"] = self.settings.account
        return params

    def executor(self, kind: str):
        """The executor of resources ``kind`` (made on first use)."""
        if kind not in self.executors:
            import submitit

            self.executors[kind] = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
            self.executors[kind].update_parameters(**self.parameters(kind))
        return self.executors[kind]

    def submit(self, job: StageJob, fn, *args):
        executor = self.executor(job.resources)
        executor.update_parameters(name=job.name)
        return executor.submit(fn, *args)


def _failure(stage: StageJob, job, cluster: str) -> Optional[str]:
    """None when ``job`` finished; else one line naming the stage, why, and its log."""
    if cluster == "local" and not job.paths.result_pickle.exists():
        why = f"killed or stopped (state {job.state})"  # a finished local process leaves no result to wait for
    else:
        error = job.exception()
        if error is None:
            return None
        lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith("-" * 10)]
        errors = [line for line in lines if "error" in line.lower()]
        why = (errors or lines or ["failed"])[-1]
    return f"stage job {stage.name} ({cluster} job {job.job_id}) failed: {why.strip()}; log: {job.paths.stderr}"


def run_wave(submitter: Submitter, name: str, wave: list[tuple[StageJob, tuple]], fn=run_stage) -> list[Any]:
    """Submit every job of a wave, wait for all of them, return their results in order.

    Raises:
        OdmaugError: a job failed or was killed: the first one named, with its log, and how many failed.
    """
    if not wave:
        return []
    # unset: Slurm takes the whole wave (the scheduler queues it); local runs one job per core here
    limit = submitter.settings.max_jobs or (len(wave) if submitter.cluster == "slurm" else os.cpu_count() or 1)
    say(f"{name}: {len(wave)} job(s) ({submitter.cluster}, {min(limit, len(wave))} at a time): "
        f"{', '.join(s.name for s, _ in wave)}")
    jobs: list = []
    for stage, args in wave:
        while sum(not job.done() for job in jobs) >= limit:  # benchmark.executor.max_jobs
            time.sleep(1.0)
        jobs.append(submitter.submit(stage, fn, stage, *args))
    failures = []
    for (stage, _), job in zip(wave, jobs):
        job.wait()
        failure = _failure(stage, job, submitter.cluster)
        if failure:
            failures.append(failure)
    if failures:
        more = f" ({len(failures) - 1} more job(s) of this wave failed too)" if len(failures) > 1 else ""
        raise OdmaugError(f"{failures[0]}{more}; run the same command again: finished stages are reused and "
                          "this one resumes")
    return [job.result() for job in jobs]


def _first_waves(recipe: Recipe, plans: list[Plan], passes: list[Splits], device: str) -> list[list]:
    """Waves 1 and 2: the generators (and the filter's classifier), then the synthesis jobs."""
    from odmaug.benchmark.synthesis_stage import synthetic_sets

    generators, synthesis = [], []
    for i, (plan, splits) in enumerate(zip(plans, passes)):
        p = splits.prefix
        reused = {s.name for s in plan.stages if s.kind == "generator" and s.status == "reuse"}
        generators += [(StageJob("generator", f"{p}generator-{g}", i, g), (recipe, plan, splits, device))
                       for g in plan.generator_arms() if g not in reused]  # a job only for work left
        if recipe.benchmark.filter is not None and any(a.synthetic_name is not None for a in plan.arms):
            generators.append((StageJob("filter", f"{p}filter-real-seed{recipe.benchmark.seeds[0]}", i),
                               (recipe, plan, splits, device)))
        synthesis += [(StageJob("synthesis", f"{p}synthesis-{s.key}", i, s.key), (recipe, plan, splits, device))
                      for s in synthetic_sets(plan, recipe)]
    return [generators, synthesis]


def _selection_wave(recipe: Recipe, plans: list[Plan], passes: list[Splits], device: str,
                    images: dict[tuple[int, str], Any]) -> tuple[list, dict[tuple[int, str], float]]:
    """Wave 3 (one job per pass and set of translated images, ``target`` its synthetic name), and the
    strengths known without it: (pass, synthetic name) -> the only candidate."""
    from odmaug.benchmark.selection import translation_arms

    wave, chosen = [], {}
    strengths = sorted(recipe.benchmark.translate.strengths)
    for i, (plan, splits) in enumerate(zip(plans, passes)):
        for arm in translation_arms(plan):  # one per set of images: a combination shares its first arm's strength
            if len(strengths) == 1:
                chosen[(i, arm.synthetic_name)] = strengths[0]
                continue
            candidates = {s: images[(i, f"{arm.synthetic_name}@{s:g}")] for s in strengths}
            wave.append((StageJob("selection", f"{splits.prefix}selection-{arm.file_label}", i, arm.synthetic_name),
                         (recipe, plan, splits, device, candidates)))
    return wave, chosen


def _classifier_wave(recipe: Recipe, plans: list[Plan], passes: list[Splits], device: str, bench_root: str,
                     images: dict[tuple[int, str], Any], chosen: dict[tuple[int, str], float]) -> list:
    """Wave 4: one job per classifier not stored yet, each given its arm's images (translation arms:
    the chosen strength's); the results job collects the stored ones."""
    from odmaug.benchmark.classifiers import classifier_jobs, images_known, is_stored

    wave = []
    for i, (plan, splits) in enumerate(zip(plans, passes)):
        for one in classifier_jobs(plan, recipe):
            name, key = one.arm.synthetic_name, one.arm.synthetic_name
            if (i, name) in chosen:
                key = f"{name}@{chosen[(i, name)]:g}"
            synthetic = {name: images[(i, key)]} if (i, key) in images else {}
            known = images_known(one, recipe, plan, synthetic)
            if known is not None and is_stored(one, recipe, splits, known, plan.store):
                continue
            given = {"synthetic": synthetic, "bench_root": bench_root}
            wave.append((StageJob("classifier", f"{splits.prefix}classifier-{one.file_name}", i, one.arm.label, one.seed),
                         (recipe, plan, splits, device, given)))
    return wave


def run_with_executor(recipe: Recipe, base: Path, plans: list[Plan], passes: list[Splits], shown: Plan,
                      cluster: str, device: str) -> tuple[Run, dict[str, Any]]:
    """Run the planned benchmark as waves of submitit jobs (see the module docstring).

    Returns:
        The benchmark's run folder and its results (``results.json``), as
        :func:`~odmaug.benchmark.run.run_benchmark` returns them.

    Raises:
        OdmaugError: a stage job failed or was killed (named, with its log under ``<run>/jobs/``).
    """
    from odmaug.benchmark.passes import print_plan
    from odmaug.runs import create_run

    started_at = time.time()
    bench_run = create_run(recipe, base, f"benchmark-{recipe.name}")
    print_plan(shown)
    bench_run.log("benchmark_plan", stages=shown.records(), executor=cluster)
    submitter = Submitter(cluster, bench_run.subdir("jobs"), recipe)
    generators, synthesis = _first_waves(recipe, plans, passes, device)
    run_wave(submitter, "generators", generators)
    made = run_wave(submitter, "synthesis", synthesis)
    images = {(stage.index, stage.target): table for (stage, _), table in zip(synthesis, made)}
    selection, chosen = _selection_wave(recipe, plans, passes, device, images)
    picked = run_wave(submitter, "strength selection", selection)
    chosen |= {(stage.index, stage.target): strength for (stage, _), strength in zip(selection, picked)}
    bench_root = str(bench_run.root.resolve())
    run_wave(submitter, "classifiers", _classifier_wave(recipe, plans, passes, device, bench_root, images, chosen))
    [results] = run_wave(submitter, "results", [(StageJob("results", "results"),
                                                  (recipe, plans, passes, bench_root, device, started_at))], run_results)
    _print_report(results, bench_run)  # as the in-process benchmark prints them, --quiet or not
    return bench_run, results


def _print_report(results: dict[str, Any], bench_run: Run) -> None:
    """What the in-process benchmark prints at its end, from the results job's ``results.json``."""
    from odmaug.benchmark.results import print_summary

    report = bench_run.root / "report"
    print_summary(results, f"report: {report / 'report.md'}  {report / 'report.html'}  (job logs: {bench_run.root / 'jobs'})")
