"""Generator speed: odmaug's U-Net against the diffusers UNet2DModel peer at a matched size (issue 8).

Usage::

    python studies/generator_speed.py                  # everything (~25-30 min on 2 cores, compile included)
    python studies/generator_speed.py --no-compile     # without the torch.compile cases (saves minutes)
    python studies/generator_speed.py --quick          # 3 rounds, scaling at n = 16, 64
    OMP_NUM_THREADS=1 python studies/generator_speed.py --quick --threads 1 --batch 1 --rounds 1 \\
        --sampling-steps 1 --no-compile --no-memory --slow-bf16 skip --scaling-sizes 2 --scaling-steps 1 \\
        --loss-steps 2 --out /tmp/smoke.json               # a smoke check of the script itself (~1 min)

The networks (the matched size of docs/performance.md): diffusers ``UNet2DModel`` at 32 px, 3 channels,
block_out_channels (64, 128, 128, 128), layers_per_block 2, attention in one down and one up block
at 16x16, num_class_embeds 6; odmaug's default ``GeneratorConfig`` (base 64, channel_mult
(1, 2, 2, 2), 2 res blocks, attention at 16 px) for 5 grades + the null class. Both have 8,953,603
parameters. The batch is 32 images in every case.

All cases are built in one process and timed round-robin (each round times every case once, in a
rotating order); a case's figure is its median over rounds, and the odmaug/peer ratios of the
targets are paired within rounds. Cases:

- training step (the generator trainer's own step unit for both sides: forward + backward + grad clip +
  Adam + EMA, ``odmaug.diffusion.trainer.generator_train_step``):
  odmaug's default fast path (DM loss: DiffusionLoss with gamma = 0), the same with the ODM loss
  (``DiffusionConfig()`` ordinal defaults: the ODM/DM step-time ratio of this host, paired within
  rounds), diffusers fp32 eager at its default dropout 0 and at odmaug's dropout 0.1, diffusers
  ``torch.compile`` (dropout 0.1, bf16 autocast where ``--compile-precision auto`` picks it, same
  optimizer); and, as before, odmaug's default fast path (what the trainer does by default: precision ``auto`` = bf16 autocast on
  CPUs with AVX-512 BF16 or AMX, channels_last model and batch), odmaug fp32 (channels_last, as the
  trainer), odmaug's fast path under ``torch.compile`` (``train.compile: true``), diffusers fp32
  eager, diffusers bf16 autocast + channels_last, diffusers pure bf16 weights + channels_last;
  odmaug's fast path at 64 px too (same network);
- one classifier-free-guided DDIM denoising step of 32 images (conditional + unconditional in one
  batch of 64, guidance 2): odmaug ``sample`` fast path, compiled (what ``sample.compile: true``
  does; compile time reported) and fp32, diffusers fp32 eager, diffusers
  pure bf16 + channels_last eager, and (unless ``--no-compile``) diffusers ``torch.compile`` +
  bf16 autocast + channels_last (compile time reported: cold in a fresh process with an empty
  inductor cache, and warm in the main process).

The CPU decides what is fast: on CPUs without native bf16 (no ``avx512_bf16``/``amx_bf16``, e.g. an
AVX2-only host) odmaug's ``auto`` precision is fp32, bf16 convolutions and matmuls run ~10-100x slower
than fp32, and so by default (``--compile-precision auto``, ``--slow-bf16 auto``) the compiled peer
runs fp32 and the diffusers bf16 eager cases are timed once after the rounds instead of every round.

Targets take the fastest odmaug case (default or compiled) and the fastest named peer case of each
round, and print beside each the bound: the ratio odmaug would reach if it ran its FLOPs at 100% of
the matmul ceiling of its compute precision measured in this run (bf16 with native bf16, else
fp32); a target above its bound cannot be met by any kernel work at an equal network and batch.

Also: FLOPs per case (``FlopCounterMode``; a compiled case has its eager twin's FLOPs) and the
fraction of the fp32 and bf16 matmul ceilings measured in this run; peak RSS per case (a fresh
process per case); odmaug sampling time for n images (``generate``, batch 64, DDIM with guidance);
the fast path's relative eps error against fp32 on the same weights and inputs (flagged above 2e-2),
and the compiled path's against eager; the training-loss guard (``--loss-steps``: the quickstart-size
network trained from the same seed in fp32, on the fast path and compiled, last-half mean losses
compared within 3 standard errors);
torch.profiler top ops of one odmaug training step and one denoising step on the fast path; the
host's bf16 capability (lscpu flags, ``odmaug.precision`` detection, torch's CPU capability).

Compiles run under a watchdog (``--compile-timeout``, default 300 s): a compile that does not finish
is reported as COMPILE TIMEOUT (output and JSON ``compile_timed_out``) and the case is dropped.
``--device cuda`` runs the timing cases on a GPU (``studies/gpu_speed.sh`` drives it).

Prints tables (the targets last), writes ``studies/results/generator_speed.json`` (or ``--out``).
The machine is shared: absolute times are hints, ratios measured in one run are the figures. The
cases live in ``speed/cases.py`` (the diffusers peer in ``speed/peer.py``), the guards, scaling and
profiles in ``speed/checks.py``, the derived figures and tables in ``speed/report.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import ROOT, RESULTS_DIR, best_ceilings, machine_record
from speed.cases import CASES, Case, memory_of, odmaug_generator, parameters
from speed.checks import bf16_capability, loss_guard, profile_top_ops, quality_guard, sampling_scaling
from speed.peer import PEER_KWARGS, peer_generator
from speed.plan import Plan, build_cases, cold_compile, time_cases
from speed.report import Rounds, odm_step_cost, print_report, targets, time_ratios

RESULTS = RESULTS_DIR / "generator_speed.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, scaling at n = 16, 64")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7, 3 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="images per case (default 32; smaller for smoke checks)")
    parser.add_argument("--sampling-steps", type=int, default=3, help="DDIM steps per timed sampling unit (default 3)")
    parser.add_argument("--scaling-sizes", type=int, nargs="*", default=None,
                        help="n for the sampling scaling (default 64 256 1024; 16 64 with --quick; none: skip)")
    parser.add_argument("--scaling-steps", type=int, default=4, help="DDIM steps of the scaling runs (default 4)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile cases, odmaug's and the peer's (they take minutes)")
    parser.add_argument("--compile-precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="the compiled peer's precision: bf16 autocast, fp32, or auto = bf16 where the CPU has "
                             "native bf16 (AVX-512 BF16 / AMX), else fp32")
    parser.add_argument("--compile-timeout", type=float, default=300.0,
                        help="give up on a compiled case (odmaug's or the peer's, cold or warm) whose compile and first "
                             "unit take longer than this many seconds; it is then reported as timed out (default 300)")
    parser.add_argument("--no-cold-compile", action="store_true",
                        help="skip the fresh-process cold compile of the diffusers sampling peer (its compile is then "
                             "timed warm-cache only, in the main process; saves one compile)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the networks run (default cpu); cuda: the timing cases only (no memory, profile, "
                             "quality or loss guard, scaling: they are CPU measurements)")
    parser.add_argument("--slow-bf16", choices=("auto", "full", "once", "skip"), default="auto",
                        help="the diffusers bf16 eager cases: timed every round (full), one unit after the rounds "
                             "(once), or not at all; auto = full with native bf16, else once (bf16 is ~10x slower "
                             "than fp32 on CPUs without it)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case peak RSS processes")
    parser.add_argument("--loss-steps", type=int, default=60,
                        help="steps of the training-loss quality guard per setting (default 60; 0: skip)")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler top ops")
    parser.add_argument("--only", nargs="*", help="run only these cases")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(ROOT)})")
    return parser.parse_args()


def peak_memory(cases: dict[str, Case], results: dict, plan: Plan, args, compiled_cold: dict | None) -> None:
    """Peak RSS of every case, each in a fresh process (a compiled one under the compile time limit)."""
    for name, case in cases.items():
        if name == "peer-sample-compiled" and compiled_cold is not None:
            mem = compiled_cold
        else:
            print(f"peak memory of {name} ...", file=sys.stderr, flush=True)
            try:
                mem = memory_of(name, case.batch, case.sampling_steps, args, units=1 if name in plan.once else 2,
                                timeout=args.compile_timeout if CASES[name][2] == "compiled" else None)
            except subprocess.TimeoutExpired:
                plan.notes.append(f"COMPILE TIMEOUT: peak memory of {name} not measured: its fresh-process compile "
                                  f"took over {args.compile_timeout:.0f} s")
                continue
        results[name]["peak_rss_mb"] = mem["peak_rss_mb"]
        results[name]["rss_before_first_unit_mb"] = mem["rss_before_first_unit_mb"]


def checks(cases: dict[str, Case], plan: Plan, args) -> tuple[dict, list, dict]:
    """The quality guards (CPU), the sampling scaling and the profiles of the fast path."""
    quality = {}
    if plan.device.type == "cpu":
        print("quality guard ...", file=sys.stderr, flush=True)
        quality = quality_guard(cases, args.batch)
    if args.loss_steps:
        quality["training_loss"] = loss_guard(args.loss_steps, args.batch, "odmaug-train-compiled" in cases)
    scaling = sampling_scaling(plan.sizes, args.scaling_steps) if plan.sizes else []
    profiles = {}
    for name in () if args.no_profile else ("odmaug-train-fast", "odmaug-sample-fast"):
        if name in cases:
            print(f"profiling {name} ...", file=sys.stderr, flush=True)
            profiles[name] = profile_top_ops(cases[name])
    return quality, scaling, profiles


def main() -> None:
    args = parse_args()
    plan = Plan(args)
    torch.set_num_threads(args.threads)
    param_counts = {"odmaug": parameters(odmaug_generator(32)), "diffusers": parameters(peer_generator())}
    ceilings = plan.ceilings()
    compiled_cold = cold_compile(plan, args)
    cases = build_cases(plan, args)
    per_round = time_cases(cases, plan)
    ceilings = best_ceilings(ceilings, plan.ceilings())
    results = {name: case.summary() for name, case in cases.items()}
    if compiled_cold is not None and "peer-sample-compiled" in results:
        results["peer-sample-compiled"]["compile_seconds_cold_cache"] = compiled_cold["compile_seconds_cold_cache"]
    rounds = Rounds(cases, per_round)
    extra_ratios, extra_spread = time_ratios(rounds)
    quality, scaling, profiles = checks(cases, plan, args)
    if not args.no_memory:
        peak_memory(cases, results, plan, args, compiled_cold)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": ("python studies/generator_speed.py " + " ".join(sys.argv[1:])).strip(),
        "machine": machine_record(), "device": str(plan.device), "bf16_capability": bf16_capability(plan.device),
        "native_bf16": plan.native_bf16,
        "note": "shared machine: absolute times are hints; ratios are paired within rounds. Identical optimizer "
                "code (the trainer's step unit: Adam foreach, grad clip, EMA) on both sides; odmaug keeps its default "
                "dropout 0.1; the diffusers cases run its default dropout 0 except peer-train-fp32-dropout and "
                "peer-train-compiled (dropout 0.1, as odmaug).",
        "parameters": param_counts,
        "networks": {"odmaug": "odmaug.config.GeneratorConfig() defaults (base 64, channel_mult 1,2,2,2, "
                               "2 res blocks, attention at 16 px, 1 head), 5 grades + null",
                     "diffusers": {k: list(v) if isinstance(v, tuple) else v for k, v in PEER_KWARGS.items()}},
        "rounds": plan.rounds, "batch": args.batch, "matmul_ceiling_gflops": ceilings, "cases": results,
        "targets": targets(rounds, results, ceilings, plan.native_bf16),
        "other_time_ratios": extra_ratios, "other_time_ratio_spread": extra_spread,
        "compile_timeout_seconds": args.compile_timeout, "compile_timed_out": plan.timed_out,
        "quality_guard": quality, "sampling_scaling": scaling, "profiles_fast_path": profiles,
        "odm_step_cost": odm_step_cost(cases, per_round, plan.device), "notes": plan.notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, args)


if __name__ == "__main__":
    main()
