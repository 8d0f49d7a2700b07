"""Which cases a ``generator_speed.py`` run measures, and how they are built, compiled and timed.

Compiles run under a watchdog (``--compile-timeout``): a compile that does not finish is reported
as COMPILE TIMEOUT and its case dropped, instead of hanging the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

from _common import deadline, matmul_ceilings, round_robin
from speed.cases import CASES, SLOW_BF16_CASES, Case, memory_of
from speed.checks import device_matmul_ceilings


class Plan:
    """What this run measures, resolved once from the options and the device: the case names,
    the slow bf16 cases timed once after the rounds, the notes for the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        from odmaug.precision import fast_bf16

        self.device, self.notes, self.timed_out = torch.device(args.device), [], []
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise SystemExit("--device cuda: no CUDA device available")
            if not args.no_memory or not args.no_profile or args.loss_steps:
                self.notes.append("--device cuda: peak RSS, profiles, the quality/loss guards and the sampling scaling "
                                  "are CPU measurements and were skipped")
            args.no_memory, args.no_profile, args.loss_steps, args.scaling_sizes = True, True, 0, []
        self.native_bf16 = fast_bf16(self.device)
        if args.compile_precision == "auto":
            args.compile_precision = "bf16" if self.native_bf16 else "fp32"
        self.rounds = args.rounds or (3 if args.quick else 7)
        self.sizes = args.scaling_sizes if args.scaling_sizes is not None else ([16, 64] if args.quick else [64, 256, 1024])
        if not self.native_bf16 and self.device.type == "cpu":
            self.notes.append("this CPU has no native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo): odmaug's default "
                              "precision (auto) is fp32 here, and bf16 runs ~10x slower than fp32")
        self.names = [n for n in args.only or list(CASES) if not (args.no_compile and CASES[n][2] == "compiled")]
        self._slow_bf16(args.slow_bf16)

    def _slow_bf16(self, option: str) -> None:
        mode = option if option != "auto" else ("full" if self.native_bf16 else "once")
        self.once = [n for n in self.names if n in SLOW_BF16_CASES] if mode in ("once", "skip") else []
        if mode == "skip":
            self.names = [n for n in self.names if n not in self.once]
            if self.once:
                self.notes.append(f"skipped (--slow-bf16 skip): {', '.join(self.once)}")
            self.once = []
        elif self.once:
            self.notes.append(f"timed once (one unit, 1 DDIM step for sampling, FLOPs of the fp32 peer) after the rounds, "
                              f"not round-robin, because bf16 is slow on this CPU: {', '.join(self.once)}")

    def ceilings(self) -> dict[str, float]:
        return device_matmul_ceilings(self.device) if self.device.type == "cuda" else matmul_ceilings()


def cold_compile(plan: Plan, args) -> dict | None:
    """peer-sample-compiled in a fresh process with an empty inductor cache: the cold compile time
    (capped) and the peak RSS; the main process then shares that cache (its compile time is warm)."""
    if "peer-sample-compiled" not in plan.names:
        return None
    if args.no_cold_compile:
        plan.notes.append("--no-cold-compile: peer-sample-compiled's cold compile (fresh process) was not measured")
        return None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="odmaug-bench-inductor-")
    print("compiling the diffusers peer in a fresh process (cold inductor cache) ...", file=sys.stderr, flush=True)
    try:
        cold = memory_of("peer-sample-compiled", args.batch, args.sampling_steps, args, timeout=args.compile_timeout)
    except subprocess.TimeoutExpired:
        plan.names.remove("peer-sample-compiled")
        plan.timed_out.append("peer-sample-compiled")
        plan.notes.append(f"COMPILE TIMEOUT: peer-sample-compiled skipped: its cold compile (fresh process) did not "
                          f"finish within --compile-timeout {args.compile_timeout:.0f} s")
        return None
    first, second = cold["unit_seconds"]
    cold["compile_seconds_cold_cache"] = first - second
    return cold


def build_compiled(name: str, plan: Plan, args) -> Case | None:
    """A compiled case, its compile and first unit under a watchdog (None, reported, when it runs over)."""
    t0 = time.perf_counter()
    try:
        with deadline(args.compile_timeout, f"compile of {name}") as state:
            case = Case(name, args.batch, args.sampling_steps, args.compile_precision, plan.device)
            t1 = time.perf_counter()
            case.work()  # compile + first unit, under the watchdog
            case.first_unit_seconds = time.perf_counter() - t1
    except Exception:
        if not state["expired"]:
            raise
        print(f"COMPILE TIMEOUT: {name} ({args.compile_timeout:.0f} s): skipped", file=sys.stderr, flush=True)
        plan.timed_out.append(name)
        plan.notes.append(f"COMPILE TIMEOUT: {name} skipped: its compile and first unit did not finish within "
                          f"--compile-timeout {args.compile_timeout:.0f} s (stopped after {time.perf_counter() - t0:.0f} s)")
        torch._dynamo.reset()
        return None
    return case


def build_cases(plan: Plan, args) -> dict[str, Case]:
    """Every case built and warmed up (the eager ones first), FLOPs counted, in the order of CASES."""
    cases: dict[str, Case] = {}
    for name in sorted(plan.names, key=lambda n: n in plan.once or CASES[n][2] == "compiled"):
        print(f"building and warming up {name} ...", file=sys.stderr, flush=True)
        side, kind, setting = CASES[name][:3]
        if setting == "compiled":
            case = build_compiled(name, plan, args)
            if case is None:
                continue
        else:
            case = Case(name, args.batch, 1 if name in plan.once else args.sampling_steps, args.compile_precision,
                        plan.device)
        cases[name] = case
        flops_from = None
        if name in plan.once or setting == "compiled":
            # the same network and work, eager: odmaug's default path, or the fp32 peer
            eager = f"odmaug-{kind}-fast" if side == "odmaug" else f"peer-{kind}-fp32"
            flops_from = cases.get(eager)
            if flops_from is None:
                flops_from = Case(eager, args.batch, args.sampling_steps, device=plan.device)
                flops_from.warm_up_and_count()
        case.warm_up_and_count(flops_from, warm_up=name not in plan.once)
    plan.names = [n for n in plan.names if n in cases]
    return {name: cases[name] for name in plan.names}


def time_cases(cases: dict[str, Case], plan: Plan) -> list[dict]:
    """The round-robin timing (the slow cases once, after the rounds); returns the per-round times."""
    per_round = round_robin({name: case.work for name, case in cases.items() if name not in plan.once}, plan.rounds)
    for this_round in per_round:
        for name, sec in this_round.items():
            cases[name].times.append(sec)
    for name in plan.once:
        print(f"timing {name} once ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        cases[name].work()
        cases[name].times.append(time.perf_counter() - t0)
    return per_round
