"""``odmaug translate``: real images shown at every grade (SDEdit grade translation, Meng et al. 2022)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from odmaug.cli.app import DeviceOption, app
from odmaug.console import console
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


def source_image(ref: str, recipe, size: int):
    """One image file (or ``retinamnist://`` reference) prepared as the run's training images are:
    the recipe's crop, then resized; uint8 [3, size, size]."""
    import numpy as np
    import torch

    from odmaug.data import prepare
    from odmaug.data.crops import crop_image
    from odmaug.data.table import SCHEMES, read_image

    if not ref.startswith(SCHEMES) and not Path(ref).is_file():
        raise OdmaugError(f"--image {ref}: no such file")
    image = crop_image(read_image(ref, recipe.data.data_dir, recipe.data.num_classes), recipe.data.crop)
    return torch.from_numpy(np.array(prepare(image, size, recipe.data.crop_box))).permute(2, 0, 1)  # writable copy


@app.command("translate")
def translate_command(
    run: Path = typer.Option(..., "--run", help="Generator run folder (made by odmaug train-generator)."),
    image: List[str] = typer.Option(..., "--image", help="Real image to translate (repeatable: one strip each)."),
    out: Path = typer.Option(..., "--out", "-o", help="Strip PNG to write: the source, then one column per grade."),
    grades: str = typer.Option("all", "--grades", help="Grades to show: 0-4, 0,2,4 or all."),
    strength: float = typer.Option(0.6, "--strength", help="t0 / T in (0, 1]: how much of the source is noised away."),
    seed: int = typer.Option(0, "--seed", help="Seed of the forward noise (the same for every grade)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="DDIM steps over the whole chain (default: the run's)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale s."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights."),
    invert: bool = typer.Option(
        False, "--invert", help="Find the noise by deterministic DDIM inversion instead of drawing it (seed unused)."
    ),
    device: Optional[str] = DeviceOption,
) -> None:
    """Show real images at every grade: noise each to t0 = strength x T, then denoise it with DDIM
    towards each grade (SDEdit). One strip per image; the same seed for every grade, so the
    columns differ only by the grade."""
    import numpy as np

    from odmaug.data import to_model_range, to_uint8
    from odmaug.device import resolve_device
    from odmaug.diffusion import load_generator
    from odmaug.diffusion.translate import check_strength, translate
    from odmaug.figures import grade_grid
    from odmaug.runs import check_writable

    check_strength(strength)
    if seed < 0:
        raise OdmaugError(f"--seed must be 0 or more (got {seed})")
    if out.suffix.lower() != ".png":
        raise OdmaugError(f"--out must be a .png file (got {out})")
    check_writable(out)  # before the generator is loaded
    loaded = load_generator(run, use_ema=ema, device=resolve_device(device or "auto"))
    chosen = parse_grades(grades, loaded.num_classes)
    sources = [source_image(ref, loaded.recipe, loaded.image_size) for ref in image]
    s = loaded.recipe.sample
    rows = []
    for src in sources:
        x0 = to_model_range(src).unsqueeze(0).expand(len(chosen), -1, -1, -1)  # [G, 3, H, W]
        made = translate(loaded.model, loaded.schedule, x0, chosen, [seed] * len(chosen), strength,
                         steps=steps or s.steps, guidance_scale=s.guidance_scale if guidance is None else guidance,
                         clip_x0=s.clip_x0, timestep_spacing=s.timestep_spacing,
                         device=next(loaded.model.parameters()).device, precision=s.precision, invert=invert)
        rows.append(np.concatenate([src.unsqueeze(0).numpy(), to_uint8(made).numpy()]))  # [1 + G, 3, H, W]
    noise = "DDIM inversion" if invert else f"seed {seed}"
    title = f"source, then grades {' '.join(map(str, chosen))} (strength {strength:g}, {noise})"
    grade_grid(rows, out, row_labels=[Path(ref).name for ref in image], title=title)
    console.print(f"wrote {out}: {len(image)} image(s) x {len(chosen)} grades, DDIM {steps or s.steps} steps", markup=False)
