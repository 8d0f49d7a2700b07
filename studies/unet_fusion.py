"""Fused GroupNorm+SiLU(+offset, dropout) in the U-Net against torch's reference ops (issue 17, item 1).

Usage::

    OMP_NUM_THREADS=1 python studies/unet_fusion.py               # ~5 min on a 2-core AMX host (7 rounds)
    OMP_NUM_THREADS=1 python studies/unet_fusion.py --rounds 3 --no-profile --out /tmp/smoke.json

The network: odmaug's default ``GeneratorConfig()`` for 5 grades at 32 px (8.95 M parameters,
seed 0, output layer re-initialised so that eps is not trivially 0), channels_last model and
batch, as the trainer and ``generate`` run it. Units:

- training step: the generator trainer's step unit with its DM loss (``DiffusionLoss``, gamma 0,
  label dropout) on batch 32: backward, grad clip, Adam (foreach), EMA; dropout 0.1 active;
- sampling step: one classifier-free-guided network evaluation, batch 64 (32 conditional + 32
  unconditional), eval mode, ``no_grad``, guidance 2.

each in bf16 autocast and in fp32, each with ``odmaug.diffusion.layers.FUSED`` False (the
reference: ``F.group_norm`` + ``F.silu`` + ``nn.Dropout``, what the U-Net ran before) and True.
All 8 cases are timed round-robin in one process (the order rotates each round); the figures
are per-case medians and the per-round paired ratios reference / fused (above 1 = fused is faster).

Also recorded: the eps error of each path against fp32 on the same weights and input (and of
the fused fp32 path against the reference fp32 path), and torch.profiler's top 8 ops (self CPU
time) of the bf16 and fp32 units before and after. Writes ``studies/results/unet_fusion_<host>.json``
(<host>: amx, avx512bf16 or avx2 by the CPU's flags, or ``--host``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from _common import RESULTS_DIR, machine_record, round_robin

NUM_CLASSES = 5
GUIDANCE = 2.0


def generator() -> torch.nn.Module:
    """The default generator for 5 grades at 32 px (seed 0), output layer non-zero, channels_last."""
    from odmaug.config import GeneratorConfig
    from odmaug.diffusion import build_generator

    torch.manual_seed(0)
    model = build_generator(GeneratorConfig(), NUM_CLASSES, 32)
    model.out_conv.reset_parameters()
    return model.to(memory_format=torch.channels_last)


def with_fused(fused: bool, fn):
    """``fn`` run with ``odmaug.diffusion.layers.FUSED`` set to ``fused`` (restored afterwards)."""
    from odmaug.diffusion import layers

    def run():
        before, layers.FUSED = layers.FUSED, fused
        try:
            return fn()
        finally:
            layers.FUSED = before

    return run


def train_unit(base: torch.nn.Module, bf16: bool):
    """One step of the generator trainer's unit (own model copy, Adam and EMA state) on batch 32."""
    from odmaug.config import DiffusionConfig, OrdinalConfig, TrainConfig
    from odmaug.diffusion import DiffusionLoss, NoiseSchedule
    from odmaug.diffusion.trainer import generator_train_step

    model = copy.deepcopy(base).train()
    unit = generator_train_step(model, TrainConfig(lr=1e-4, ema_warmup=0), torch.device("cpu"),
                                torch.bfloat16 if bf16 else None)
    loss_fn = DiffusionLoss(DiffusionConfig(ordinal=OrdinalConfig(gamma=0.0)), NUM_CLASSES)
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(32, 3, 32, 32, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(32) % NUM_CLASSES
    return lambda: unit(lambda: loss_fn(model, x0, labels, schedule, g)["loss"])


def sample_inputs(batch: int = 32):
    """x [2B, 3, 32, 32] channels_last, t [2B], labels [2B] (B graded + B null) of one guided step."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    x = torch.cat([x, x]).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch) % NUM_CLASSES
    return x, torch.full((2 * batch,), 500), torch.cat([labels, torch.full_like(labels, NUM_CLASSES)])


def sample_unit(model: torch.nn.Module, bf16: bool):
    """One guided network evaluation: eps_u + s (eps_c - eps_u) from one batch of 64."""
    x, t, labels = sample_inputs()

    @torch.no_grad()
    def work():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            eps_c, eps_u = model(x, t, labels).float().chunk(2)
        return eps_u + GUIDANCE * (eps_c - eps_u)

    return work


def numerics(model: torch.nn.Module) -> dict:
    """Relative L2 errors of guided eps (eval) and of the training-loss gradients (dropout off)."""
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    eps = {f"{fused}-{prec}": with_fused(fused, sample_unit(model, prec == "bf16"))()
           for fused in (False, True) for prec in ("fp32", "bf16")}
    grads = {}
    for fused in (False, True):
        for prec in ("fp32", "bf16"):
            net = copy.deepcopy(model).train()
            for m in net.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
            x, t, labels = sample_inputs(16)
            with_fused(fused, lambda: _loss_backward(net, x, t, labels, prec == "bf16"))()
            grads[f"{fused}-{prec}"] = torch.cat([p.grad.flatten() for p in net.parameters()])
    out = {}
    for kind, vals in (("eps", eps), ("grad", grads)):
        out[f"{kind}_fused_fp32_vs_reference_fp32"] = rel(vals["True-fp32"], vals["False-fp32"])
        out[f"{kind}_reference_bf16_vs_fp32"] = rel(vals["False-bf16"], vals["False-fp32"])
        out[f"{kind}_fused_bf16_vs_fp32"] = rel(vals["True-bf16"], vals["False-fp32"])
        out[f"{kind}_fused_bf16_vs_reference_bf16"] = rel(vals["True-bf16"], vals["False-bf16"])
    return out


def _loss_backward(net, x, t, labels, bf16: bool) -> None:
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        eps = net(x, t, labels)
    torch.nn.functional.mse_loss(eps.float(), x).backward()


def profile_top(unit, top: int = 8) -> list[dict]:
    """torch.profiler's top ``top`` ops by self CPU time in one call of ``unit`` (after a warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    unit()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        unit()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
             "share": round(e.self_cpu_time_total / total, 4), "calls": e.count} for e in events[:top]]


def host_tag(flags: list[str]) -> str:
    return "amx" if "amx_bf16" in flags else "avx512bf16" if "avx512_bf16" in flags else "avx2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--host", help="file name tag (default: amx / avx512bf16 / avx2 from the CPU flags)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    base = generator()
    sampler = copy.deepcopy(base).eval()
    units = {}
    for prec in ("bf16", "fp32"):
        for kind in ("train", "sample"):
            for fused in (False, True):
                work = train_unit(base, prec == "bf16") if kind == "train" else sample_unit(sampler, prec == "bf16")
                units[f"{prec} {kind} {'fused' if fused else 'reference'}"] = with_fused(fused, work)
    for name, unit in units.items():  # warm-up (oneDNN primitive caches, allocator)
        print(f"warm-up {name}", file=sys.stderr, flush=True)
        unit()
    rounds = round_robin(units, args.rounds)
    cases = {name: {"median_s": statistics.median(r[name] for r in rounds), "min_s": min(r[name] for r in rounds),
                    "max_s": max(r[name] for r in rounds), "all_s": [round(r[name], 4) for r in rounds]}
             for name in units}
    speedups = {}
    for prec in ("bf16", "fp32"):
        for kind in ("train", "sample"):
            ratios = [r[f"{prec} {kind} reference"] / r[f"{prec} {kind} fused"] for r in rounds]
            speedups[f"{prec} {kind}"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                          "per_round": [round(v, 3) for v in ratios]}
    profiles = {}
    if not args.no_profile:
        for name, unit in units.items():
            print(f"profiling {name}", file=sys.stderr, flush=True)
            profiles[name] = profile_top(unit)
    print("numerics", file=sys.stderr, flush=True)
    machine = machine_record()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "python " + " ".join(sys.argv),
              "machine": machine,
              "network": "GeneratorConfig() at 32 px, 5 grades, channels_last",
              "units": {"train": "trainer step unit: DM loss + backward + grad clip + Adam + EMA, batch 32, dropout 0.1",
                        "sample": "one guided network evaluation, batch 64 (32 cond + 32 null), eval, no_grad"},
              "rounds": args.rounds, "cases": cases, "speedup_reference_over_fused": speedups,
              "numerics_relative_l2": numerics(sampler), "profiles_top8": profiles}
    out = args.out or RESULTS_DIR / f"unet_fusion_{args.host or host_tag(machine['cpu_bf16_flags'])}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    for name, s in speedups.items():
        print(f"{name:14s} reference/fused  median {s['median']:.3f}  (min {s['min']:.3f}, max {s['max']:.3f})")
    for key, value in report["numerics_relative_l2"].items():
        print(f"{key:40s} {value:.2e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
