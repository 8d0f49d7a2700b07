"""``odmaug translate``: real images shown at every grade (SDEdit strips) from a run's generator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from odmaug.commands.sample import load_for_sampling, png_out
from odmaug.diffusion.grids import draw_strips, translate_to_grades
from odmaug.diffusion.translate import effective_strength
from odmaug.errors import OdmaugError


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
    from odmaug.data.schemes import SCHEMES
    from odmaug.data.table import read_image

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
    return load_for_sampling(run, device, {"sampler": "ddim", "eta": 0.0, **given})


@dataclass(frozen=True)
class StripSummary:
    """What :func:`translation_strips` drew: one strip per image, the source then each of ``grades``."""

    out: Path
    images: int
    grades: list[int]
    steps: int
    strength: float  # nominal (t0 / T as asked)
    effective_strength: float  # the chain's first timestep + 1 over T (odmaug.diffusion.translate.effective_strength)
    sampler: str


def translation_strips(run: str | Path, images: Sequence[str], out: Path, grades: str = "all",
                       strength: Optional[float] = None, seed: int = 0, invert: bool = False,
                       device: Optional[str] = None, sample: Optional[Mapping[str, Any]] = None) -> StripSummary:
    """``odmaug translate``: each real image noised to t0 = strength x T, then denoised with DDIM
    (eta 0 unless ``sample`` says otherwise) towards each grade (SDEdit), drawn as one strip per
    image; the same seed for every grade, so the columns differ only by the grade. ``strength``
    None is the run's recipe's ``augment.strength`` (the strength ``augment --from-real`` uses).

    Raises:
        OdmaugError: a strength outside (0, 1], a negative seed, ``out`` not a writable ``.png``,
            unknown grades or image files, bad settings.
    """
    from odmaug.config import merge_options
    from odmaug.data.images import as_uint8
    from odmaug.data.verify import check_refs
    from odmaug.runs import open_run

    strength = merge_options(open_run(run).recipe().augment, strength=strength).strength  # checked before any work
    if seed < 0:
        raise OdmaugError(f"--seed must be 0 or more (got {seed})")
    png_out(out)  # before the generator is loaded
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
    effective = effective_strength(loaded.schedule, strength, settings.steps, settings.timestep_spacing)
    return StripSummary(out, len(images), chosen, settings.steps, strength, effective, settings.sampler)
