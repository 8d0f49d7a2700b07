"""Paired A/B of odmaug's layout and regularisation choices for the generator (issue 8).

Usage::

    python studies/layout_ab.py              # ~3 min on 2 cores
    python studies/layout_ab.py --rounds 3   # quicker, noisier

The 8.95 M generator of ``generator_speed.py`` (32 px, batch 32, this machine's default precision),
with each variant timed round-robin against the default in one process:

- training step (the generator trainer's step unit): the default (channels_last model and batch,
  dropout 0.1, the loss gradient handed back channels_last by
  ``odmaug.diffusion.losses.channels_last_grad``) vs NCHW, vs no dropout, vs the loss gradient
  left as autograd makes it (NCHW);
- one guided denoising forward pass (batch 64): channels_last vs NCHW.

Prints the median paired time ratio variant / default (above 1 = the variant is slower) and writes
``studies/results/layout_ab.json``. Ratios, not absolute times, are the figures on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, machine_record, round_robin
from speed.cases import bench_train_config, odmaug_generator
from speed.peer import NUM_CLASSES

RESULTS = RESULTS_DIR / "layout_ab.json"


def training_step(memory_format: torch.memory_format, dropout: bool = True, cl_grad: bool = True):
    """One step of the generator trainer's unit with its DM loss, in ``memory_format``."""
    import odmaug.diffusion.losses as losses
    from odmaug.config import DiffusionConfig, OrdinalConfig
    from odmaug.diffusion import DiffusionLoss, NoiseSchedule
    from odmaug.diffusion.trainer import generator_train_step
    from odmaug.precision import resolve_precision

    cpu = torch.device("cpu")
    dtype = resolve_precision("auto", cpu)
    model = odmaug_generator(32).to(memory_format=memory_format).train()
    if not dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(32, 3, 32, 32, generator=g) * 2 - 1).contiguous(memory_format=memory_format)
    labels = torch.arange(32) % NUM_CLASSES
    unit = generator_train_step(model, bench_train_config(), cpu, dtype)
    loss_fn = DiffusionLoss(DiffusionConfig(ordinal=OrdinalConfig(gamma=0.0)), NUM_CLASSES)
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    hand_back = losses.channels_last_grad

    def loss():  # the gradient hand-back is chosen while the forward pass registers its hook
        losses.channels_last_grad = hand_back if cl_grad else (lambda eps: eps)
        try:
            return loss_fn(model, x0, labels, schedule, g)["loss"]
        finally:
            losses.channels_last_grad = hand_back

    return lambda: unit(loss)


def denoising_pass(memory_format: torch.memory_format):
    """One network pass of a guided denoising step of 32 images (batch 64: conditional + null)."""
    from odmaug.precision import autocast, resolve_precision

    cpu = torch.device("cpu")
    dtype = resolve_precision("auto", cpu)
    model = odmaug_generator(32).to(memory_format=memory_format).eval()
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=memory_format)
    t, labels = torch.full((64,), 500), torch.arange(64) % (NUM_CLASSES + 1)

    @torch.no_grad()
    def work():
        with autocast(cpu, dtype):
            model(x, t, labels)

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cl, nchw = torch.channels_last, torch.contiguous_format
    units = {
        "train default": training_step(cl),
        "train NCHW": training_step(nchw),
        "train no dropout": training_step(cl, dropout=False),
        "train NCHW loss gradient": training_step(cl, cl_grad=False),
        "sample default": denoising_pass(cl),
        "sample NCHW": denoising_pass(nchw),
    }
    for work in units.values():  # warm-up
        work()
    rounds = round_robin(units, args.rounds)
    ratios = {}
    for name in units:
        base = "train default" if name.startswith("train") else "sample default"
        if name != base:
            ratios[f"{name} / {base}"] = statistics.median(r[name] / r[base] for r in rounds)
    report = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine_record(), "rounds": args.rounds,
              "median_seconds": {n: statistics.median(r[n] for r in rounds) for n in units},
              "paired_time_ratios": ratios}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"layout A/B ({report['machine']['cpu_model']}, {args.threads} threads, {args.rounds} rounds, "
                        f"{report['date']})", title_justify="left")
    table.add_column("variant / default (time)")
    table.add_column("median paired ratio", justify="right")
    for key, value in ratios.items():
        table.add_row(key, f"{value:.2f}")
    Console(width=120).print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
