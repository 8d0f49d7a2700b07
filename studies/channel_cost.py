"""Cost of one generator training step at 1 channel against 3 channels (issue 29), same recipe.

Usage::

    OMP_NUM_THREADS=2 python studies/channel_cost.py                 # quickstart, 30 timed steps each
    python studies/channel_cost.py --recipe smoke --steps 10 --warmup 2   # a quick look

Both networks are built from the recipe's generator section (only the U-Net's first and last
convolutions differ) and timed with the trainer's own step unit (forward, backward, grad clip,
Adam, EMA: ``odmaug.diffusion.trainer.generator_train_step``) on the recipe's batch, image size
and precision, ODM loss as the recipe sets it. After the warm-up steps the two are timed
alternately, one step each, so a neighbour process slowing the machine slows both alike; the
figures are the median step time of each, their ratio, and the median of the step-by-step ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_step(recipe, channels: int):
    """A zero-argument callable doing one training step of a ``channels``-channel generator."""
    import torch

    from odmaug.diffusion import DiffusionLoss, NoiseSchedule, build_generator
    from odmaug.diffusion.trainer import generator_train_step
    from odmaug.precision import resolve_precision

    device, size, batch = torch.device("cpu"), recipe.data.image_size, recipe.train.batch_size
    torch.manual_seed(0)
    model = build_generator(recipe.generator, recipe.data.num_classes, size, channels)
    model = model.to(memory_format=torch.channels_last).train()
    unit = generator_train_step(model, recipe.train, device, resolve_precision(recipe.train.precision, device))
    loss_fn, schedule = DiffusionLoss(recipe.diffusion, recipe.data.num_classes), NoiseSchedule.from_config(recipe.diffusion)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(batch, channels, size, size, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch) % recipe.data.num_classes
    return lambda: unit(lambda: loss_fn(model, x0, labels, schedule, g))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="quickstart", help="a recipe name under recipes/ (default quickstart)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per network (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per network first (default 5)")
    args = parser.parse_args()

    import torch

    from odmaug.config import load_recipe
    from odmaug.precision import cpu_bf16_flags, precision_name, resolve_precision

    recipe = load_recipe(ROOT / "recipes" / f"{args.recipe}.yaml")
    steps = {c: make_step(recipe, c) for c in (3, 1)}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[int, list[float]] = {3: [], 1: []}
    for _ in range(args.steps):
        for channels, step in steps.items():
            start = time.perf_counter()
            step()
            times[channels].append(time.perf_counter() - start)
    median = {c: statistics.median(t) for c, t in times.items()}
    paired = statistics.median(one / three for one, three in zip(times[1], times[3]))
    print(json.dumps({
        "recipe": args.recipe, "image_size": recipe.data.image_size, "batch": recipe.train.batch_size,
        "precision": precision_name(resolve_precision(recipe.train.precision, torch.device("cpu"))),
        "threads": torch.get_num_threads(), "cpu_bf16_flags": sorted(cpu_bf16_flags()), "steps": args.steps,
        "ms_per_step": {f"{c} channel(s)": round(1000 * m, 1) for c, m in median.items()},
        "one_over_three": round(median[1] / median[3], 3),
        "one_over_three_paired": round(paired, 3),  # median of step-by-step ratios: load hits both alike
    }, indent=1))


if __name__ == "__main__":
    main()
