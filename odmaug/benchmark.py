"""``odmaug benchmark``: does ODM augmentation help? Every stage, one results file, one report.

Stages (each reads only what earlier stages wrote, so any of them can be re-run alone):

1. generators: DM (gamma = 0) and ODM trained from the recipe;
2. synthesis: per generator, the images balancing needs, plus ``metrics_per_grade`` per grade;
3. datasets: one balanced training manifest per arm and seed (validation and test stay real);
4. classifiers: the same classifier configuration per arm and seed;
5. generative metrics and grade fidelity per generator (domain features: the ``real`` arm's
   first-seed classifier; Inception when its weights are available);
6. results.json, tables and the report.

Expensive outputs live in a content-addressed store ``<runs_dir>/store/<kind>-<hash>/``: a stage
whose inputs are unchanged is reused, an interrupted one resumes (generators from their last
checkpoint, synthesis image by image, classifiers from their last epoch), and a generator asked for
more ``train.steps`` continues the stored shorter run.

Planning (every input checked before any work, where each stage lives, ``--dry-run`` with time
estimates) is in :mod:`odmaug.benchmark_plan` and :mod:`odmaug.benchmark_estimate`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from odmaug.benchmark_plan import (
    Plan,
    content_hash,
    external_arm,
    generator_recipe,
    generator_status,
    make_plan,
    plan_table,
    synthesis_counts,
)
from odmaug.config import Recipe, dump_recipe
from odmaug.console import console, is_main_process, warn
from odmaug.data import ImageTable, load_table, write_manifest
from odmaug.errors import OdmaugError
from odmaug.runs import Run, atomic_write_json, atomic_write_text, create_run, default_runs_dir, environment_record


def table_fingerprint(table: ImageTable) -> str:
    """Identity of a dataset's rows (paths, grades, splits, sources) for stage hashes."""
    cols = table.frame[["path", "label", "split", "source"]].astype(str)
    return hashlib.sha256(pd.util.hash_pandas_object(cols, index=False).values.tobytes()).hexdigest()[:12]


def _store_run(store: Path, folder: str, recipe: Recipe) -> Run:
    """A run folder at a fixed, content-addressed place in the store (made on first use)."""
    root = store / folder
    run = Run(root)
    if not run.config_path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_path, dump_recipe(recipe))
        atomic_write_json(run.env_path, environment_record(recipe.seed, recipe.device))
    return run


# --------------------------------------------------------------------------------------------------
# Results


def seed_record(test: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """The per-seed figures the report uses, from a classifier's test metrics."""
    record = {k: test[k] for k in ("qwk", "accuracy", "macro_f1", "balanced_accuracy", "mae")}
    recalls = {int(r["grade"]): r["recall"] for r in test["per_grade"]}
    for g in range(num_classes):
        record[f"recall_grade_{g}"] = recalls.get(g)
    record["confusion"] = test["confusion"]
    return record


def summarise_arms(arms: dict[str, dict[str, Any]], num_classes: int) -> dict[str, Any]:
    """Per arm: mean, std and 95% interval of every metric over seeds; paired differences."""
    from odmaug.metrics.classification import summarize_runs

    keys = ["qwk", "accuracy", "macro_f1", "balanced_accuracy", "mae"] + [f"recall_grade_{g}" for g in range(num_classes)]
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


def composition_matched(generated: ImageTable, real_counts: np.ndarray, seed: int) -> ImageTable:
    """A subset of ``generated`` with the real training set's grade mix, as large as possible.

    Overall FID/KID compare two distributions; a generated set with another grade mix than the
    real one would be penalised for the mix, not for its images.
    """
    available = generated.counts()
    usable = real_counts > 0
    scale = float(np.min(available[usable] / real_counts[usable]))
    take = np.floor(real_counts * min(scale, 1.0e9)).astype(int)
    rng = np.random.default_rng(seed)
    rows = []
    for grade, n in enumerate(take):
        idx = np.flatnonzero(generated.labels == grade)
        rows.extend(np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)).tolist())
    return ImageTable(generated.frame.iloc[sorted(rows)], generated.num_classes, f"{generated.name} (real grade mix)", generated.data_dir)


# --------------------------------------------------------------------------------------------------
# Stages


def _say(message: str) -> None:
    """One line per stage event: from rank 0 only, or torchrun's K processes would print it K times."""
    if is_main_process():
        console.print(f"[bold cyan]»[/] {message}", highlight=False)


def train_generators(plan: Plan, recipe: Recipe, store: Path, show_progress: bool) -> None:
    """Stage 1: train (or resume, or reuse) every generator arm."""
    from odmaug.diffusion.trainer import train_generator

    for arm, root in plan.generators.items():
        g_recipe = generator_recipe(recipe, arm)
        run = _store_run(store, root.name, g_recipe)
        steps = g_recipe.train.steps
        status, step = generator_status(root, steps)
        what = {"new": f"new, {steps} steps", "resume": f"resume from step {step} to {steps}",
                "reuse": f"reuse (step {step})"}[status]
        _say(f"generator {arm} (gamma = {g_recipe.diffusion.ordinal.gamma:g}): {what}, {root}")
        if status != "reuse":
            # A continued run's config.yaml must name its new train.steps; rewritten (on rank 0)
            # only once the checkpoint has taken the recipe, as `train-generator --resume` does.
            record = (lambda: atomic_write_text(run.config_path, dump_recipe(g_recipe))) if status == "resume" else None
            train_generator(run, g_recipe, resume=status == "resume", show_progress=show_progress, on_ready=record)


def synthesize_for(plan: Plan, recipe: Recipe, counts: list[int], device: str, show_progress: bool) -> dict[str, ImageTable]:
    """Stage 2: synthesize every grade's images per generator (resumes image by image)."""
    from odmaug.augment.synthesis import SamplingSettings, run_synthesis
    from odmaug.data.sources import read_manifest

    tables = {}
    settings = SamplingSettings.from_config(recipe.sample)
    for arm, root in plan.generators.items():
        _say(f"synthesis {arm}: {sum(counts)} images ({dict(enumerate(counts))}), {settings.sampler} {settings.steps} steps, guidance {settings.guidance_scale:g}")
        manifest = None
        for grade, n in enumerate(counts):
            if n > 0:
                manifest = run_synthesis(root, plan.synthesis[arm], [grade], n, None, 0, settings, True, None, False,
                                         device, recipe.data.data_dir, show_progress=show_progress).manifest
        frame = read_manifest(manifest, recipe.data.num_classes)
        tables[arm] = ImageTable(frame, recipe.data.num_classes, f"{arm} synthetic", recipe.data.data_dir)
    return tables | plan.externals


def arm_dataset(arm: str, real: ImageTable, synthetic: dict[str, ImageTable], recipe: Recipe, seed: int) -> tuple[ImageTable, pd.DataFrame | None]:
    """Stage 3: the training table of one arm (validation and test rows stay the real ones)."""
    from odmaug.data.balance import balance

    bench = recipe.benchmark
    if arm == "real":
        return real, None
    if arm == "oversample":
        return balance(real, [], "oversample", bench.to_count if bench.strategy == "to-count" else None, 1.0, seed)
    key = arm if arm in synthetic else external_arm(arm)[0]
    return balance(real, [synthetic[key]], bench.strategy, bench.to_count, bench.max_synthetic_share, seed)


def train_arm_classifiers(plan: Plan, recipe: Recipe, real: ImageTable, synthetic: dict[str, ImageTable],
                          bench_run: Run, store: Path, device: str, show_progress: bool,
                          rank: int = 0, world: int = 1, say: bool = True) -> dict[str, dict[str, Any]]:
    """Stage 4: one classifier per arm and seed (jobs spread over ranks under torchrun); ``say``:
    a line per job (off when rank 0 only collects the finished jobs)."""
    from odmaug.classify.train import train_classifier

    val, test = real.split("val"), real.split("test")
    jobs = []
    for arm in dict.fromkeys(["real", *plan.arms]):
        seeds = recipe.benchmark.seeds if arm in plan.arms else recipe.benchmark.seeds[:1]
        for seed in seeds:
            jobs.append((arm, seed))
    results: dict[str, dict[str, Any]] = {}
    for index, (arm, seed) in enumerate(jobs):
        label = arm.split("=")[0]
        if index % world != rank:
            if say:  # rank 0 speaks for every job (the other ranks are silent): where it runs
                _say(f"classifier {label}, seed {seed}: on rank {index % world}")
            continue
        table, counts = arm_dataset(arm, real, synthetic, recipe, seed)
        if rank == 0:
            write_manifest(table, bench_run.subdir("datasets") / f"{label.replace(':', '-')}-seed{seed}.csv")
        train = table.split("train")
        key = content_hash({"classifier": recipe.classifier.model_dump(mode="json"), "image_size": recipe.data.image_size,
                            "crop_box": recipe.data.crop_box, "train": table_fingerprint(train),
                            "val": table_fingerprint(val), "test": table_fingerprint(test), "seed": seed})
        out_dir = store / f"classifier-{label.replace(':', '-')}-seed{seed}-{key}"
        if say:
            _say(f"classifier {label}, seed {seed}: {len(train)} training images {train.counts().tolist()} -> {out_dir.name}")
        result = train_classifier(recipe, train, val, test, out_dir, seed, device, show_progress=show_progress)
        results.setdefault(arm, {})[seed] = {"dir": str(result.out_dir), "test": result.test, "counts": None if counts is None else counts.to_dict("list")}
    return results


def build_extractors(recipe: Recipe, domain_dir: Path, device: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The feature extractors of ``benchmark.extractors``, built once for all generators, and the
    skipped ones (Inception without weights), said once here rather than once per generator."""
    from odmaug.metrics.features import build_extractor
    from odmaug.metrics.inception import InceptionUnavailable

    extractors, skipped = {}, []
    for spec in recipe.benchmark.extractors:
        try:
            extractors[spec] = build_extractor(f"domain:{domain_dir}" if spec == "domain" else spec, recipe.metrics, device)
        except InceptionUnavailable as err:
            warn(str(err))
            skipped.append({"extractor": spec, "reason": str(err)})
    return extractors, skipped


def generator_metrics(generated: ImageTable, real: ImageTable, recipe: Recipe, extractors: dict[str, Any],
                      domain_dir: Path, device: str) -> dict[str, Any]:
    """Stage 5: FID/KID/precision/recall per grade and overall, and grade fidelity, of one generator."""
    from odmaug.classify.evaluate import evaluate_classifier
    from odmaug.metrics.generative import compute_generative_metrics

    real_train = real.split("train")
    matched = composition_matched(generated, real_train.counts(), recipe.seed)
    out: dict[str, Any] = {"n_generated": len(generated), "metrics": {}}
    for spec, extractor in extractors.items():
        kwargs = dict(image_size=recipe.data.image_size, crop_box=recipe.data.crop_box, seed=recipe.seed)
        per_grade = compute_generative_metrics(real_train, generated, extractor, recipe.metrics, **kwargs)
        overall = compute_generative_metrics(real_train, matched, extractor, recipe.metrics, **kwargs)
        out["metrics"][spec] = {"overall": overall["overall"], "per_grade": per_grade["per_grade"], "extractor": extractor.name}
    fidelity = evaluate_classifier(domain_dir, generated, device=device)["overall"]
    out["fidelity"] = {"qwk": fidelity["qwk"], "accuracy": fidelity["accuracy"],
                       "recall_per_grade": [r["recall"] for r in fidelity["per_grade"]], "confusion": fidelity["confusion"]}
    return out


def sample_grid(real: ImageTable, synthetic: dict[str, ImageTable], recipe: Recipe, path: Path, per_row: int = 8) -> Path:
    """Rows per grade: real examples, then each generator's images of that grade."""
    from odmaug.data.images import prepare
    from odmaug.figures import grade_grid

    size = recipe.data.image_size
    rows, labels = [], []
    train = real.split("train")
    for grade in range(real.num_classes):
        for name, table in [("real", train), *synthetic.items()]:
            idx = np.flatnonzero(table.labels == grade)[:per_row]
            crop = recipe.data.crop_box if name == "real" else None
            images = [prepare(table.read(int(i)), size, crop) for i in idx]
            rows.append(np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8))
            labels.append(f"{name} g{grade}")
    return grade_grid(rows, path, labels, title="Real and generated images per grade")


def run_benchmark(recipe: Recipe, runs_dir: Optional[str | Path] = None, device: str = "auto",
                  dry_run: bool = False, show_progress: bool = True, estimate: bool = True) -> tuple[Optional[Run], dict[str, Any]]:
    """Run (or plan, with ``dry_run``) the whole benchmark of ``recipe``; a dry run with ``estimate``
    also times each stage from a short probe on this machine (:mod:`odmaug.benchmark_estimate`).

    Returns:
        The benchmark's run folder (None for a dry run) and the results dict written to
        ``<run>/results.json`` (for a dry run: ``{"plan": [...]}``).
    """
    from odmaug.distributed import barrier, broadcast_object, init_distributed, shutdown
    from odmaug.device import resolve_device

    started = time.perf_counter()
    base = default_runs_dir(runs_dir)
    store = base / "store"
    real = load_table(recipe.data)
    for split in ("val", "test"):
        if len(real.split(split)) == 0:
            raise OdmaugError(f"{real.name} has no {split} split: the benchmark needs real validation and test images")
    plan = make_plan(recipe, store, real)
    if dry_run:
        if estimate:
            from odmaug.benchmark_estimate import estimate_plan

            estimate_plan(plan, recipe, real, resolve_device(device), synthesis_counts(recipe, real.split("train").counts()))
        console.print(plan_table(plan))
        if plan.note:
            console.print(plan.note, markup=False, highlight=False)
        return None, {"plan": plan.records()}

    dist = init_distributed(resolve_device(device))
    try:
        bench_run = None
        if dist.is_main:
            bench_run = create_run(recipe, base, f"benchmark-{recipe.name}")
            console.print(plan_table(plan))
            bench_run.log("benchmark_plan", stages=plan.records())

        bench_root = broadcast_object(str(bench_run.root) if bench_run else None, dist)
        bench_run = Run(Path(bench_root))

        train_generators(plan, recipe, store, show_progress and dist.is_main)
        counts = synthesis_counts(recipe, real.split("train").counts())
        synthetic = synthesize_for(plan, recipe, counts, device, show_progress and dist.is_main)
        train_arm_classifiers(plan, recipe, real, synthetic, bench_run, store, device,
                              show_progress and dist.is_main, dist.rank, dist.world_size)
        barrier(dist)
        if not dist.is_main:
            return bench_run, {}
        # Every job is finished now: collecting on rank 0 reuses them all.
        classifiers = train_arm_classifiers(plan, recipe, real, synthetic, bench_run, store, device, False, say=False)
        results = collect_results(recipe, plan, real, synthetic, classifiers, bench_run, device, started)
    finally:
        shutdown(dist)
    return bench_run, results


def collect_results(recipe: Recipe, plan: Plan, real: ImageTable, synthetic: dict[str, ImageTable],
                    classifiers: dict[str, dict[str, Any]], bench_run: Run, device: str, started: float) -> dict[str, Any]:
    """Stages 5-6 on rank 0: generative metrics, summaries, results.json and the report."""
    from odmaug.report import arm_table, generator_table, write_report

    num_classes = recipe.data.num_classes
    arms: dict[str, dict[str, Any]] = {}
    for arm in plan.arms:
        label = arm.split("=")[0]
        arms[label] = {"seeds": {seed: seed_record(r["test"], num_classes) for seed, r in classifiers[arm].items()},
                       "classifiers": {seed: r["dir"] for seed, r in classifiers[arm].items()},
                       "training_counts": {seed: r["counts"] for seed, r in classifiers[arm].items()}}
    paired = summarise_arms(arms, num_classes)
    from odmaug.benchmark_uncertainty import benchmark_bootstrap  # seeds x test images (issue 19)

    bootstrap = benchmark_bootstrap(arms, num_classes, recipe.seed)

    domain_dir = Path(classifiers["real"][recipe.benchmark.seeds[0]]["dir"])
    generators: dict[str, Any] = {}
    built, skipped = build_extractors(recipe, domain_dir, device) if synthetic else ({}, [])
    notes = [f"{s['extractor']} metrics skipped: {s['reason']}" for s in skipped] + ([bootstrap["error"]] if "error" in bootstrap else [])
    for name, table in synthetic.items():
        _say(f"generative metrics: {name} ({len(table)} images)")
        generators[name] = generator_metrics(table, real, recipe, built, domain_dir, device) | {"skipped": skipped}
    grids = {}
    if synthetic:
        grids["real vs generated"] = str(sample_grid(real, synthetic, recipe, bench_run.subdir("report") / "figures" / "samples.png"))
    extractors = [e for e in recipe.benchmark.extractors if any(e in g["metrics"] for g in generators.values())]
    results = {
        "name": recipe.name,
        "num_classes": num_classes,
        "seeds": recipe.benchmark.seeds,
        "test_description": f"{real.name} real test split, {len(real.split('test'))} images {real.split('test').counts().tolist()}",
        "arms": arms,
        "paired": paired,
        "bootstrap": bootstrap,
        "generators": generators,
        "generator_runs": {arm: str(root) for arm, root in plan.generators.items()},
        "domain_classifier": str(domain_dir),
        "extractors": extractors,
        "grids": grids,
        "notes": notes,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(bench_run.root / "results.json", results)
    env = json.loads(bench_run.env_path.read_text())
    paths = write_report(results, bench_run.subdir("report"), bench_run.config_path.read_text(), env)
    bench_run.log("benchmark_done", wall_time_s=results["wall_time_s"], report=str(paths["html"]))
    if generators:
        console.print(generator_table(results))
    console.print(arm_table(results))
    console.print(f"report: {paths['markdown']}  {paths['html']}")
    return results
