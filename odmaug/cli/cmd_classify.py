"""``odmaug train-classifier`` and ``odmaug evaluate``: severity classifiers and their metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odmaug.cli.app import app
from odmaug.cli.options import RecipeOptions, recipe_options
from odmaug.console import console


@app.command("train-classifier")
@recipe_options()
def train_classifier_cmd(
    options: RecipeOptions,
    manifest: Annotated[Optional[Path], typer.Option(
        "--manifest", "-m", help="Train on this manifest's train rows (e.g. from `odmaug balance`); its val/test rows, "
        "or else the recipe's, select and test the model.")] = None,
    seeds: Annotated[Optional[str], typer.Option(
        "--seeds", help="Train once per seed (e.g. 0,1,2 or 0-4) and report mean, std and 95% interval.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Write the classifier here instead of a new run folder's classifier/.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a finished classifier of other settings in --out (same settings: reused).")] = False,
) -> None:
    """Train a timm severity classifier (best validation QWK is kept) and report its test metrics."""
    from odmaug.commands.classify import classifier_job

    job = classifier_job(options.load(), manifest, seeds, out, options.runs_dir, force)
    train = job.train
    console.print(f"training {job.cfg.classifier.model} on {train.name} ({len(train)} images, per grade "
                  f"{train.counts().tolist()}); val {len(job.val)}, test {len(job.test) if job.test is not None else 0}")
    try:
        result = job.run()
    except KeyboardInterrupt:
        if not job.target.exists():  # no epoch finished (and a new run folder is gone): a rerun starts afresh
            typer.echo("interrupted before the first epoch finished: nothing was kept", err=True)
        else:
            typer.echo(f"interrupted: finished epochs are saved; resume with the same command plus --out {job.target}",
                       err=True)
        raise typer.Exit(code=130) from None
    _print_result(job, result)


def _print_result(job, result) -> None:
    from odmaug.classify.report import confusion_rich, per_grade_rich, seed_runs_table, seeds_table, summary_table

    model = job.cfg.classifier.model
    if job.seeds:
        console.print(seed_runs_table(result, f"{model} per seed"))
        for split in ("val", "test"):
            if split in result["summary"]:
                console.print(seeds_table(result, split, f"{model}, {split}, seeds {job.seeds}"))
        console.print(f"wrote {job.target}/seed<k>/ and {job.target}/summary.json")
        return
    columns = {f"val (best, epoch {result.best_epoch})": result.val}
    if result.test is not None:
        columns["test"] = result.test
    console.print(summary_table(columns, f"{model} on {job.train.name}"))
    shown, which = (result.test, "test") if result.test else (result.val, "val")
    console.print(per_grade_rich(shown, f"per grade ({which})"))
    console.print(confusion_rich(shown, f"confusion ({which})"))
    t = result.timing
    console.print(f"{t['images_per_second']:.0f} training img/s, {t['seconds_per_epoch']:.1f} s/epoch; wrote {job.target}")


@app.command("evaluate")
@recipe_options("recipe", "overrides", "data_dir", "device")
def evaluate_cmd(
    options: RecipeOptions,
    classifier: Annotated[Path, typer.Option(
        "--classifier", "-c", help="A classifier folder or a run folder with classifier/.")],
    data: Annotated[str, typer.Option(
        "--data", "-d",
        help="retinamnist[:split], synthetic[:split], recipe[:split], a manifest .csv or a folder root/<grade>/*.png.")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Output folder (default <classifier>/evaluations/<data name>[-<digest of its path>]).")] = None,
) -> None:
    """QWK, accuracy, macro-F1, balanced accuracy, grade error, per-grade table and confusion matrix.

    On synthetic rows (source=synthetic) this is the grade-fidelity check: how well a real-data
    classifier recovers the grades a generator was asked for. Without --recipe, the data settings
    are the ones the classifier was trained with.
    """
    from odmaug.commands.classify import evaluate_spec
    from odmaug.classify.report import confusion_rich, per_grade_rich, summary_table

    result = evaluate_spec(classifier, data, lambda trained: options.load(default=trained), out)
    only = result["sources"][0] if len(result["sources"]) == 1 else "all"
    columns = {only: result["overall"], **result["by_source"]}
    folder = result["folder"]
    console.print(summary_table(columns, f"{result['meta'].model} ({folder.parent.name}/{folder.name}) on "
                                         f"{result['table_name']}"))
    for name, metrics in columns.items():
        if name == "all":
            continue
        label = "grade fidelity of synthetic images" if name == "synthetic" else name
        console.print(per_grade_rich(metrics, f"per grade ({label})"))
        console.print(confusion_rich(metrics, f"confusion ({label})"))
    console.print(f"wrote {result['target']}")
