"""Figures drawn from a generator: the labelled sample grid (``odmaug sample`` and the training
grids) and real images shown at every grade (``odmaug translate``, SDEdit strips).

The command-level functions take a run folder and options merged onto the run's ``sample`` section
by :func:`odmaug.config.merge_options` (None: the recipe's value).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from odmaug.config import SampleConfig, merge_options
from odmaug.diffusion.sampling import generate
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.errors import OdmaugError


def draw_sample_grid(model: nn.Module, schedule: NoiseSchedule, settings: SampleConfig, per_grade: int,
                     path: Path, title: str, device: torch.device, seed: int = 0, show_progress: bool = False) -> int:
    """``per_grade`` images of every grade (image i of the grid has seed ``seed + i``) written as one
    labelled row per grade to ``path`` (PNG, atomically); returns the number of images."""
    from odmaug.data import to_uint8
    from odmaug.figures import grade_grid

    num_classes = int(model.num_classes)
    labels = [g for g in range(num_classes) for _ in range(per_grade)]
    images = generate(model, schedule, labels, [seed + i for i in range(len(labels))], settings, device=device,
                      show_progress=show_progress)
    grade_grid(list(to_uint8(images).view(num_classes, per_grade, *images.shape[1:])), path, title=title)
    return len(labels)


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


def _png_out(out: Path) -> None:
    """A ``.png`` path that can be written, checked before any generator is loaded."""
    from odmaug.atomic import check_writable

    if out.suffix.lower() != ".png":
        raise OdmaugError(f"--out must be a .png file (got {out})")
    check_writable(out)


def _load(run: str | Path, device: Optional[str], sample: Mapping[str, Any]):
    """The run's generator and its ``sample`` section with ``sample`` merged in (``device`` None: the recipe's)."""
    from odmaug.diffusion.checkpoint import load_generator
    from odmaug.runs import open_run

    recipe = merge_options(open_run(run).recipe(), device=device)
    settings = merge_options(recipe.sample, **sample)
    loaded = load_generator(run, use_ema=settings.use_ema, device=recipe.device)
    return loaded, settings


def sample_grid_for_run(run: str | Path, out: Path, per_grade: int = 8, seed: int = 0, device: Optional[str] = None,
                        sample: Optional[Mapping[str, Any]] = None) -> GridSummary:
    """``odmaug sample``: ``per_grade`` images of every grade from the run's generator into the grid ``out``.

    Raises:
        OdmaugError: ``out`` not a writable ``.png``, bad settings, a run without a checkpoint.
    """
    _png_out(out)  # before the generator is loaded and sampled
    loaded, settings = _load(run, device, sample or {})
    weights = "EMA" if settings.use_ema else "raw"
    title = (f"{Path(run).name} step {loaded.step} ({weights}, {settings.sampler} {settings.steps}, "
             f"s={settings.guidance_scale})")
    started = time.perf_counter()
    n = draw_sample_grid(loaded.model, loaded.schedule, settings, per_grade, out, title,
                         next(loaded.model.parameters()).device, seed, show_progress=True)
    return GridSummary(out, n, per_grade, loaded.step, loaded.checkpoint_id, settings, time.perf_counter() - started)


def parse_grades(spec: str, num_classes: int) -> list[int]:
    """``all``, ``0-4``, ``4`` or ``0,2,4`` -> grades in 0..C-1 (in the order given, no repeats)."""
    text = spec.strip().lower()
    if text == "all":
        return list(range(num_classes))
    grades: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            lo, _, hi = part.partition("-")
            grades += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise OdmaugError(f"--grades: '{spec}' is not a grade list (use e.g. 0-4, 0,2,4 or all)") from None
    bad = [g for g in grades if not 0 <= g < num_classes]
    if bad or not grades:
        raise OdmaugError(f"--grades {spec}: grades must be in 0..{num_classes - 1}")
    return list(dict.fromkeys(grades))


def source_image(ref: str, recipe, size: int, pixels=None) -> torch.Tensor:
    """One image file (or ``retinamnist://`` reference) prepared as the run's training images are:
    the generator's pixel format (``pixels``, default colour 8-bit), the recipe's crop, then
    resized; [C, size, size] (uint8, or uint16 for 16-bit formats)."""
    from odmaug.data import prepare
    from odmaug.data.crops import crop_image
    from odmaug.data.pixels import COLOUR, convert
    from odmaug.data.table import SCHEMES, read_image

    if not ref.startswith(SCHEMES) and not Path(ref).is_file():
        raise OdmaugError(f"--image {ref}: no such file")
    image = read_image(ref, recipe.data.data_dir, recipe.data.num_classes, recipe.data.window)
    image = crop_image(convert(image, pixels or COLOUR), recipe.data.crop)
    return torch.from_numpy(np.array(prepare(image, size, recipe.data.crop_box))).permute(2, 0, 1)  # writable copy


def translation_generator(run: str | Path, device: Optional[str] = None, sample: Optional[Mapping[str, Any]] = None):
    """The run's generator and the ``sample`` settings grade translation uses: the recipe's, with
    DDIM at eta 0 unless ``sample`` names another sampler or eta (SDEdit starts mid-chain, which
    needs a single-step sampler), then the given (not None) values of ``sample``.

    Returns:
        (:class:`~odmaug.diffusion.checkpoint.LoadedGenerator`, :class:`SampleConfig`).
    """
    given = {k: v for k, v in (sample or {}).items() if v is not None}
    return _load(run, device, {"sampler": "ddim", "eta": 0.0, **given})


def translate_to_grades(loaded, settings: SampleConfig, source: torch.Tensor, grades: Sequence[int], seed: int,
                        strength: float, invert: bool = False) -> torch.Tensor:
    """One source, uint8 [3, H, W] at the generator's size, translated to each of ``grades`` in one
    batch with the same forward-noise seed (the columns differ only by the grade): uint8 [G, 3, H, W]."""
    from odmaug.data import to_model_range, to_uint8
    from odmaug.diffusion.translate import translate

    x0 = to_model_range(source).unsqueeze(0).expand(len(grades), -1, -1, -1)  # [G, 3, H, W]
    made = translate(loaded.model, loaded.schedule, x0, list(grades), [seed] * len(grades), strength, settings,
                     device=next(loaded.model.parameters()).device, invert=invert)
    return to_uint8(made)


def draw_strips(rows: Sequence[torch.Tensor], row_labels: Sequence[str], grades: Sequence[int], strength: float,
                noise: str, out: Path) -> None:
    """Strips as one PNG (atomically): each row uint8 [1 + G, 3, H, W], the source then ``grades``;
    ``noise`` says where the forward noise came from (the title's last words)."""
    from odmaug.figures import grade_grid

    title = f"source, then grades {' '.join(map(str, grades))} (strength {strength:g}, {noise})"
    grade_grid(list(rows), out, row_labels=list(row_labels), title=title)


@dataclass(frozen=True)
class StripSummary:
    """What :func:`translation_strips` drew: one strip per image, the source then each of ``grades``."""

    out: Path
    images: int
    grades: list[int]
    steps: int


def translation_strips(run: str | Path, images: Sequence[str], out: Path, grades: str = "all", strength: float = 0.6,
                       seed: int = 0, invert: bool = False, device: Optional[str] = None,
                       sample: Optional[Mapping[str, Any]] = None) -> StripSummary:
    """``odmaug translate``: each real image noised to t0 = strength x T, then denoised with DDIM
    (eta 0 unless ``sample`` says otherwise) towards each grade (SDEdit), drawn as one strip per
    image; the same seed for every grade, so the columns differ only by the grade.

    Raises:
        OdmaugError: a strength outside (0, 1], a negative seed, ``out`` not a writable ``.png``,
            unknown grades or image files, bad settings.
    """
    from odmaug.data.images import as_uint8
    from odmaug.data.verify import check_refs
    from odmaug.diffusion.translate import check_strength

    check_strength(strength)
    if seed < 0:
        raise OdmaugError(f"--seed must be 0 or more (got {seed})")
    _png_out(out)  # before the generator is loaded
    loaded, settings = translation_generator(run, device, sample)
    check_refs(list(images), loaded.recipe.data.data_dir)  # every --image, before the first is translated
    chosen = parse_grades(grades, loaded.num_classes)
    rows = []
    for ref in images:
        src = source_image(ref, loaded.recipe, loaded.image_size, loaded.pixels)
        made = translate_to_grades(loaded, settings, src, chosen, seed, strength, invert)
        rows.append(torch.cat([as_uint8(src).unsqueeze(0), made]))  # [1 + G, C, H, W]
    draw_strips(rows, [Path(ref).name for ref in images], chosen, strength,
                "DDIM inversion" if invert else f"seed {seed}", out)
    return StripSummary(out, len(images), chosen, settings.steps)
