"""``odmaug metrics``: FID, KID and precision/recall of generated images, overall and per grade."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from odmaug.cli.app import app
from odmaug.cli.options import RecipeOptions, recipe_options
from odmaug.config import merge_options
from odmaug.console import console

SPEC_HELP = ("retinamnist, synthetic, recipe (the recipe's data), a folder root/<grade>/*.png or a manifest .csv; "
             "add :train/:val/:test for one split")


@app.command("metrics")
@recipe_options("recipe", "overrides", "data_dir", "device", "seed")
def metrics(
    options: RecipeOptions,
    real: Annotated[str, typer.Option("--real", help=f"Reference images: {SPEC_HELP}.")],
    generated: Annotated[str, typer.Option("--generated", help=f"Images to judge: {SPEC_HELP}.")],
    extractor: Annotated[Optional[List[str]], typer.Option(
        "--extractor", "-e", help="Feature extractor (repeatable): inception, or domain:<classifier run or folder>. "
        "Default: the recipe's metrics.extractors.")] = None,
    inception_weights: Annotated[Optional[Path], typer.Option(
        "--inception-weights", help="Local FID Inception-V3 weights (weights-inception-2015-12-05-6726825d.pth from "
        "torch-fidelity's releases, or a safetensors copy). Default: $ODMAUG_INCEPTION_WEIGHTS, the user cache, "
        "a download.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write every figure as JSON here (atomically).")] = None,
    size: Annotated[Optional[int], typer.Option(
        "--size", min=8, max=1024, help="Side both sets are prepared at (default metrics.image_size, then "
        "data.image_size).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Feature cache folder (default ~/.cache/odmaug/fid-stats).")] = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Recompute the real set's features instead of reusing them.")] = False,
) -> None:
    """Compare generated images with real ones: FID, KID, precision and recall, overall and per grade.

    FID marked * rests on fewer than metrics.small_set images (biased upward: compare KID); marked ‡,
    the 2% of real images farthest from the rest hold half or more of the real features' variance
    (real_tail_share in the JSON), so whether a set holds a few images like them decides it.
    """
    from odmaug.commands.metrics import compare_specs
    from odmaug.metrics.generative_table import generative_table

    cfg = merge_options(options.load(), "metrics", inception_weights=inception_weights, image_size=size,
                        cache_dir=cache_dir, cache=False if no_cache else None)
    outcome = compare_specs(real, generated, cfg, extractor, out)
    for result in outcome["results"]:
        console.print(generative_table(result))
        cache = result["cache"]
        if cache["cache"] != "off":
            console.print(f"real-set features: cache {cache['cache']} ({cache['path']})", highlight=False)
    if out is not None:
        console.print(f"wrote {out}")
