"""What one stage job of ``odmaug benchmark --executor`` runs (:mod:`odmaug.benchmark.executor`
submits it): the same stage function the in-process benchmark calls, restricted to one stage,
against the same store, under a per-stage lock.

The lock is a :class:`~odmaug.augment.lock.FolderLock` at ``<store>/.locks/<stage folder>``
(``/`` written ``--``), with a lease: the job renews it every :data:`RENEW_S` seconds, and a lock
not renewed for :data:`LEASE_S` seconds is a dead job's, even one of another node. A second job
for a stage a live job holds waits for it (up to ``benchmark.executor.lock_wait_min``) and then
finds the stage finished; a killed job's lock (its pid gone on this host, or its lease run out)
is taken over and the stage resumes from what the store holds (a generator from its last
checkpoint, synthesis image by image, a classifier from its last epoch).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional

from odmaug.benchmark.stage import Plan, Splits, say
from odmaug.config import Recipe
from odmaug.errors import OdmaugError

LOCKS = ".locks"
"""The store's folder of per-stage locks."""
LEASE_S = 300.0
"""A stage lock not renewed for this long (seconds) is a dead job's, whichever node it names."""
RENEW_S = 30.0
"""How often a job renews the lock of the stage it builds (seconds)."""
POLL_S = 1.0
"""How often a job waiting for a held stage tries again (seconds)."""


@dataclass(frozen=True)
class StageJob:
    """One job: a stage ``kind`` (``generator``, ``filter``, ``synthesis``, ``selection``,
    ``classifier``, ``results``) of pass ``index`` (the holdout's 0, or fold ``index``).

    ``target`` is the generator name, the synthetic set's key (``odm``, ``odm-translate@0.5``), the
    translated images' name (selection) or the arm label (classifier); ``seed`` the classifier seed.
    ``name`` names the job for the scheduler and its log.
    """

    kind: str
    name: str
    index: int = 0
    target: str = ""
    seed: Optional[int] = None

    @property
    def resources(self) -> str:
        """Its section of ``benchmark.executor``: the filter and strength selection train classifiers."""
        return {"filter": "classifier", "selection": "classifier"}.get(self.kind, self.kind)


def lock_dir(store: Path, folder: Path) -> Path:
    """The lock folder of the stage that builds ``folder`` (a generator, synthesis or classifier folder)."""
    try:
        name = folder.resolve().relative_to(store.resolve()).as_posix().replace("/", "--")
    except ValueError:  # not under the store: keyed by its whole path
        name = folder.resolve().as_posix().strip("/").replace("/", "--")
    return store / LOCKS / name


def _renew(lock, stop: threading.Event) -> None:
    while not stop.wait(RENEW_S):
        lock.renew()


@contextlib.contextmanager
def stage_lock(store: Path, folder: Path, wait_s: float) -> Iterator[None]:
    """Hold the lock of the stage building ``folder`` while the block runs (renewed in a thread).

    Raises:
        OdmaugError: another live job still holds it after ``wait_s`` seconds (naming that job).
    """
    from odmaug.augment.lock import FolderLock

    lock = FolderLock(lock_dir(store, folder), command=f"benchmark stage {folder.name}", lease_s=LEASE_S)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock.acquire()
            break
        except (OdmaugError, FileNotFoundError) as err:  # FileNotFoundError: the holder's release removed the folder
            if time.monotonic() >= deadline:
                raise OdmaugError(f"{err} (waited {wait_s:.0f} s)") from None
            time.sleep(POLL_S)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lock, stop), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        lock.release()


def classifier_dir(arm, synthetic: dict, recipe: Recipe, splits: Splits, store: Path, seed: int) -> Path:
    """The store folder of ``arm``'s classifier with ``seed`` on ``synthetic`` images: what
    :func:`~odmaug.benchmark.classifiers.train_classifiers` and
    :func:`~odmaug.benchmark.selection.train_first_seed` train in."""
    from odmaug.benchmark.classifiers import Job, job_folder

    return job_folder(Job(arm, seed), recipe, splits, synthetic, store)[3]


def _wait_s(recipe: Recipe) -> float:
    return 60.0 * recipe.benchmark.executor.lock_wait_min


def _generator(job: StageJob, recipe: Recipe, plan: Plan, splits: Splits, context, given) -> None:
    from odmaug.benchmark.generators import train_generators

    arm = plan.generator_arms()[job.target]
    with stage_lock(plan.store, plan.generators[job.target], _wait_s(recipe)):
        train_generators(replace(plan, arms=[arm]), recipe, splits, False, context)


def _filter(job: StageJob, recipe: Recipe, plan: Plan, splits: Splits, context, given) -> None:
    from odmaug.benchmark.arm_specs import parse_arm
    from odmaug.benchmark.selection import filter_classifier

    folder = classifier_dir(parse_arm("real"), {}, recipe, splits, plan.store, recipe.benchmark.seeds[0])
    with stage_lock(plan.store, folder, _wait_s(recipe)):
        filter_classifier(plan, recipe, splits, context, False)


def _synthesis(job: StageJob, recipe: Recipe, plan: Plan, splits: Splits, context, given):
    """Returns the set's requested (and kept) images, an ImageTable, for the later jobs."""
    from odmaug.benchmark.selection import filter_classifier
    from odmaug.benchmark.synthesis_stage import _make_set, synthesis_counts, synthetic_sets

    item = next(i for i in synthetic_sets(plan, recipe) if i.key == job.target)
    grade_filter = filter_classifier(plan, recipe, splits, context, False)  # stored by the filter job
    counts = synthesis_counts(recipe, splits.train.counts())
    with stage_lock(plan.store, plan.synthesis[item.key], _wait_s(recipe)):
        return _make_set(item, plan, recipe, splits, counts, context, False, grade_filter)


def _selection(job: StageJob, recipe: Recipe, plan: Plan, splits: Splits, context, given) -> float:
    """``given``: candidate strength -> its images. Returns the chosen strength."""
    from odmaug.benchmark.selection import choose_strength

    arm = next(a for a in plan.arms if a.synthetic_name == job.target)  # the first arm of these images, as synthesize()
    seed = recipe.benchmark.seeds[0]
    folders = sorted({classifier_dir(arm, {arm.synthetic_name: t}, recipe, splits, plan.store, seed)
                      for t in given.values()})
    with contextlib.ExitStack() as held:
        for folder in folders:  # in one order in every job: no two jobs wait for each other
            held.enter_context(stage_lock(plan.store, folder, _wait_s(recipe)))
        return choose_strength(arm, given, recipe, splits, plan.store, context, False)[0]


def _classifier(job: StageJob, recipe: Recipe, plan: Plan, splits: Splits, context, given) -> None:
    """``given``: ``{"synthetic": {name: images}, "bench_root": <benchmark run folder>}``."""
    from odmaug.benchmark.classifiers import _train_one, classifier_jobs
    from odmaug.benchmark.selection import filter_classifier
    from odmaug.benchmark.synthesis_stage import _filtered_externals
    from odmaug.runs import Run

    one = next(j for j in classifier_jobs(plan, recipe) if j.arm.label == job.target and j.seed == job.seed)
    synthetic = dict(given["synthetic"])
    name = one.arm.synthetic_name
    if name in plan.externals:  # graded by the filter's classifier here, as synthesize() grades them
        mine = replace(plan, externals={name: plan.externals[name]})
        synthetic |= _filtered_externals(mine, filter_classifier(plan, recipe, splits, context, False), context)
    folder = classifier_dir(one.arm, synthetic, recipe, splits, plan.store, one.seed)
    with stage_lock(plan.store, folder, _wait_s(recipe)):
        _train_one(one, recipe, splits, synthetic, Run(Path(given["bench_root"])), plan.store, context.device, False)


STAGES = {"generator": _generator, "filter": _filter, "synthesis": _synthesis, "selection": _selection,
          "classifier": _classifier}


def run_stage(job: StageJob, recipe: Recipe, plan: Plan, splits: Splits, device: str, given: Any = None) -> Any:
    """A stage job's body (in the job's process): join the device, build ``job``'s one stage with the
    in-process benchmark's own function, return what later jobs need (images, a chosen strength)."""
    from odmaug.device import resolve_device
    from odmaug.distributed import init_distributed, shutdown

    context = init_distributed(resolve_device(device))
    try:
        say(f"job {job.name}: {job.kind} stage of pass {job.index}")
        return STAGES[job.kind](job, recipe, plan, splits, context, given)
    finally:
        shutdown(context)


def run_results(job: StageJob, recipe: Recipe, plans: list[Plan], passes: list[Splits], bench_root: str,
                device: str, started_at: float) -> dict[str, Any]:
    """The last job: every pass in order exactly as the in-process benchmark runs it (each stage
    found in the store and reused), then the generative metrics, ``results.json`` and the report.
    ``started_at``: the submission's ``time.time()``, so ``wall_time_s`` covers every job."""
    from odmaug.benchmark.passes import run_passes
    from odmaug.device import resolve_device
    from odmaug.distributed import init_distributed, shutdown
    from odmaug.runs import Run

    context = init_distributed(resolve_device(device))
    try:
        started = time.perf_counter() - (time.time() - started_at)
        return run_passes(recipe, plans, passes, Run(Path(bench_root)), context, False, started)
    finally:
        shutdown(context)
