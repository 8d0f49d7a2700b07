"""Figures drawn from a generator: the labelled sample grid (``odmaug sample`` and the training
grids) and real images shown at every grade (``odmaug translate``, SDEdit strips). The commands
that draw them from a run folder live in :mod:`odmaug.commands.sample` and :mod:`odmaug.commands.translate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from odmaug.config import SampleConfig
from odmaug.diffusion.sampling import generate
from odmaug.diffusion.schedule import NoiseSchedule


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
