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


def plan_classifiers(plan: Plan, recipe: Recipe) -> None:
    """One ``planned`` stage per job (their keys need the synthetic images, not made yet)."""
    n_epochs = recipe.classifier.epochs
    for job in classifier_jobs(plan, recipe):
        plan.stages.append(Stage("classifier", f"{job.arm.label} seed {job.seed}", plan.store, "planned",
                                 f"{n_epochs} epochs", n_epochs, arm=job.arm.label))


def _train_one(job: Job, recipe: Recipe, splits: Splits, synthetic: dict[str, ImageTable], bench_run: Run,
               store: Path, device: str, show_progress: bool) -> dict[str, Any]:
    from odmaug.classify.levers import SyntheticLevers
    from odmaug.classify.train import train_classifier

    from odmaug.benchmark.remedies import arm_recipe

    recipe = arm_recipe(recipe, job.arm)  # the arm's own classifier options (remedy arms), if any
    table, counts = training_table(job.arm, splits, synthetic, recipe, job.seed)
    write_dataset(table, splits, bench_run.subdir("datasets") / f"{splits.prefix}{job.file_name}.csv")
    train = table.split("train")
    out_dir = classifier_folder(store, job.arm.file_label, recipe, (train, splits.val, splits.test), job.seed)
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
