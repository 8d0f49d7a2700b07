"""Stage 6, results: per-arm summaries, paired differences, the bootstrap, the generative metrics,
``results.json`` and the benchmark report (rank 0 only).

Every figure comes from what earlier stages stored (classifier results and predictions, synthetic
images), so results.json and the report can be rebuilt from the store.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odmaug.atomic import atomic_write_json
from odmaug.benchmark.classifiers import Results
from odmaug.benchmark.generator_metrics import measure_generators
from odmaug.benchmark.judge import choose_judge, judge_warnings
from odmaug.benchmark.stage import Plan, Splits
from odmaug.config import Recipe
from odmaug.console import console, warn
from odmaug.data import ImageTable
from odmaug.runs import Run
from odmaug.benchmark.seed_records import METRICS, seed_record

def summarise_arms(arms: dict[str, dict[str, Any]], num_classes: int) -> dict[str, Any]:
    """Per arm: mean, std and 95% interval of every metric over seeds (set as ``summary``); returns
    the paired differences against ``real`` and ``oversample`` (arm -> ``vs_<ref>`` -> metric)."""
    from odmaug.metrics.classification import summarize_runs

    keys = list(METRICS) + [f"recall_grade_{g}" for g in range(num_classes)]
    for data in arms.values():
        data["summary"] = {k: summarize_runs([s[k] for s in data["seeds"].values()]) for k in keys}
    paired: dict[str, Any] = {}
    for arm, data in arms.items():
        for ref in ("real", "oversample"):
            if ref == arm or ref not in arms:
                continue
            seeds = sorted(set(data["seeds"]) & set(arms[ref]["seeds"]))
            paired.setdefault(arm, {})[f"vs_{ref}"] = {
                k: summarize_runs([
                    data["seeds"][s][k] - arms[ref]["seeds"][s][k]
                    for s in seeds
                    if data["seeds"][s][k] is not None and arms[ref]["seeds"][s][k] is not None
                ])
                for k in keys
            }
    return paired


def arm_results(plan: Plan, classifiers: Results, num_classes: int) -> dict[str, dict[str, Any]]:
    """Per arm of the plan (by label): per-seed figures, classifier folders and training counts."""
    arms = {}
    for arm in plan.arms:
        runs = classifiers[arm.label]
        arms[arm.label] = {"seeds": {seed: seed_record(r["test"], num_classes) for seed, r in runs.items()},
                           "classifiers": {seed: r["dir"] for seed, r in runs.items()},
                           "training_counts": {seed: r["counts"] for seed, r in runs.items()}}
    return arms


@dataclass
class Pass:
    """One pass of the stages (the holdout's one, or one cross-validation fold) and what it made."""

    plan: Plan
    splits: Splits
    synthetic: dict[str, ImageTable]
    classifiers: Results
    strengths: dict[str, Any] = field(default_factory=dict)  # translation arm -> its strength choice on val


def _test_description(recipe: Recipe, passes: list[Pass]) -> str:
    first = passes[0].splits
    if first.fold is None:
        return f"{first.name} real test split, {len(first.test)} images {first.test.counts().tolist()}"
    counts = sum(p.splits.test.counts() for p in passes)
    cv = recipe.benchmark.cv
    pool = "all labelled images" if cv.scope == "all" else "the train and val splits"
    frames = [p.splits.test.frame for p in passes]
    grouped = all("group" in f.columns and f["group"].notna().all() for f in frames)
    patients = len(set().union(*(set(f["group"].astype(str)) for f in frames))) if grouped else 0
    how = f"stratified and grouped by patient ({patients} groups)" if grouped else "stratified by grade"
    return (f"{first.name}, {len(passes)}-fold cross-validation over {pool}, {how}: the folds' test parts pooled, "
            f"{int(counts.sum())} images {counts.tolist()}, each tested once by a fold whose generators and "
            "classifiers never saw it")


def _classification(recipe: Recipe, passes: list[Pass]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per-arm figures, the bootstrap (on the test split, holdout, or pooled over folds, cv) and
    the best cheap remedy against every generator arm (:mod:`odmaug.benchmark.cheap`)."""
    from odmaug.benchmark.cheap import best_cheap_arm, cheap_remedy_record, validation_qwk
    from odmaug.benchmark.protocol import pooled_arms
    from odmaug.benchmark.uncertainty import benchmark_bootstrap  # seeds x test images

    plan_arms, c = passes[0].plan.arms, recipe.data.num_classes
    val = validation_qwk(plan_arms, [p.classifiers for p in passes])  # chosen on validation, never test
    best = best_cheap_arm(val)
    refs = ("real", "oversample") + ((best,) if best else ())
    if passes[0].splits.fold is None:
        arms = arm_results(passes[0].plan, passes[0].classifiers, c)
        bootstrap = benchmark_bootstrap(arms, c, recipe.seed, refs=refs)
    else:
        labels = [arm.label for arm in plan_arms]
        arms, bootstrap = pooled_arms([(p.splits, p.classifiers) for p in passes], labels, recipe, refs)
    return arms, bootstrap, cheap_remedy_record(plan_arms, val, best, bootstrap, c)


def _shortfall_notes(recipe: Recipe, passes: list[Pass]) -> list[str]:
    """One note per arm (and fold) whose balancing got fewer images than it asked for, per grade;
    and, under the filter, that the same classifier filtered and judges the images."""
    notes = []
    for p in passes:
        where = "" if p.splits.fold is None else f" (fold {p.splits.fold})"
        for arm, runs in p.classifiers.items():
            counts = next(iter(runs.values()))["counts"]
            short = (counts or {}).get("shortfall") or []
            if any(short):
                notes.append(f"{arm}{where}: not balanced, per grade {short} fewer images than balancing asked for "
                             f"(totals {counts['total']}){' after the filter' if recipe.benchmark.filter else ''}")
    if recipe.benchmark.filter is not None:
        notes.append("filter: the generators' metrics and grade fidelity measure the kept images, judged by the same "
                     "real-arm classifier that filtered them (fidelity is therefore optimistic)")
    return notes


def collect_results(recipe: Recipe, passes: list[Pass], bench_run: Run, device: str, started: float) -> dict[str, Any]:
    """Summaries, generative metrics, ``<run>/results.json`` and the report; returns the results.

    Generative metrics come from the first pass (under cv: fold 0's generators against fold 0's
    real training images; every fold trains its own generators).
    """
    num_classes = recipe.data.num_classes
    arms, bootstrap, cheap = _classification(recipe, passes)
    paired = summarise_arms(arms, num_classes)
    first = passes[0]
    judge = choose_judge(recipe, first.splits, first.classifiers["real"], first.plan.store, device, bool(first.synthetic))
    generative = measure_generators(recipe, first.splits, first.synthetic, Path(judge["dir"]), device,
                                    bench_run.subdir("report") / "figures")
    judge["real_reference"] = generative["real_reference"]
    judge["warnings"] = judge_warnings(judge, recipe) if first.synthetic else []
    notes = generative["notes"] + ([bootstrap["error"]] if "error" in bootstrap else [])
    notes += _shortfall_notes(recipe, passes) + judge["warnings"]
    for note in notes[len(generative["notes"]):]:
        warn(note)
    if first.splits.fold is not None and first.synthetic:
        notes.append(f"generative metrics: fold 0's generators (each of the {len(passes)} folds trains its own)")
    results = {
        "name": recipe.name,
        "num_classes": num_classes,
        "seeds": recipe.benchmark.seeds,
        "protocol": recipe.benchmark.protocol,
        "test_description": _test_description(recipe, passes),
        "arms": arms,
        "paired": paired,
        "bootstrap": bootstrap,
        "cheap_remedy": cheap,  # the best non-generative arm (by validation) against every generator arm
        "generators": generative["generators"],
        "generator_runs": {f"{p.splits.prefix}{name}": str(root) for p in passes for name, root in p.plan.generators.items()},
        # per pass ("holdout", "fold0"...): each translation arm's candidates, val QWKs and choice
        "translation": {p.splits.prefix.rstrip("-") or "holdout": p.strengths for p in passes if p.strengths},
        "domain_classifier": judge["dir"],
        "judge": judge,
        "extractors": generative["extractors"],
        "grids": generative["grids"],
        "notes": notes,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(bench_run.root / "results.json", results)
    _report(results, bench_run)
    return results


def _report(results: dict[str, Any], bench_run: Run) -> None:
    """Write the benchmark report and print its tables."""
    from odmaug.benchmark.report import write_benchmark_report

    env = json.loads(bench_run.env_path.read_text())
    paths = write_benchmark_report(results, bench_run.subdir("report"), bench_run.config_path.read_text(), env)
    bench_run.log("benchmark_done", wall_time_s=results["wall_time_s"], report=str(paths["html"]))
    print_summary(results, f"report: {paths['markdown']}  {paths['html']}")


def print_summary(results: dict[str, Any], last_line: str) -> None:
    """What the console shows at the end of a benchmark, in process or under ``--executor``: the
    generator and arm tables, the verdict and the cheap-remedy lines (the report's first lines), then
    ``last_line`` (where the report is)."""
    from odmaug.benchmark.report import arm_table, generator_table
    from odmaug.benchmark.report.verdict import remedy_lines, verdict

    if results["generators"]:
        console.print(generator_table(results))
    console.print(arm_table(results))
    for line in [verdict(results), *remedy_lines(results), last_line]:
        console.print(line, markup=False, highlight=False)
