"""Synthesis speed: images/s of ``odmaug augment`` for a quickstart-size generator, and its linearity.

Usage::

    python studies/synthesis_speed.py                 # n = 32, 64, 128; DDIM 50 steps, guidance 2
    python studies/synthesis_speed.py --steps 10 --sizes 16 32 64 --precision fp32

The generator has the quickstart recipe's network (32 px, 5 grades) with random weights: speed does
not depend on training. For every n, in one process and alternating:

- ``generate``: the sampler alone on the same grades and seeds (no files), the floor;
- ``synthesis``: :func:`odmaug.augment.run_synthesis` into a fresh folder (PNG per image written
  atomically, manifest, record), i.e. what a user gets.

Then the folder-size check: ``n`` new images are synthesized into a folder already holding
``--prefill`` valid images of the same checkpoint; the extra wall time over an empty folder is the
one directory scan + validation, paid once per run, so per-image cost must not grow with folder size.

Prints a table, writes ``studies/results/synthesis_speed.json`` (or ``--out``). The machine is shared: absolute
times are hints; ratios measured in one run are the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "studies" / "results" / "synthesis_speed.json"


def make_run(root: Path, seed: int = 0) -> Path:
    """A run folder holding a random-weight quickstart generator checkpoint."""
    from odmaug.config import load_recipe
    from odmaug.diffusion import build_generator
    from odmaug.diffusion.checkpointer import save_checkpoint
    from odmaug.runs import create_run
    from odmaug.train_state import TrainingState

    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", ["device=cpu"])
    run = create_run(recipe, root, "synthesis-speed")
    torch.manual_seed(seed)
    model = build_generator(recipe.generator, recipe.data.num_classes, recipe.data.image_size)
    with torch.no_grad():  # zero-initialised output layers would make every image the same
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(run.root / "generator", TrainingState(0, state, optimizer.state_dict(), ema=state))
    return run.root


def plan(n: int, num_classes: int = 5) -> tuple[list[int], list[int]]:
    """The grades and seeds synthesis makes for ``n`` images: grade 4, seeds 0..n-1."""
    return [num_classes - 1] * n, list(range(n))


def time_generate(gen, n: int, settings, batch_size: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the sampler alone for ``n`` images."""
    from odmaug.augment.sampler import aligned
    from odmaug.config import merge_options
    from odmaug.diffusion import generate

    labels, seeds = plan(n)
    settings = merge_options(settings, None, batch_size=aligned(batch_size))
    start, cpu = time.perf_counter(), time.process_time()
    generate(gen.model, gen.schedule, labels, seeds, settings, device="cpu")
    return time.perf_counter() - start, time.process_time() - cpu


def time_synthesis(run: Path, out: Path, n: int, settings, batch_size: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, seconds of the generation loop) of ``run_synthesis`` for ``n`` new images."""
    from odmaug.augment import SynthesisRequest, run_synthesis
    from odmaug.config import merge_options

    request = SynthesisRequest(run=run, out_dir=out, target_classes=[4], n_per_grade=n,
                               settings=merge_options(settings, None, batch_size=batch_size))
    start, cpu = time.perf_counter(), time.process_time()
    summary = run_synthesis(request, device="cpu", show_progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert summary.generated == n and summary.manifest_rows >= n, summary
    return wall, cpu, summary.seconds


def prefill(out: Path, source: Path, count: int) -> None:
    """Copy one valid PNG to ``count`` seeds above the benchmark's range (same grade folder)."""
    folder = out / "4"
    folder.mkdir(parents=True, exist_ok=True)
    data = (source / "4" / "0.png").read_bytes()
    for seed in range(1_000_000, 1_000_000 + count):
        (folder / f"{seed}.png").write_bytes(data)


def measure(run: Path, gen, work: Path, n: int, settings, args) -> dict:
    """generate and synthesis for ``n`` images, alternating ``--reps`` times: the medians of one row."""
    cases: dict[str, list[float]] = {k: [] for k in ("gen_wall", "gen_cpu", "syn_wall", "syn_cpu", "syn_loop")}
    for rep in range(args.reps):  # alternate the two measurements
        wall, cpu = time_generate(gen, n, settings, args.batch_size)
        cases["gen_wall"].append(wall)
        cases["gen_cpu"].append(cpu)
        wall, cpu, loop = time_synthesis(run, work / f"out-{n}-{rep}", n, settings, args.batch_size)
        cases["syn_wall"].append(wall)
        cases["syn_cpu"].append(cpu)
        cases["syn_loop"].append(loop)
    med = {k: statistics.median(v) for k, v in cases.items()}
    row = {
        "n": n,
        "generate_s": med["gen_wall"], "generate_cpu_s": med["gen_cpu"],
        "synthesis_wall_s": med["syn_wall"], "synthesis_cpu_s": med["syn_cpu"], "synthesis_loop_s": med["syn_loop"],
        "generate_img_s": n / med["gen_wall"], "synthesis_img_s": n / med["syn_wall"],
        "synthesis_cpu_s_per_img": med["syn_cpu"] / n,
        # CPU time is less sensitive than wall time to other jobs on a shared machine.
        "overhead_cpu": med["syn_cpu"] / med["gen_cpu"] - 1.0,
        "all": cases,
    }
    print(f"n={n}: generate {row['generate_s']:.1f} s ({row['generate_cpu_s']:.1f} CPU s), synthesis "
          f"{row['synthesis_wall_s']:.1f} s ({row['synthesis_cpu_s']:.1f} CPU s)", file=sys.stderr)
    return row


def linear_fits(rows: list[dict]) -> dict:
    """Linear cost: time = fixed per run (load the checkpoint, scan the folder) + per image * n."""
    base = rows[0]
    ns = np.array([r["n"] for r in rows], dtype=float)
    fits = {}
    for key in ("synthesis_cpu_s", "synthesis_wall_s", "synthesis_loop_s"):
        y = np.array([r[key] for r in rows])
        per_image, fixed = np.polyfit(ns, y, 1) if len(rows) > 1 else (y[0] / ns[0], 0.0)
        residual = np.abs(y - (fixed + per_image * ns)) / y
        fits[key] = {"fixed_s": float(fixed), "per_image_s": float(per_image), "max_rel_residual": float(residual.max())}
    for row in rows:
        row["loop_s_per_img"] = row["synthesis_loop_s"] / row["n"]
        row["loop_s_per_img_vs_smallest"] = row["loop_s_per_img"] / (base["synthesis_loop_s"] / base["n"])
    return fits


def folder_size_check(run: Path, work: Path, settings, args, base: dict) -> dict | None:
    """``n`` new images into a folder already holding ``--prefill`` valid ones: the extra cost is one scan."""
    if not args.prefill:
        return None
    from odmaug.augment.synthesis_folder import SynthesisFolder

    n = args.sizes[0]
    full = work / "prefilled"
    shutil.copytree(work / f"out-{n}-0", full)
    shutil.rmtree(full / "4")
    prefill(full, work / f"out-{n}-0", args.prefill)
    folder = SynthesisFolder(full, 32, 5)
    start = time.perf_counter()
    valid = folder.valid_items(folder.scan())  # what a run does once, before generating
    scan_s = time.perf_counter() - start
    assert len(valid) == args.prefill
    wall, cpu, loop = time_synthesis(run, full, n, settings, args.batch_size)
    return {
        "n_new": n, "images_already_there": args.prefill,
        "scan_and_validate_s": scan_s, "us_per_existing_image": scan_s / args.prefill * 1e6,
        "cpu_s_per_new_image": cpu / n, "empty_folder_cpu_s_per_new_image": base["synthesis_cpu_s_per_img"],
        "wall_s": wall,
    }


def print_report(result: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rows, fits, folder_check, settings = result["rows"], result["linear_fit"], result["folder_size_check"], result["settings"]
    table = Table(title=f"synthesis speed: quickstart generator, DDIM {settings['steps']} steps, guidance "
                        f"{settings['guidance_scale']:g}, {settings['precision']}")
    for name in ("n", "generate img/s", "synthesis img/s", "CPU s/img", "CPU overhead", "loop s/img",
                 f"loop s/img vs n={rows[0]['n']}"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(str(row["n"]), f"{row['generate_img_s']:.2f}", f"{row['synthesis_img_s']:.2f}",
                      f"{row['synthesis_cpu_s_per_img']:.3f}", f"{row['overhead_cpu']:+.1%}",
                      f"{row['loop_s_per_img']:.3f}", f"{row['loop_s_per_img_vs_smallest']:.2f}")
    console = Console()
    console.print(table)
    fit = fits["synthesis_cpu_s"]
    console.print(f"linear fit of CPU time: {fit['fixed_s']:.2f} s per run + {fit['per_image_s']:.3f} s per image "
                  f"(largest deviation {fit['max_rel_residual']:.1%})")
    if folder_check:
        console.print(
            f"folder already holding {folder_check['images_already_there']} images: one scan + validation "
            f"{folder_check['scan_and_validate_s']:.2f} s ({folder_check['us_per_existing_image']:.0f} us per image, once "
            f"per run); {folder_check['cpu_s_per_new_image']:.3f} CPU s per new image vs "
            f"{folder_check['empty_folder_cpu_s_per_new_image']:.3f} in an empty folder"
        )
    console.print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the quickstart recipe's)")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--precision", default="auto", help="auto (bf16 where native), bf16 or fp32")
    parser.add_argument("--batch-size", type=int, default=32, help="32 divides every default n: equal batches")
    parser.add_argument("--reps", type=int, default=1, help="repetitions per case (median)")
    parser.add_argument("--prefill", type=int, default=10_000, help="images already in the folder (0: skip)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args()

    from odmaug.config import SampleConfig, load_recipe
    from odmaug.diffusion import load_generator
    from odmaug.precision import precision_name, resolve_precision

    steps = args.steps or load_recipe(ROOT / "recipes" / "quickstart.yaml").sample.steps
    settings = SampleConfig(sampler="ddim", steps=steps, eta=0.0, guidance_scale=args.guidance, precision=args.precision)
    work = Path(tempfile.mkdtemp(prefix="odmaug-synthesis-speed-"))
    try:
        run = make_run(work / "runs")
        gen = load_generator(run, device="cpu")
        params = sum(p.numel() for p in gen.model.parameters())
        dtype = precision_name(resolve_precision(args.precision, torch.device("cpu")))
        print(f"quickstart generator ({params / 1e6:.2f} M parameters, 32 px), DDIM {steps} steps, guidance "
              f"{args.guidance:g}, {dtype}, batch {args.batch_size}, {torch.get_num_threads()} threads", file=sys.stderr)
        time_generate(gen, 8, settings, 8)  # warm-up: kernel creation for the batch shapes
        rows = [measure(run, gen, work, n, settings, args) for n in args.sizes]
        fits = linear_fits(rows)
        result = {
            "benchmark": "synthesis_speed",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
            "generator": {"recipe": "quickstart", "parameters": params, "image_size": 32, "weights": "random"},
            "settings": {"sampler": "ddim", "steps": steps, "guidance_scale": args.guidance,
                         "precision": dtype, "batch_size": args.batch_size, "reps": args.reps},
            "rows": rows,
            "linear_fit": fits,
            "folder_size_check": folder_size_check(run, work, settings, args, rows[0]),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print_report(result, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
