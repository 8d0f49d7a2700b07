"""What the generator costs on this machine: training img/s and peak memory, ODM/DM step cost, sampling speed.

Usage::

    python studies/generator_cost.py            # all cases, ~10-20 min on 2 busy cores
    python studies/generator_cost.py --quick    # 3 rounds, no 64 px fp32 case
    python studies/generator_cost.py --only qs-dm-fp32 qs-odm-fp32 qs-odm-include-true-fp32 \
        qs-odm-frac0.25-fp32 qs-odm-include-true-frac0.25-fp32 --out studies/results/generator_cost_fp32.json
                                                   # the ODM/DM ratios in fp32 (CPUs without native bf16)

All cases are built in one process and timed round-robin (every round times each case once), so
load changes on a shared machine hit all cases alike; a case's figure is its median over rounds and
ODM/DM and fp32/bf16 ratios are paired within rounds. Peak resident memory is measured per case in
a fresh subprocess. Cases:

- training steps (the generator trainer's step unit: forward, backward, grad clip, Adam, EMA) of the quickstart
  generator at 32 px, batch 32: DM (gamma = 0), ODM with docs/method.md's default options (random
  triplets, whole batch), the cheaper ODM variants (include-true triplets, ordinal fraction 0.25,
  both: the quickstart's setting), in bf16 autocast and fp32;
- the same at 64 px with the paper recipe's network (batch 8 here, to keep the CPU time bounded);
- DDIM sampling with classifier-free guidance (conditional + unconditional in one batch of 2 x 32).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``; the bf16/fp32 matmul ceilings
are measured in the same run. Prints a table, writes ``studies/results/generator_cost.json``.
The machine is shared: absolute times are hints, ratios measured in one run are the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _common import (ROOT, RESULTS_DIR, best_ceilings, flops_of, machine_record, matmul_ceilings, round_robin,
                     run_python, vm_hwm_mb)

RESULTS = RESULTS_DIR / "generator_cost.json"

PAPER = {"triplets": "random", "fraction": 1.0}  # docs/method.md's defaults (the paper's reading)
CASES = {
    # name: (recipe, image size, batch, ordinal overrides or None for DM, precision, kind)
    "qs-dm-bf16": ("quickstart", 32, 32, None, "bf16", "train"),
    "qs-odm-bf16": ("quickstart", 32, 32, PAPER, "bf16", "train"),
    "qs-odm-include-true-bf16": ("quickstart", 32, 32, {**PAPER, "triplets": "include-true"}, "bf16", "train"),
    "qs-odm-frac0.25-bf16": ("quickstart", 32, 32, {**PAPER, "fraction": 0.25}, "bf16", "train"),
    "qs-odm-include-true-frac0.25-bf16": ("quickstart", 32, 32, {"triplets": "include-true", "fraction": 0.25}, "bf16", "train"),
    "qs-dm-fp32": ("quickstart", 32, 32, None, "fp32", "train"),
    "qs-odm-fp32": ("quickstart", 32, 32, PAPER, "fp32", "train"),
    # fp32 twins of the cheaper variants: the default precision on CPUs without native bf16
    "qs-odm-include-true-fp32": ("quickstart", 32, 32, {**PAPER, "triplets": "include-true"}, "fp32", "train"),
    "qs-odm-frac0.25-fp32": ("quickstart", 32, 32, {**PAPER, "fraction": 0.25}, "fp32", "train"),
    "qs-odm-include-true-frac0.25-fp32": ("quickstart", 32, 32, {"triplets": "include-true", "fraction": 0.25}, "fp32", "train"),
    "p64-dm-bf16": ("paper-eyepacs-64", 64, 8, None, "bf16", "train"),
    "p64-odm-bf16": ("paper-eyepacs-64", 64, 8, PAPER, "bf16", "train"),
    "p64-dm-fp32": ("paper-eyepacs-64", 64, 8, None, "fp32", "train"),
    "qs-ddim-cfg-bf16": ("quickstart", 32, 32, None, "bf16", "sample"),
    "qs-ddim-cfg-fp32": ("quickstart", 32, 32, None, "fp32", "sample"),
}


class Case:
    """One measured configuration: a model, a loss or sampler, and a timed unit of work."""

    def __init__(self, name: str) -> None:
        import torch

        from odmaug.config import SampleConfig, TrainConfig, load_recipe
        from odmaug.diffusion import DiffusionLoss, NoiseSchedule, build_generator, sample
        from odmaug.diffusion.trainer import generator_train_step
        from odmaug.precision import autocast, resolve_precision

        recipe_name, size, batch, ordinal, precision, kind = CASES[name]
        sets = [] if ordinal is None else [f"diffusion.ordinal.{k}={v}" for k, v in ordinal.items()]
        sets.append(f"diffusion.ordinal.gamma={0.0 if ordinal is None else 1.0}")
        recipe = load_recipe(ROOT / "recipes" / f"{recipe_name}.yaml", sets)
        device = torch.device("cpu")
        dtype = resolve_precision(precision, device)
        torch.manual_seed(0)
        model = build_generator(recipe.generator, recipe.data.num_classes, size).to(memory_format=torch.channels_last)
        schedule = NoiseSchedule.from_config(recipe.diffusion)
        g = torch.Generator().manual_seed(0)
        x0 = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)
        labels = torch.arange(batch) % recipe.data.num_classes
        self.name, self.kind, self.batch, self.precision = name, kind, batch, precision
        self.info = {"case": name, "recipe": recipe_name, "image_size": size, "batch": batch, "precision": precision,
                     "kind": kind, "parameters": sum(p.numel() for p in model.parameters()), "ordinal": ordinal}
        self.sampling_steps = 5
        if kind == "train":
            loss_fn = DiffusionLoss(recipe.diffusion, recipe.data.num_classes)
            unit = generator_train_step(model, TrainConfig(lr=1e-4, ema_warmup=0), device, dtype)

            def work():  # one step of the trainer's unit (forward, backward, grad clip, Adam, EMA)
                out = unit(lambda: loss_fn(model, x0, labels, schedule, g))
                self.info["network_evaluations_per_step"] = (
                    batch + loss_fn.evaluations_per_ordinal_sample * out["n_ord"] if loss_fn.active else batch)
        else:
            noise = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
            model.eval()
            # precision fp32: sample() adds no autocast of its own, the case's autocast below decides
            settings = SampleConfig(sampler="ddim", steps=self.sampling_steps, guidance_scale=2.0, precision="fp32")

            def work():  # a few guided DDIM denoising steps of the batch (2 x batch network passes each)
                with autocast(device, dtype):
                    sample(model, noise, labels, schedule, settings)
        self.work = work
        self.times: list[float] = []

    def warm_up_and_count(self) -> None:
        self.work()
        self.info["flops_per_unit"] = flops_of(self.work)

    def summary(self) -> dict:
        sec = statistics.median(self.times)
        out = dict(self.info, repetitions=len(self.times), all_seconds=[round(t, 4) for t in self.times])
        if self.kind == "train":
            out.update(seconds_per_step=sec, images_per_second=self.batch / sec)
            out["gflops_per_second"] = out["flops_per_unit"] / sec / 1e9
        else:
            per_step = sec / self.sampling_steps
            out.update(seconds_per_denoising_step=per_step, image_steps_per_second=self.batch / per_step,
                       images_per_second_at_50_steps=self.batch / per_step / 50)
            out["gflops_per_second"] = out["flops_per_unit"] / sec / 1e9
        return out


def peak_memory_of(name: str) -> tuple[float, float]:
    """(peak resident MiB, resident MiB before the first step) of a fresh process running case ``name`` twice."""
    # VmHWM (peak RSS) from /proc: unlike getrusage's ru_maxrss it starts afresh at exec
    code = (f"import generator_cost as b; "
            f"c = b.Case({name!r}); base = b.vm_hwm_mb(); c.work(); c.work(); print(b.vm_hwm_mb(), base)")
    peak, base = run_python(code).split()
    return float(peak), float(base)


def paired_rounds(cases: dict[str, Case], rounds: int) -> dict[str, float]:
    """Time the cases round-robin (the machine is shared: load drifts) and return the medians of the
    ODM/DM and fp32/bf16 time ratios paired within a round; every case keeps its own times."""
    paired: dict[str, list[float]] = {}
    for this_round in round_robin({name: case.work for name, case in cases.items()}, rounds):
        for name, sec in this_round.items():
            cases[name].times.append(sec)
        for name, sec in this_round.items():
            if "-odm" in name:
                dm = name.split("-odm")[0] + "-dm-" + name.rsplit("-", 1)[1]
                if dm in this_round:
                    paired.setdefault(f"{name} / {dm}", []).append(sec / this_round[dm])
        for precision_pair in (("qs-dm-fp32", "qs-dm-bf16"), ("p64-dm-fp32", "p64-dm-bf16"),
                               ("qs-ddim-cfg-fp32", "qs-ddim-cfg-bf16")):
            if all(p in this_round for p in precision_pair):
                paired.setdefault(f"{precision_pair[0]} / {precision_pair[1]}", []).append(
                    this_round[precision_pair[0]] / this_round[precision_pair[1]])
    return {k: statistics.median(v) for k, v in paired.items()}


def print_report(report: dict, rounds: int, out: Path) -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    results, ratios, ceilings = report["cases"], report["paired_time_ratios"], report["matmul_ceiling_gflops"]
    table = Table(title=f"generator cost: {report['machine']['cpu_model']}, {torch.get_num_threads()} threads, "
                        f"{report['date']}, {rounds} rounds", title_justify="left")
    for col in ("case", "params", "batch", "s/unit", "img/s", "GFLOP/s", "% of ceiling", "peak RSS MiB (+work)",
                "x DM step"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, r in results.items():
        ceiling = ceilings[r["precision"]]
        if r["kind"] == "train":
            speed, sec = f"{r['images_per_second']:.1f}", f"{r['seconds_per_step']:.3f}"
        else:
            speed, sec = f"{r['images_per_second_at_50_steps']:.2f}*", f"{r['seconds_per_denoising_step']:.3f}"
        ratio = next((f"{v:.2f}" for k, v in ratios.items() if k.startswith(name + " /") and "-odm" in name), "")
        table.add_row(name, f"{r['parameters'] / 1e6:.2f} M", str(r["batch"]), sec, speed,
                      f"{r['gflops_per_second']:.0f}", f"{100 * r['gflops_per_second'] / ceiling:.0f}%",
                      f"{r['peak_rss_mb']:.0f} (+{r['peak_rss_mb'] - r['rss_before_first_step_mb']:.0f})", ratio)
    console = Console(width=150)
    console.print(table)
    console.print(f"matmul ceilings measured in this run: fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 {ceilings['bf16']:.0f} "
                  "GFLOP/s. s/unit: one training step, or one guided DDIM denoising step of the batch (2 x batch "
                  "network passes). * images/s at 50 DDIM steps with guidance. (+work): peak RSS minus RSS after "
                  "imports and model set-up.")
    for key, value in ratios.items():
        if "fp32 /" in key and "bf16" in key:
            console.print(f"fp32 / bf16 time: {key} = {value:.2f}")
    console.print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5; skip the 64 px fp32 case")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (each times every case once)")
    parser.add_argument("--only", nargs="*", help="run only these cases")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()

    rounds = args.rounds or (3 if args.quick else 5)
    names = args.only or [c for c in CASES if not (args.quick and c == "p64-dm-fp32")]
    ceilings = matmul_ceilings()
    cases = {}
    for name in names:
        print(f"building and warming up {name} ...", file=sys.stderr, flush=True)
        cases[name] = Case(name)
        cases[name].warm_up_and_count()
    ratios = paired_rounds(cases, rounds)
    ceilings = best_ceilings(ceilings, matmul_ceilings())  # the machine is shared: the better of two
    results = {name: case.summary() for name, case in cases.items()}
    for name in results:
        print(f"peak memory of {name} ...", file=sys.stderr, flush=True)
        results[name]["peak_rss_mb"], results[name]["rss_before_first_step_mb"] = peak_memory_of(name)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": ("python studies/generator_cost.py " + " ".join(sys.argv[1:])).strip(),
        "machine": machine_record(),
        "note": "shared machine (other jobs running): absolute times are hints; ratios are paired within rounds",
        "matmul_ceiling_gflops": ceilings,
        "cases": results,
        "paired_time_ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, rounds, args.out)


if __name__ == "__main__":
    main()
