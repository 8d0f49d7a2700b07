"""Generated sets of one checkpoint: every sampler with the same seeds for every run, cached per
checkpoint, and a grid PNG that puts the samplers' images of each grade side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from convergence.options import SAMPLERS


def request(n: int, grades: int) -> tuple[list[int], list[int]]:
    """Labels and seeds [grades * n]: grade g gets seeds 0..n-1 (as ``augment`` lays them out), the
    same for every run and sampler, so runs are compared on the same initial noise."""
    return [g for g in range(grades) for _ in range(n)], [s for _ in range(grades) for s in range(n)]


def synthesize(gen, sampler: str, n: int, cache: Path) -> dict:
    """uint8 images [C * n, 3, H, W] of ``SAMPLERS[sampler]`` from a loaded generator (the run's own
    guidance and precision), with wall seconds; cached as ``cache/<checkpoint id>-<sampler>-n<n>.npz``."""
    from odmaug.config.options import merge_options
    from odmaug.data import to_uint8
    from odmaug.diffusion import generate

    path = cache / f"{gen.checkpoint_id}-{sampler}-n{n}.npz"
    if path.exists():
        saved = np.load(path)
        return {"images": torch.from_numpy(saved["images"]), **json.loads(str(saved["timing"]))}
    labels, seeds = request(n, gen.num_classes)
    t0 = time.perf_counter()
    settings = merge_options(gen.recipe.sample, None, **SAMPLERS[sampler])  # the run's guidance and precision
    images = to_uint8(generate(gen.model, gen.schedule, labels, seeds, settings))
    timing = {"wall_s": time.perf_counter() - t0}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=images.numpy(), timing=json.dumps(timing))
    tmp.replace(path)  # a killed study leaves no half-written cache
    return {"images": images, **timing}


def grid(sets: dict[str, torch.Tensor], n: int, per_grade: int, path: Path, title: str) -> Path:
    """One row per grade and sampler (``grade g DDIM-50`` above ``grade g UniPC-10``): the first
    ``per_grade`` images of each (seeds 0..per_grade-1, so the rows share their initial noise)."""
    from odmaug.figures import grade_grid

    rows, labels = [], []
    grades = len(next(iter(sets.values()))) // n
    for g in range(grades):
        for name, images in sets.items():
            rows.append(images[g * n : g * n + min(per_grade, n)])
            labels.append(f"    grade {g} {name}")  # leading room: grade_grid's tight layout clips ~3 chars of tall grids
    return grade_grid(rows, path, row_labels=labels, title=title)
