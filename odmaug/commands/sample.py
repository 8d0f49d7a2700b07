"""``odmaug sample``: a labelled grid of every grade from a run's generator.

Options are merged onto the run's ``sample`` section once, here (None: the recipe's value), and
the sampler is checked against its registry before the generator is loaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from odmaug.config import SampleConfig, merge_options
from odmaug.diffusion.grids import draw_sample_grid
from odmaug.diffusion.sampling import sample_settings
from odmaug.errors import OdmaugError


@dataclass(frozen=True)
class GridSummary:
    """What :func:`sample_grid_for_run` drew."""

    out: Path
    images: int
    per_grade: int
    step: int
    checkpoint_id: str
    settings: SampleConfig
    seconds: float


def png_out(out: Path) -> None:
    """A ``.png`` path that can be written, checked before any generator is loaded."""
    from odmaug.atomic import check_writable

    if out.suffix.lower() != ".png":
        raise OdmaugError(f"--out must be a .png file (got {out})")
    check_writable(out)


def load_for_sampling(run: str | Path, device: Optional[str], sample: Mapping[str, Any]):
    """The run's generator and its ``sample`` section with ``sample`` merged in (``device`` None: the recipe's)."""
    from odmaug.diffusion.checkpoint import load_generator
    from odmaug.runs import open_run

    recipe = merge_options(open_run(run).recipe(), device=device)
    settings = sample_settings(recipe.sample, **sample)
    loaded = load_generator(run, use_ema=settings.use_ema, device=recipe.device, ema=settings.loaded_ema_decay)
    return loaded, settings


def sample_grid_for_run(run: str | Path, out: Path, per_grade: int = 8, seed: int = 0, device: Optional[str] = None,
                        sample: Optional[Mapping[str, Any]] = None) -> GridSummary:
    """``odmaug sample``: ``per_grade`` images of every grade from the run's generator into the grid ``out``.

    Raises:
        OdmaugError: ``out`` not a writable ``.png``, bad settings, a run without a checkpoint.
    """
    png_out(out)  # before the generator is loaded and sampled
    loaded, settings = load_for_sampling(run, device, sample or {})
    decay = loaded.recipe.train.ema_decay if settings.ema_decay is None else settings.ema_decay
    weights = f"EMA {decay:g}" if settings.use_ema else "raw"
    title = (f"{Path(run).name} step {loaded.step} ({weights}, {settings.sampler} {settings.steps}, "
             f"s={settings.guidance_scale})")
    started = time.perf_counter()
    n = draw_sample_grid(loaded.model, loaded.schedule, settings, per_grade, out, title,
                         next(loaded.model.parameters()).device, seed, show_progress=True)
    return GridSummary(out, n, per_grade, loaded.step, loaded.checkpoint_id, settings, time.perf_counter() - started)
