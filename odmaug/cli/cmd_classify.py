"""``odmaug train-classifier`` and ``odmaug evaluate``: severity classifiers and their metrics."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import List, Optional

import typer

from odmaug.cli.app import (
    DataDirOption,
    DeviceOption,
    RecipeOption,
    RunsDirOption,
    SeedOption,
    SetOption,
    app,
    recipe_from_options,
)
from odmaug.console import console
from odmaug.errors import OdmaugError


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` (or a mix) -> sorted unique seeds."""
    seeds: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise OdmaugError(f"--seeds expects e.g. 0,1,2 or 0-4, got '{text}'")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise OdmaugError(f"--seeds: empty range '{part}'")
        seeds.update(range(low, high + 1))
    if not seeds:
        raise OdmaugError(f"--seeds expects e.g. 0,1,2 or 0-4, got '{text}'")
    return sorted(seeds)


@app.command("train-classifier")
def train_classifier_cmd(
    recipe: Optional[Path] = RecipeOption,
    manifest: Optional[Path] = typer.Option(
        None, "--manifest", "-m",
        help="Train on this manifest's train rows (e.g. from `odmaug balance`); its val/test rows, "
        "or else the recipe's, select and test the model.",
    ),
    seeds: Optional[str] = typer.Option(
        None, "--seeds", help="Train once per seed (e.g. 0,1,2 or 0-4) and report mean, std and 95% interval."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write the classifier here instead of a new run folder's classifier/."
    ),
    overrides: Optional[List[str]] = SetOption,
    runs_dir: Optional[Path] = RunsDirOption,
    data_dir: Optional[Path] = DataDirOption,
    device: Optional[str] = DeviceOption,
    seed: Optional[int] = SeedOption,
) -> None:
    """Train a timm severity classifier (best validation QWK is kept) and report its test metrics."""
    from odmaug.classify.models import check_classifier
    from odmaug.classify.splits import training_splits
    from odmaug.runs import check_writable, create_run, removed_if_it_fails_empty

    cfg = recipe_from_options(recipe, overrides, data_dir, device, seed)
    # fail before any data is loaded or folder made: unknown model, or one that cannot run at this size
    check_classifier(cfg.classifier.model, cfg.data.num_classes, cfg.classifier.image_size or cfg.data.image_size)
    seed_list = parse_seeds(seeds) if seeds else None
    if out is not None:
        check_writable(out, folder=True)  # before the data is loaded and the epochs run
    train, val, test = training_splits(cfg, manifest)
    if out is None:
        run = create_run(cfg, runs_dir)
        log = run.log
        target = run.root / ("classifiers" if seed_list else "classifier")
    else:
        run, log, target = None, None, out
    console.print(f"training {cfg.classifier.model} on {train.name} ({len(train)} images, per grade "
                  f"{train.counts().tolist()}); val {len(val)}, test {len(test) if test is not None else 0}")
    try:
        # A new run that fails (or is interrupted) before its first epoch is saved leaves no folder behind.
        with removed_if_it_fails_empty(run) if run is not None else contextlib.nullcontext():
            _train_and_report(cfg, train, val, test, target, seed_list, log)
    except KeyboardInterrupt:
        if not target.exists():  # no epoch finished (and a new run folder is gone): a rerun starts afresh
            typer.echo("interrupted before the first epoch finished: nothing was kept", err=True)
        else:
            typer.echo(f"interrupted: finished epochs are saved; resume with the same command plus --out {target}", err=True)
        raise typer.Exit(code=130) from None


def _train_and_report(cfg, train, val, test, target: Path, seed_list: Optional[list[int]], log) -> None:
    from odmaug.classify.report import confusion_rich, per_grade_rich, seed_runs_table, seeds_table, summary_table
    from odmaug.classify.seeds import train_seeds
    from odmaug.classify.train import train_classifier

    if seed_list:
        summary = train_seeds(cfg, train, val, test, target, seed_list, cfg.device, log)
        console.print(seed_runs_table(summary, f"{cfg.classifier.model} per seed"))
        for split in ("val", "test"):
            if split in summary["summary"]:
                console.print(seeds_table(summary, split, f"{cfg.classifier.model}, {split}, seeds {seed_list}"))
        console.print(f"wrote {target}/seed<k>/ and {target}/summary.json")
        return
    result = train_classifier(cfg, train, val, test, target, cfg.seed, cfg.device, log)
    columns = {f"val (best, epoch {result.best_epoch})": result.val}
    if result.test is not None:
        columns["test"] = result.test
    console.print(summary_table(columns, f"{cfg.classifier.model} on {train.name}"))
    shown = result.test or result.val
    console.print(per_grade_rich(shown, "per grade (" + ("test" if result.test else "val") + ")"))
    console.print(confusion_rich(shown, "confusion (" + ("test" if result.test else "val") + ")"))
    t = result.timing
    console.print(f"{t['images_per_second']:.0f} training img/s, {t['seconds_per_epoch']:.1f} s/epoch; wrote {target}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "data"


@app.command("evaluate")
def evaluate_cmd(
    classifier: Path = typer.Option(..., "--classifier", "-c", help="A classifier folder or a run folder with classifier/."),
    data: str = typer.Option(
        ..., "--data", "-d",
        help="retinamnist[:split], synthetic[:split], recipe[:split], a manifest .csv or a folder root/<grade>/*.png.",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default <classifier>/evaluations/<data>)."),
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[List[str]] = SetOption,
    data_dir: Optional[Path] = DataDirOption,
    device: Optional[str] = DeviceOption,
) -> None:
    """QWK, accuracy, macro-F1, balanced accuracy, grade error, per-grade table and confusion matrix.

    On synthetic rows (source=synthetic) this is the grade-fidelity check: how well a real-data
    classifier recovers the grades a generator was asked for.
    """
    from odmaug.classify.evaluate import evaluate_classifier
    from odmaug.classify.models import read_meta, resolve_classifier_dir
    from odmaug.classify.report import confusion_rich, per_grade_rich, summary_table
    from odmaug.data import table_from_spec

    folder = resolve_classifier_dir(classifier)
    meta = read_meta(folder)
    if recipe is None and (folder / "config.yaml").is_file():
        recipe = folder / "config.yaml"  # the data settings the classifier was trained with
    cfg = recipe_from_options(recipe, overrides, data_dir, device)
    if cfg.data.num_classes != meta.num_classes and cfg.data.source != "synthetic":
        cfg.data.num_classes = meta.num_classes
    try:
        table = table_from_spec(data, cfg.data)
    except OdmaugError as err:
        if "outside 0.." in str(err):
            raise OdmaugError(f"{err} (the classifier was trained for grades 0..{meta.num_classes - 1})") from None
        raise
    target = out or folder / "evaluations" / _slug(table.name)
    result = evaluate_classifier(folder, table, target, cfg.device, cfg.classifier.precision)
    only = result["sources"][0] if len(result["sources"]) == 1 else "all"
    columns = {only: result["overall"], **result["by_source"]}
    console.print(summary_table(columns, f"{meta.model} ({folder.parent.name}/{folder.name}) on {table.name}"))
    for name, metrics in columns.items():
        if name == "all":
            continue
        label = "grade fidelity of synthetic images" if name == "synthetic" else name
        console.print(per_grade_rich(metrics, f"per grade ({label})"))
        console.print(confusion_rich(metrics, f"confusion ({label})"))
    console.print(f"wrote {target}")
