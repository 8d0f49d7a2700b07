"""Stage 4, classifiers: the same classifier configuration per arm and seed, trained and collected in one pass.

Under torchrun the jobs are spread over the ranks (job ``i`` on rank ``i mod K``). Each job
writes its result beside the benchmark (``classifiers/<arm>-seed<S>.json``: folder, test metrics,
training counts, the synthetic-row levers that acted on its table); after the barrier rank 0
reads the other ranks' jobs from there, so nothing is walked twice. The ``real`` arm always runs
(its first seed's classifier is the domain feature extractor), with one seed when
``benchmark.arms`` does not name it. ``classifier.synthetic_batch_share`` and
``synthetic_label_smoothing`` apply to every arm alike: they act on the synthetic rows of a
table and are inactive for an arm without any (:mod:`odmaug.classify.levers`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odmaug.atomic import atomic_write_json
from odmaug.benchmark.arms import Arm
from odmaug.benchmark.arm_specs import parse_arm
from odmaug.benchmark.datasets import training_table, write_dataset
from odmaug.benchmark.stage import Plan, Splits, Stage, say
from odmaug.benchmark.store import classifier_folder
from odmaug.config import Recipe
from odmaug.data import ImageTable
from odmaug.distributed import Context, barrier
from odmaug.runs import Run

Results = dict[str, dict[int, dict[str, Any]]]  # arm label -> seed -> {"dir", "test", "counts"}


@dataclass(frozen=True)
class Job:
    """One classifier: an arm and a seed."""

    arm: Arm
    seed: int

    @property
    def file_name(self) -> str:
        return f"{self.arm.file_label}-seed{self.seed}"


def classifier_jobs(plan: Plan, recipe: Recipe) -> list[Job]:
    """Every classifier the benchmark trains, in order: ``real`` first, then the other arms."""
    seeds = recipe.benchmark.seeds
    real = next((a for a in plan.arms if a.label == "real"), None)
    jobs = [Job(real, seed) for seed in seeds] if real is not None else [Job(parse_arm("real"), seeds[0])]
    return jobs + [Job(arm, seed) for arm in plan.arms if arm.label != "real" for seed in seeds]


def job_folder(job: Job, recipe: Recipe, splits: Splits, synthetic: dict[str, ImageTable], store: Path):
    """The job's own recipe (a remedy arm's classifier options), training table, per-grade counts
    and the store folder it trains in (keyed by its settings, its tables and its seed)."""
    from odmaug.benchmark.remedies import arm_recipe

    own = arm_recipe(recipe, job.arm)
    table, counts = training_table(job.arm, splits, synthetic, own, job.seed)
    folder = classifier_folder(store, job.arm.file_label, own, (table.split("train"), splits.val, splits.test), job.seed)
    return own, table, counts, folder


def is_stored(job: Job, recipe: Recipe, splits: Splits, synthetic: dict[str, ImageTable], store: Path) -> bool:
    """Whether the job's classifier is in the store, finished, under its key (reads only)."""
    from odmaug.classify.state import fingerprint, is_finished

    own, table, _, folder = job_folder(job, recipe, splits, synthetic, store)
    return is_finished(folder, fingerprint(own, table.split("train"), splits.val, splits.test, job.seed))


def images_known(job: Job, recipe: Recipe, plan: Plan, generated: dict[str, ImageTable]) -> dict | None:
    """The synthetic images the job's key depends on, where known before it runs: none (an arm of
    real images), its set in ``generated``, or external images (unless ``benchmark.filter`` grades
    them first); None where they are not known yet."""
    name = job.arm.synthetic_name
    if name is None:
        return {}
    if name in generated:
        return generated
    return plan.externals if name in plan.externals and recipe.benchmark.filter is None else None


def plan_classifiers(plan: Plan, recipe: Recipe, splits: Splits) -> None:
    """One stage per job: ``reuse`` (stored and finished) or ``new`` where its table is known now
    (real images, a remedy, oversampling, external images); ``planned`` for a job whose table
    waits on its generator's images (its key needs them)."""
    n_epochs = recipe.classifier.epochs
    for job in classifier_jobs(plan, recipe):
        status, left = "planned", n_epochs
        if (known := images_known(job, recipe, plan, {})) is not None:
            status, left = ("reuse", 0) if is_stored(job, recipe, splits, known, plan.store) else ("new", n_epochs)
        plan.stages.append(Stage("classifier", f"{job.arm.label} seed {job.seed}", plan.store, status,
                                 f"{n_epochs} epochs" if left else "stored", left, arm=job.arm.label))


def _train_one(job: Job, recipe: Recipe, splits: Splits, synthetic: dict[str, ImageTable], bench_run: Run,
               store: Path, device: str, show_progress: bool) -> dict[str, Any]:
    from odmaug.classify.levers import SyntheticLevers
    from odmaug.classify.train import train_classifier

    recipe, table, counts, out_dir = job_folder(job, recipe, splits, synthetic, store)  # a remedy arm's own options
    write_dataset(table, splits, bench_run.subdir("datasets") / f"{splits.prefix}{job.file_name}.csv")
    train = table.split("train")
    say(f"classifier {job.arm.label}, seed {job.seed}: {len(train)} training images {train.counts().tolist()} "
        f"-> {out_dir.name}")
    result = train_classifier(recipe, train, splits.val, splits.test, out_dir, job.seed, device, show_progress=show_progress)
    record = {"dir": str(result.out_dir), "test": result.test, "val": result.val, "counts": None if counts is None else counts.to_dict("list"),
              "synthetic_levers": SyntheticLevers.active(recipe.classifier, train).record(),
              "training": dict(job.arm.kind.training)}
    atomic_write_json(bench_run.subdir("classifiers") / f"{splits.prefix}{job.file_name}.json", record)
    return record


def train_classifiers(plan: Plan, recipe: Recipe, splits: Splits, synthetic: dict[str, ImageTable], bench_run: Run,
                      device: str, show_progress: bool, context: Context) -> Results:
    """Train this rank's jobs; on rank 0, return every job's result (after every rank is done)."""
    jobs = classifier_jobs(plan, recipe)
    mine: dict[int, dict[str, Any]] = {}
    for index, job in enumerate(jobs):
        if index % context.world_size != context.rank:  # rank 0 speaks for every job: where it runs
            say(f"classifier {job.arm.label}, seed {job.seed}: on rank {index % context.world_size}")
            continue
        mine[index] = _train_one(job, recipe, splits, synthetic, bench_run, plan.store, device, show_progress)
    barrier(context)
    results: Results = {}
    if context.is_main:
        for index, job in enumerate(jobs):
            stored = bench_run.root / "classifiers" / f"{splits.prefix}{job.file_name}.json"
            record = mine.get(index) or json.loads(stored.read_text())
            results.setdefault(job.arm.label, {})[job.seed] = record
    return results
