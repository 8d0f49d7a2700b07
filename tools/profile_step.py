"""Where one generator training step's time goes on this machine: torch.profiler over N steps.

Builds the trainer of a recipe (default ``recipes/quickstart.yaml``: its network, data, loss and
optimizer, exactly as ``odmaug train-generator`` would, in a throw-away run folder), runs warm-up
steps, times N plain steps, then profiles N more with each part of the step marked:

    data       the batch draw (indices, uint8 -> [-1, 1], flips: the trainer's own ``_batch``)
    forward    the loss under the training autocast (DM term, plus the ordinal term for ODM)
    backward   zero_grad + loss.backward()
    clip       the global gradient-norm clip
    optimizer  Adam's step
    ema        the EMA update(s)

These are the calls of :class:`odmaug.train_step.TrainStep` (fp32/bf16 path; no fp16 scaler on a
CPU), made one by one so that the profiler can label them. Writes a table to stdout and JSON to
``tools/results/step_profile_<cpu bf16 flags>.json``: the phases' shares, the top operators by
self CPU time, the host's CPU flags, torch's version, threads and the load average at start and end
(another job on the machine inflates every number; the JSON says how loaded it was).

Usage (DM and ODM forms both profiled; ``--set`` applies to both, and DM adds gamma=0)::

    OMP_NUM_THREADS=2 ODMAUG_DATA_DIR=/work/shared/data ODMAUG_OFFLINE=1 \\
        python tools/profile_step.py --warmup 3 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from odmaug.config import load_recipe
from odmaug.diffusion.lr_schedule import learning_rate
from odmaug.diffusion.trainer import _Trainer
from odmaug.distributed import init_distributed
from odmaug.precision import autocast, cpu_bf16_flags, precision_name
from odmaug.runs import create_run

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("data", "forward", "backward", "clip", "optimizer", "ema")
HOST_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "fma")
KINDS = (  # operator name fragments -> kind (first match wins), for the share by kind
    ("convolution", "convolution"), ("conv", "convolution"), ("addmm", "matmul"), ("mm", "matmul"),
    ("bmm", "matmul"), ("linear", "matmul"), ("attention", "attention"), ("softmax", "attention"),
    ("group_norm", "group norm + SiLU"), ("groupnorm", "group norm + SiLU"), ("silu", "group norm + SiLU"),
    ("_foreach", "optimizer/EMA foreach"), ("copy_", "copies"), ("to_copy", "copies"), ("clone", "copies"),
    ("contiguous", "copies"), ("sum", "reductions"), ("mean", "reductions"), ("norm", "reductions"),
    ("add", "elementwise"), ("mul", "elementwise"), ("sub", "elementwise"), ("div", "elementwise"),
    ("where", "elementwise"), ("pow", "elementwise"), ("sqrt", "elementwise"), ("empty", "allocation"),
)


def host_flags() -> list[str]:
    """The CPU feature flags of :data:`HOST_FLAGS` that /proc/cpuinfo lists (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "flags:")
    present = set(line.split(":", 1)[1].split())
    return [f for f in HOST_FLAGS if f in present]


def one_step(tr: _Trainer, step: int) -> None:
    """Optimizer step ``step`` (1-based) of trainer ``tr``, each part in its own profiler range."""
    unit = tr.unit
    with record_function("data"):
        x, labels = tr._batch()
    unit.set_lr(learning_rate(step, tr.cfg))
    with record_function("forward"), autocast(tr.device, tr.dtype):
        out = tr.loss_fn(tr.forward_model, x, labels, tr.schedule, tr.rng, tr.pool)
    with record_function("backward"):
        unit.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
    with record_function("clip"):
        if unit.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(tr.model.parameters(), unit.grad_clip, foreach=True)
    with record_function("optimizer"):
        unit.optimizer.step()
    with record_function("ema"):
        for ema in (unit.ema, *unit.extra_emas):
            ema.update(step)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for frag, kind in KINDS if frag in low), "other")


def summarise(prof, steps: int, top: int) -> dict:
    """Phase shares (inclusive CPU time of each range) and the top operators by self CPU time, per step."""
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1e3 / steps for e in events if e.key in PHASES}
    ops = [e for e in events if e.key not in PHASES and not e.key.startswith("ProfilerStep")]
    total_self = sum(e.self_cpu_time_total for e in ops) / 1e3 / steps
    rows = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    kinds: dict[str, float] = {}
    for e in ops:
        kinds[kind_of(e.key)] = kinds.get(kind_of(e.key), 0.0) + e.self_cpu_time_total / 1e3 / steps
    phase_sum = sum(phases.values())
    return {
        "phase_ms_per_step": {p: round(phases.get(p, 0.0), 3) for p in PHASES},
        "phase_share": {p: round(phases.get(p, 0.0) / phase_sum, 4) for p in PHASES},
        "self_cpu_ms_per_step": round(total_self, 3),
        "kind_share": {k: round(v / total_self, 4) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3),
                     "share": round(e.self_cpu_time_total / 1e3 / steps / total_self, 4),
                     "calls_per_step": e.count / steps, "kind": kind_of(e.key)} for e in rows],
    }


def profile_form(recipe_path: Path, overrides: list[str], warmup: int, steps: int, top: int) -> dict:
    """Warm up, time ``steps`` plain steps, then profile ``steps`` more; the form's JSON record."""
    recipe = load_recipe(recipe_path, ["device=cpu", *overrides])
    with tempfile.TemporaryDirectory() as folder:
        run = create_run(recipe, Path(folder))
        tr = _Trainer(run, recipe, resume=False, show_progress=False, context=init_distributed("cpu"))
        tr.model.train()
        for s in range(1, warmup + 1):
            one_step(tr, s)
        t0 = time.perf_counter()
        for s in range(warmup + 1, warmup + steps + 1):
            one_step(tr, s)
        plain = (time.perf_counter() - t0) / steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for s in range(warmup + steps + 1, warmup + 2 * steps + 1):
                one_step(tr, s)
            profiled = (time.perf_counter() - t0) / steps
        record = {"overrides": overrides, "parameters": sum(p.numel() for p in tr.model.parameters()),
                  "batch_size": recipe.train.batch_size, "image_size": recipe.data.image_size,
                  "precision": precision_name(tr.dtype), "ordinal_active": bool(tr.loss_fn.active),
                  "s_per_step_plain": round(plain, 4), "s_per_step_profiled": round(profiled, 4),
                  "img_per_s_plain": round(recipe.train.batch_size / plain, 2)}
        return record | summarise(prof, steps, top)


def print_form(name: str, r: dict) -> None:
    print(f"\n== {name}: {r['parameters'] / 1e6:.2f} M parameters, batch {r['batch_size']} at {r['image_size']} px, "
          f"{r['precision']}; {r['s_per_step_plain']:.3f} s/step plain ({r['img_per_s_plain']} img/s), "
          f"{r['s_per_step_profiled']:.3f} s/step profiled")
    print("phase      ms/step   share")
    for p in PHASES:
        print(f"{p:<10} {r['phase_ms_per_step'][p]:8.1f}  {100 * r['phase_share'][p]:5.1f}%")
    print("kind of operator (self CPU): " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["kind_share"].items()))
    print(f"{'operator':<48} {'self ms/step':>12} {'share':>7} {'calls':>6}")
    for op in r["top_ops"]:
        print(f"{op['op'][:48]:<48} {op['self_ms_per_step']:12.2f} {100 * op['share']:6.1f}% {op['calls_per_step']:6.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override (both forms)")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing")
    parser.add_argument("--steps", type=int, default=5, help="steps timed plain, then as many profiled")
    parser.add_argument("--top", type=int, default=15, help="operators in the table")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default tools/results/step_profile_<flags>.json)")
    args = parser.parse_args()
    flags = list(cpu_bf16_flags())
    tag = "-".join(f.replace("_", "") for f in flags) or "nobf16"
    result = {"command": "python tools/profile_step.py " + " ".join(sys.argv[1:]), "recipe": str(args.recipe.name),
              "host": {"cpu_bf16_flags": flags, "cpu_flags": host_flags(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "torch": torch.__version__, "loadavg_start": list(os.getloadavg()), "forms": {}}
    for name, extra in (("ODM", []), ("DM", ["diffusion.ordinal.gamma=0"])):
        result["forms"][name] = profile_form(args.recipe, [*args.overrides, *extra], args.warmup, args.steps, args.top)
        print_form(name, result["forms"][name])
    result["loadavg_end"] = list(os.getloadavg())
    print(f"\nload average start {result['loadavg_start']}, end {result['loadavg_end']}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, flags {result['host']['cpu_flags']}")
    out = args.out or ROOT / "tools" / "results" / f"step_profile_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
