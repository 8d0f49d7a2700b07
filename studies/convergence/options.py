"""Command-line options of the convergence study, the compared configurations and the smoke sizes."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from _common import ROOT, RESULTS_DIR

RECIPE = ROOT / "studies" / "convergence" / "quickstart_before.yaml"
"""The study's base: recipes/quickstart.yaml as the study began (eps-prediction, DDIM-50), frozen."""
SMOKE_RECIPE = ROOT / "recipes" / "smoke.yaml"
DEFAULT_CONFIGS = ("today=", "vpred-minsnr=diffusion.prediction=v;diffusion.snr_gamma=5")
FORMS = {"dm": ["diffusion.ordinal.gamma=0"], "odm": []}
"""Each configuration trains in both forms: DM (gamma 0, appended last so that it wins) and ODM
(the recipe's gamma: 1.0 in quickstart)."""
SAMPLERS = {"ddim50": {"sampler": "ddim", "steps": 50, "eta": 1.0}, "unipc10": {"sampler": "unipc", "steps": 10}}
"""The stochastic reference (quickstart's sampler) and the deterministic solver whose FID gap the
study tracks (UniPC-10 / DDIM-50)."""
SMOKE = {"base_steps": 10, "n": 8, "judge_epochs": 1, "kid_subset_size": 4, "resamples": 20, "swd_per_image": 16,
         "swd_directions": 64, "probe_warmup": 2, "probe_steps": 4, "probe_rounds": 1,
         "launcher_rounds": 1, "multiples": "1,2",
         "diagnose_per_bucket": 16}
"""Tiny sizes that exercise every stage in about two minutes (recipes/smoke.yaml: synthetic data, 16 px);
without ``--config`` the smoke trains the ``today`` configuration only (each odmaug subprocess costs
~10 s of start-up, ~18 s under torchrun, whatever the size)."""


def host_flag() -> str:
    """``amx`` / ``avx512bf16`` / ``nobf16``: the CPU's best bf16 unit, as lscpu lists its flags."""
    flags = lscpu_bf16_flags()
    return "amx" if "amx_bf16" in flags else "avx512bf16" if "avx512_bf16" in flags else "nobf16"


def lscpu_bf16_flags() -> list[str]:
    """``lscpu | grep -o 'amx_bf16\\|avx512_bf16' | sort -u``, as a list (empty without lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    return sorted({flag for flag in ("amx_bf16", "avx512_bf16") if flag in text.split()})


def parse_configs(specs: list[str]) -> dict[str, list[str]]:
    """``NAME=SET;SET`` specs -> {name: [--set strings]}; raises SystemExit on a bad or repeated name."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, _, sets = spec.partition("=")
        name = name.strip()
        if not name or not all(c.isalnum() or c in "-_" for c in name) or name in out:
            raise SystemExit(f"--config {spec!r}: need a new NAME of letters, digits, - or _ before '='")
        out[name] = [s.strip() for s in sets.split(";") if s.strip()]
    return out


def run_names(configs: dict[str, list[str]]) -> dict[str, dict]:
    """Every trained run: ``<config>-<form>`` -> its config, form and full --set list. The first
    configuration's ODM form is the baseline whose step time defines the wall budget."""
    return {f"{name}-{form}": {"config": name, "form": form, "sets": sets + FORMS[form]}
            for name, sets in configs.items() for form in FORMS}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DM and ODM under today's recipe and candidate objectives at EQUAL "
                                            "WALL TIME: FID/KID, SWD, grade fidelity per checkpoint (resumable).")
    p.add_argument("--work", type=Path, help="runs, probes, judge, samples, grids (default /tmp/convergence[_smoke])")
    p.add_argument("--out", type=Path, help="results JSON (default studies/results/convergence_<host flag>.json)")
    p.add_argument("--recipe", type=Path, help="base recipe (default studies/convergence/quickstart_before.yaml: the quickstart "
                   "recipe as the study began; smoke: recipes/smoke.yaml)")
    p.add_argument("--config", action="append", dest="configs",
                   help="NAME=SET;SET... (repeatable; the first is the baseline). Default: " + " and ".join(repr(c) for c in DEFAULT_CONFIGS))
    p.add_argument("--runs", help="NAME,NAME: train and evaluate only these runs (e.g. vpred-minsnr-odm); the others "
                   "keep their stored checkpoints and the plan stays the whole study's")
    p.add_argument("--multiples", default="1,2,4", help="checkpoints, in multiples of the baseline ODM's wall time")
    p.add_argument("--base-steps", type=int, help="baseline ODM steps at 1x (default: the recipe's train.steps)")
    p.add_argument("--launcher", choices=("auto", "threads", "torchrun"), default="auto",
                   help="training: one process with 2 threads, torchrun 2 x 1 thread, or the faster in the probe")
    p.add_argument("--threads", type=int, default=1, help="threads of this process (sampling, metrics) and the judge")
    p.add_argument("--n", type=int, default=64, help="generated images per grade and sampler")
    p.add_argument("--judge-epochs", type=int, default=30, help="epochs of the resnet18 judge (quickstart: 30)")
    p.add_argument("--kid-subset-size", type=int, default=50, help="below every set size (grade 4: 66 real)")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (FID, fidelity QWK)")
    p.add_argument("--swd-per-image", type=int, default=128, help="7x7 patches per image and pyramid level")
    p.add_argument("--swd-directions", type=int, default=512, help="random projections per level")
    p.add_argument("--probe-warmup", type=int, default=10, help="untimed steps of each probe")
    p.add_argument("--probe-steps", type=int, default=30, help="timed steps of each probe")
    p.add_argument("--probe-rounds", type=int, default=3, help="round-robin probe rounds (the baseline in each)")
    p.add_argument("--launcher-rounds", type=int, default=1,
                   help="rounds of the launcher comparison (--launcher auto; 2-thread runs are slow under load)")
    p.add_argument("--grid-per-grade", type=int, default=8, help="images per grade and sampler in each grid")
    p.add_argument("--diagnose-per-bucket", type=int, default=256, help="real images per timestep bucket")
    p.add_argument("--buckets", type=int, default=10, help="timestep buckets over 0..T-1")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (" + ", ".join(f"{k}={v}" for k, v in SMOKE.items()) + ")")
    p.add_argument("--probe-only", action="store_true", help="stop after the probes and the plan (steps, wall time)")
    p.add_argument("--report", action="store_true", help="print the tables of --out and (re)draw its figure beside it; no training or sampling")
    p.add_argument("--rejudge", action="store_true", help="judge stored evaluations again from their cached sample "
                   "sets (a figure added to the judge reaches checkpoints trained on since); no sampling")
    p.add_argument("--ema-sweep", metavar="RUN", help="judge every EMA (train.ema_decay and train.ema_decays) of a "
                   "run's last checkpoint with UniPC-10; stored in --out; no training")
    p.add_argument("--diagnose", metavar="RUN", help="eps-norm diagnosis of a run folder or a study run name; no work")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options with the smoke sizes and the defaults that depend on them filled in."""
    p = parser()
    args = p.parse_args(argv)
    if args.smoke:  # smoke sizes replace the defaults, not values given on the command line
        for key, value in SMOKE.items():
            if getattr(args, key, None) == p.get_default(key):
                setattr(args, key, value)
    args.recipe = args.recipe or (SMOKE_RECIPE if args.smoke else RECIPE)
    args.work = args.work or Path("/tmp/convergence_smoke" if args.smoke else "/tmp/convergence")
    args.out = args.out or (args.work / "convergence_smoke.json" if args.smoke
                            else RESULTS_DIR / f"convergence_{host_flag()}.json")
    args.configs = parse_configs(args.configs or list(DEFAULT_CONFIGS[:1] if args.smoke else DEFAULT_CONFIGS))
    args.multiples = sorted({float(m) for m in args.multiples.split(",")})
    names = run_names(args.configs)
    args.runs = args.runs.split(",") if args.runs else list(names)
    if unknown := sorted(set(args.runs) - set(names)):
        raise SystemExit(f"--runs {','.join(unknown)}: not a run of this study ({', '.join(names)})")
    if args.n < 2 or any(m <= 0 for m in args.multiples):
        raise SystemExit("--n must be at least 2 and --multiples positive")
    return args
