"""Synthesis speed at matched quality: odmaug's samplers against diffusers' DDIM-100 pipeline loop
on the same weights (issue 17, item 2).

Usage::

    OMP_NUM_THREADS=1 python studies/matched_synthesis.py --run /tmp/sampler_quality/runs/00000-sq-generator
    python studies/matched_synthesis.py --run RUN --n 10 --rounds 1 --out /tmp/ms.json   # smoke size

Which settings reach DDIM-100's quality comes from ``sampler_quality.py`` (its JSON, ``--quality``):
DDIM-50 with eta 1 matches DDIM-100 with eta 1 on every grade's domain FID/KID, and UniPC-10 matches
DDIM-100 with eta 0. This script times those settings on one trained generator (``--run``, e.g.
the one ``sampler_quality.py`` trained), in one process, round-robin over ``--rounds``, for the same
``--n`` images (grades in turn, seeds 0..n-1):

- ``diffusers DDIM-100``: diffusers' ``DDIMScheduler`` with the run's betas and the loop of its
  pipelines (conditional and null-class halves in one batch, guidance, ``scheduler.step``, eta 1
  or 0) driving odmaug's network copied to fp32 NCHW, eager: what running these weights through
  diffusers gives by default;
- ``odmaug <sampler>``: :func:`odmaug.diffusion.generate` with the run's ``sample`` section
  (precision ``auto``: bf16 where the CPU has bf16 units; channels_last).

Prints a table and writes ``studies/results/matched_synthesis.json`` (or ``--out``) with
images/s per case and round, and each odmaug case's speed-up over the diffusers loop with the same
eta (median and min-max over rounds). A shared machine: only the paired ratios count.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "studies"))

from _common import machine_record  # noqa: E402

RESULTS = ROOT / "studies" / "results" / "matched_synthesis.json"
QUALITY = ROOT / "studies" / "results" / "sampler_quality_amx.json"
PEERS = {"diffusers DDIM-100 eta 1": 1.0, "diffusers DDIM-100 eta 0": 0.0}
ODMAUG = {  # case -> (sampler, steps, eta, the diffusers case it is compared with, the quality it matches)
    "odmaug DDIM-100 eta 1": ("ddim", 100, 1.0, "diffusers DDIM-100 eta 1", "the reference (the paper's step count)"),
    "odmaug DDIM-50 eta 1": ("ddim", 50, 1.0, "diffusers DDIM-100 eta 1", "DDIM-100 eta 1 on every grade and overall"),
    "odmaug DDIM-100 eta 0": ("ddim", 100, 0.0, "diffusers DDIM-100 eta 0", "the reference (deterministic)"),
    "odmaug UniPC-10": ("unipc", 10, 0.0, "diffusers DDIM-100 eta 0", "DDIM-100 eta 0 on every grade and overall"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained generator's run folder")
    parser.add_argument("--n", type=int, default=20, help="images per case and round (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--quality", type=Path, default=QUALITY, help="sampler_quality.py's JSON, quoted in the output")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(ROOT)})")
    return parser.parse_args()


def diffusers_loop(model: torch.nn.Module, schedule, guidance: float, eta: float, steps: int = 100):
    """``work(labels, seeds)``: the diffusers pipeline loop on a fp32 NCHW copy of ``model``."""
    from diffusers import DDIMScheduler

    net = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).eval()
    null = int(model.num_classes)

    @torch.no_grad()
    def work(labels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        scheduler = DDIMScheduler(num_train_timesteps=schedule.timesteps, trained_betas=schedule.betas.numpy())
        scheduler.set_timesteps(steps)
        g = torch.Generator().manual_seed(seeds[0])
        size = int(model.image_size)
        x = torch.randn((len(labels), 3, size, size), generator=g)
        both = torch.cat([labels, torch.full_like(labels, null)])
        for t in scheduler.timesteps:
            tt = torch.full((2 * len(labels),), int(t), dtype=torch.long)
            eps_c, eps_u = net(torch.cat([x, x]), tt, both).chunk(2)
            x = scheduler.step(eps_u + guidance * (eps_c - eps_u), t, x, eta=eta, generator=g).prev_sample
        return x

    return work


def odmaug_work(gen, settings, sampler: str, steps: int, eta: float):
    """``work(labels, seeds)``: :func:`odmaug.diffusion.generate` with one sampler setting."""
    from odmaug.config import merge_options
    from odmaug.diffusion import generate

    case = merge_options(settings, None, sampler=sampler, steps=steps, eta=eta)

    def work(labels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        return generate(gen.model, gen.schedule, labels, seeds, merge_options(case, None, batch_size=len(labels)))

    return work


def time_cases(cases: dict, n: int, grades: int, rounds: int) -> dict[str, list[float]]:
    """images/s of every case per round, the cases run in turn within each round."""
    labels = torch.arange(n) % grades
    seeds = list(range(n))
    for work in cases.values():  # warm-up: first-call costs (allocations, kernels) stay out of the rounds
        work(labels[:2], seeds[:2])
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        for name, work in cases.items():
            start = time.perf_counter()
            images = work(labels, seeds)
            seconds = time.perf_counter() - start
            if not torch.isfinite(images).all():
                raise SystemExit(f"{name}: non-finite images")
            rates[name].append(n / seconds)
            print(f"round {r + 1}/{rounds}: {name}: {n / seconds:.2f} images/s", flush=True)
    return rates


def summarise(rates: dict[str, list[float]]) -> dict[str, dict]:
    """Per odmaug case: its speed-up over its diffusers case, median and min-max over rounds."""
    out = {}
    for name, (_, _, _, peer, matches) in ODMAUG.items():
        ratios = [a / b for a, b in zip(rates[name], rates[peer])]
        out[name] = {"vs": peer, "matches": matches, "speedup_median": statistics.median(ratios),
                     "speedup_min": min(ratios), "speedup_max": max(ratios), "per_round": ratios}
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from odmaug.diffusion import load_generator
    from odmaug.precision import resolve_precision

    gen = load_generator(args.run, device="cpu")
    settings = gen.recipe.sample
    guidance = settings.guidance_scale
    cases = {name: diffusers_loop(gen.model, gen.schedule, guidance, eta) for name, eta in PEERS.items()}
    cases |= {name: odmaug_work(gen, settings, s, k, e) for name, (s, k, e, _, _) in ODMAUG.items()}
    rates = time_cases(cases, args.n, gen.model.num_classes, args.rounds)
    speedups = summarise(rates)
    quality = json.loads(args.quality.read_text()) if args.quality.is_file() else None
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python " + " ".join(sys.argv),
        "machine": machine_record(),
        "run": str(args.run), "n_images": args.n, "rounds": args.rounds, "guidance_scale": guidance,
        "odmaug_precision": str(resolve_precision(settings.precision, torch.device("cpu"))).removeprefix("torch."),
        "images_per_second": {name: {"median": statistics.median(v), "per_round": v} for name, v in rates.items()},
        "speedups": speedups,
        "quality_source": str(args.quality.relative_to(ROOT)) if quality else None,
        "note": "diffusers cases: DDIMScheduler (run's betas, its default leading spacing) + its pipelines' "
                "guided loop on odmaug's weights in fp32 NCHW eager; odmaug cases: generate() with the run's "
                "sample section. Matches are sampler_quality.py's (domain FID/KID intervals per grade).",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{'case':26} {'images/s':>9}  speed-up over its diffusers DDIM-100 loop [min-max]  quality")
    for name, v in rates.items():
        s = speedups.get(name)
        extra = f"{s['speedup_median']:6.2f}x [{s['speedup_min']:.2f}-{s['speedup_max']:.2f}]  {s['matches']}" if s else "reference"
        print(f"{name:26} {statistics.median(v):9.2f}  {extra}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
