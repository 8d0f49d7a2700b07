"""``odmaug metrics``: FID, KID and precision/recall of generated images, overall and per grade."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from odmaug.cli.app import DataDirOption, DeviceOption, RecipeOption, SeedOption, SetOption, app, recipe_from_options
from odmaug.console import console

SPEC_HELP = ("retinamnist, synthetic, recipe (the recipe's data), a folder root/<grade>/*.png or a manifest .csv; "
             "add :train/:val/:test for one split")


@app.command("metrics")
def metrics(
    real: str = typer.Option(..., "--real", help=f"Reference images: {SPEC_HELP}."),
    generated: str = typer.Option(..., "--generated", help=f"Images to judge: {SPEC_HELP}."),
    extractor: Optional[List[str]] = typer.Option(
        None, "--extractor", "-e",
        help="Feature extractor (repeatable): inception, or domain:<classifier run or folder>. "
             "Default: the recipe's metrics.extractors.",
    ),
    inception_weights: Optional[Path] = typer.Option(
        None, "--inception-weights",
        help="Local FID Inception-V3 weights (weights-inception-2015-12-05-6726825d.pth from torch-fidelity's "
             "releases, or a safetensors copy). Default: $ODMAUG_INCEPTION_WEIGHTS, the user cache, a download.",
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write every figure as JSON here (atomically)."),
    size: Optional[int] = typer.Option(None, "--size", min=8, max=1024,
                                       help="Side both sets are prepared at (default metrics.image_size, then data.image_size)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache folder (default ~/.cache/odmaug/fid-stats)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the real set's features instead of reusing them."),
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[List[str]] = SetOption,
    data_dir: Optional[Path] = DataDirOption,
    device: Optional[str] = DeviceOption,
    seed: Optional[int] = SeedOption,
) -> None:
    """Compare generated images with real ones: FID, KID, precision and recall, overall and per grade."""
    from odmaug.data import table_from_spec
    from odmaug.device import resolve_device
    from odmaug.metrics.generative import evaluate_generated
    from odmaug.metrics.generative_table import generative_table
    from odmaug.runs import atomic_write_json, check_writable

    sets = list(overrides or [])
    if inception_weights is not None:
        sets.append(f"metrics.inception_weights={inception_weights}")
    if size is not None:
        sets.append(f"metrics.image_size={size}")
    if cache_dir is not None:
        sets.append(f"metrics.cache_dir={cache_dir}")
    if no_cache:
        sets.append("metrics.cache=false")
    cfg = recipe_from_options(recipe, sets, data_dir, device, seed)
    if out is not None:
        check_writable(out)  # before features are computed, not after
    torch_device = resolve_device(cfg.device)
    real_table = table_from_spec(real, cfg.data)
    generated_table = table_from_spec(generated, cfg.data)
    outcome = evaluate_generated(
        real_table, generated_table, list(extractor or cfg.metrics.extractors), cfg.metrics,
        device=str(torch_device), image_size=cfg.data.image_size, crop_box=cfg.data.crop_box, seed=cfg.seed,
    )
    for result in outcome["results"]:
        console.print(generative_table(result))
        cache = result["cache"]
        if cache["cache"] != "off":
            console.print(f"real-set features: cache {cache['cache']} ({cache['path']})", highlight=False)
    if out is not None:
        atomic_write_json(out, {"real_spec": real, "generated_spec": generated, **outcome})
        console.print(f"wrote {out}")
