"""What the generator costs on this machine: training img/s and peak memory, ODM/DM step cost, sampling speed.

Usage::

    python benchmarks/generator_cost.py            # all cases, ~10-20 min on 2 busy cores
    python benchmarks/generator_cost.py --quick    # fewer repetitions, no 64 px fp32 case

Each case runs in its own subprocess (so peak resident memory is per case) with the same thread
count, and reports the median of several timed steps after warm-up steps. Cases:

- training steps (forward + backward + Adam + EMA, as the trainer does them) of the quickstart
  generator at 32 px, batch 32: DM (gamma = 0), ODM with the default options, and the cheaper ODM
  variants (include-true triplets, ordinal fraction 0.25), in bf16 autocast and fp32;
- the same at 64 px with the paper recipe's network (batch 8 here, to keep the CPU time bounded);
- DDIM sampling with classifier-free guidance (conditional + unconditional in one batch of 2 x 32).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``; the bf16/fp32 matmul ceilings
are measured in the same run. Prints a table, writes ``benchmarks/results/generator_cost.json``.
The machine is shared: absolute times are hints, ratios measured in one run are the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "generator_cost.json"

CASES = {
    # name: (recipe, image size, batch, ordinal overrides or None for DM, precision, kind)
    "qs-dm-bf16": ("quickstart", 32, 32, None, "bf16", "train"),
    "qs-odm-bf16": ("quickstart", 32, 32, {}, "bf16", "train"),
    "qs-odm-include-true-bf16": ("quickstart", 32, 32, {"triplets": "include-true"}, "bf16", "train"),
    "qs-odm-frac0.25-bf16": ("quickstart", 32, 32, {"fraction": 0.25}, "bf16", "train"),
    "qs-odm-include-true-frac0.25-bf16": ("quickstart", 32, 32, {"triplets": "include-true", "fraction": 0.25}, "bf16", "train"),
    "qs-dm-fp32": ("quickstart", 32, 32, None, "fp32", "train"),
    "qs-odm-fp32": ("quickstart", 32, 32, {}, "fp32", "train"),
    "p64-dm-bf16": ("paper-eyepacs-64", 64, 8, None, "bf16", "train"),
    "p64-odm-bf16": ("paper-eyepacs-64", 64, 8, {}, "bf16", "train"),
    "p64-dm-fp32": ("paper-eyepacs-64", 64, 8, None, "fp32", "train"),
    "qs-ddim-cfg-bf16": ("quickstart", 32, 32, None, "bf16", "sample"),
    "qs-ddim-cfg-fp32": ("quickstart", 32, 32, None, "fp32", "sample"),
}


def matmul_ceilings(torch) -> dict[str, float]:
    """GFLOP/s of a 2048^2 matmul in fp32 and bf16 (median of 5)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(2048, 2048, dtype=dtype)
        a @ a
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t0)
        out[name] = 2 * 2048**3 / statistics.median(times) / 1e9
    return out


def run_case(name: str, reps: int) -> dict:
    """One case in this process; returns its measurements."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from odmaug.config import load_recipe
    from odmaug.diffusion import DiffusionLoss, NoiseSchedule, build_generator, sample
    from odmaug.diffusion.precision import autocast, resolve_precision

    recipe_name, size, batch, ordinal, precision, kind = CASES[name]
    sets = [] if ordinal is None else [f"diffusion.ordinal.{k}={v}" for k, v in ordinal.items()]
    sets.append(f"diffusion.ordinal.gamma={0.0 if ordinal is None else 1.0}")
    recipe = load_recipe(ROOT / "recipes" / f"{recipe_name}.yaml", sets)
    device = torch.device("cpu")
    dtype = resolve_precision(precision, device)
    torch.manual_seed(0)
    model = build_generator(recipe.generator, recipe.data.num_classes, size).to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    schedule = NoiseSchedule.from_config(recipe.diffusion)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch) % recipe.data.num_classes
    result = {"case": name, "recipe": recipe_name, "image_size": size, "batch": batch, "precision": precision,
              "kind": kind, "parameters": params, "ordinal": ordinal}

    if kind == "train":
        loss_fn = DiffusionLoss(recipe.diffusion, recipe.data.num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True)
        ema = [p.detach().clone() for p in model.parameters()]

        def step():
            with autocast(device, dtype):
                out = loss_fn(model, x0, labels, schedule, g)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            opt.step()
            torch._foreach_lerp_(ema, list(model.parameters()), 0.001)
            return out

        for _ in range(2):
            step()
        times, evaluated = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = step()
            times.append(time.perf_counter() - t0)
            evaluated.append(batch + loss_fn.evaluations_per_ordinal_sample * out["n_ord"] if loss_fn.active else batch)
        with FlopCounterMode(display=False) as counter:
            step()
        sec = statistics.median(times)
        result.update(seconds_per_step=sec, images_per_second=batch / sec, flops_per_step=counter.get_total_flops(),
                      network_evaluations_per_step=statistics.median(evaluated))
    else:
        steps = 10
        noise = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        model.eval()

        def run():
            with autocast(device, dtype):
                return sample(model, noise, labels, schedule, sampler="ddim", steps=steps, guidance_scale=2.0)

        run()
        times = []
        for _ in range(max(2, reps // 2)):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        with FlopCounterMode(display=False) as counter:
            run()
        sec = statistics.median(times)
        result.update(seconds_per_denoising_step=sec / steps, image_steps_per_second=batch * steps / sec,
                      images_per_second_at_50_steps=batch * steps / sec / 50, flops_per_step=counter.get_total_flops() / steps)
        sec = sec / steps
    result["gflops_per_second"] = result["flops_per_step"] / sec / 1e9
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions; skip the 64 px fp32 case")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per case (default 5, quick 3)")
    parser.add_argument("--only", nargs="*", help="run only these cases")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    if args.one:
        import torch

        print(json.dumps(run_case(args.one, reps)))
        return
    import torch

    cases = args.only or [c for c in CASES if not (args.quick and c == "p64-dm-fp32")]
    ceilings = matmul_ceilings(torch)
    results = {}
    for name in cases:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--reps", str(reps)],
                              capture_output=True, text=True, env={**os.environ})
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"case {name} failed")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    ceilings_after = matmul_ceilings(torch)
    for key in ceilings:  # the machine is shared: use the better of the two measurements
        ceilings[key] = max(ceilings[key], ceilings_after[key])

    ratios = {}
    for prefix, dtype in (("qs", "bf16"), ("qs", "fp32"), ("p64", "bf16")):
        dm = results.get(f"{prefix}-dm-{dtype}")
        if not dm:
            continue
        for name, r in results.items():
            if name.startswith(f"{prefix}-odm") and name.endswith(dtype):
                ratios[f"{name} / {prefix}-dm-{dtype}"] = r["seconds_per_step"] / dm["seconds_per_step"]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average_at_end": os.getloadavg()},
        "note": "shared machine (other jobs running): absolute times are hints; ratios are from one run",
        "matmul_ceiling_gflops": ceilings,
        "cases": results,
        "odm_over_dm_step_cost": ratios,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"generator cost on {report['machine']['processor']} ({torch.get_num_threads()} threads), "
                        f"{report['date']}", title_justify="left")
    for col in ("case", "params", "batch", "s/step", "img/s", "GFLOP/s", "% ceiling", "peak RSS MiB", "ODM/DM"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, r in results.items():
        ceiling = ceilings[r["precision"]]
        if r["kind"] == "train":
            speed, sec = f"{r['images_per_second']:.1f}", f"{r['seconds_per_step']:.3f}"
        else:
            speed = f"{r['images_per_second_at_50_steps']:.2f}*"
            sec = f"{r['seconds_per_denoising_step']:.3f}"
        ratio = next((f"{v:.2f}" for k, v in ratios.items() if k.startswith(name + " ")), "")
        table.add_row(name, f"{r['parameters'] / 1e6:.2f} M", str(r["batch"]), sec, speed,
                      f"{r['gflops_per_second']:.0f}", f"{100 * r['gflops_per_second'] / ceiling:.0f}%",
                      f"{r['peak_rss_mb']:.0f}", ratio)
    console = Console()
    console.print(table)
    console.print(f"matmul ceilings: fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 {ceilings['bf16']:.0f} GFLOP/s. "
                  "* sampling: images/s for 50 DDIM steps with guidance (2 network passes per image-step, one batch); "
                  "s/step is per denoising step of the batch.")
    console.print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
