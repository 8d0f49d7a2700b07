"""Training through the ``odmaug`` CLI in subprocesses: the launchers, the step-time probes, and
runs continued to a step count.

Two launchers use the host's 2 cores: ``threads`` (one process, 2 OpenMP threads) and ``torchrun``
(2 DDP processes of 1 thread, each half of the global batch 32, gloo). Their training differs only
in the random streams (one per rank), so the study uses one launcher for every run.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAUNCHERS = ("threads", "torchrun")
CORES = 2
QUIET = ["--set", "train.checkpoint_every=1000000", "--set", "train.sample_every=1000000",
         "--set", "train.grid_per_grade=1", "--set", "sample.steps=2"]
"""Probe runs: no checkpoint or grid inside the timed steps; the one grid at the end costs 2 steps."""


def command(launcher: str, args: list[str], threads: int = CORES) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of ``odmaug ARGS`` under ``launcher`` (``threads``: the one
    process's thread count under ``threads``; torchrun's ranks have one each).

    torchrun's ``--standalone`` picks a free rendezvous port, so two studies (or other jobs) on one
    host do not collide on the default 29500; the ``--`` keeps torchrun from parsing odmaug's options.
    """
    if launcher not in LAUNCHERS:
        raise SystemExit(f"unknown launcher {launcher!r} (use {' or '.join(LAUNCHERS)})")
    threads = threads if launcher == "threads" else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if launcher == "threads":
        return [sys.executable, "-m", "odmaug", *args], env
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    torchrun = torchrun if Path(torchrun).exists() else "torchrun"
    return [torchrun, "--standalone", "--nproc_per_node", str(CORES), "-m", "odmaug", "--", *args], env


def odmaug(launcher: str, args: list[str], log: Path, threads: int = CORES) -> float:
    """Run ``odmaug ARGS`` under ``launcher``, output appended to ``log``; returns wall seconds.

    Raises:
        SystemExit: the command failed (the log names why).
    """
    argv, env = command(launcher, args, threads)
    print(f"$ [{launcher}] odmaug {' '.join(args)}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(argv, env=env, stdout=out, stderr=out).returncode
    if code:
        raise SystemExit(f"odmaug {args[0]} failed (exit {code}); see {log}")
    return time.perf_counter() - t0


def run_folder(runs: Path, name: str) -> Path | None:
    """The newest run folder ``NNNNN-<name>`` under ``runs`` (exact name), or None."""
    pattern = re.compile(rf"\d+-{re.escape(name)}")
    found = sorted(p for p in runs.glob(f"*-{name}") if pattern.fullmatch(p.name)) if runs.is_dir() else []
    return found[-1] if found else None


def given_run(work: Path, given: str, option: str) -> Path:
    """A run folder named on the command line (``option``: ``--diagnose``...): a folder, or a run of
    this study by name under ``work/runs``; SystemExit when neither."""
    run = Path(given)
    if not run.is_dir():
        run = run_folder(work / "runs", given)
        if run is None:
            raise SystemExit(f"{option} {given}: neither a run folder nor a run under {work / 'runs'}")
    return run


def log_events(run: Path, event: str) -> list[dict]:
    """The run's ``log.jsonl`` records of one event type, in order."""
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in (json.loads(line) for line in lines if line.strip()) if r.get("event") == event]


def checkpoint_step(run: Path | None) -> int:
    """The step of the run's latest complete checkpoint (-1: none)."""
    pointer = run / "generator" / "checkpoint.json" if run is not None else None
    return int(json.loads(pointer.read_text())["step"]) if pointer is not None and pointer.is_file() else -1


def probe(launcher: str, recipe: Path, sets: list[str], folder: Path, name: str, warmup: int, timed: int) -> dict:
    """Seconds per training step of one configuration: a new run of ``warmup + timed`` steps under
    ``folder`` (reused when it finished), logged every ``timed // 4`` steps; the figure is the
    median seconds per step over the log intervals after ``warmup`` (first steps build caches and
    autocast kernels; a median ignores a burst of other load)."""
    every = max(1, timed // 4)
    warmup = -(-warmup // every) * every  # whole log intervals
    run = run_folder(folder, name)
    if run is None or not log_events(run, "train_end"):
        odmaug(launcher, ["train-generator", "-r", str(recipe), "--runs-dir", str(folder), "--name", name,
                          "--device", "cpu", "--set", f"train.steps={warmup + timed}",
                          "--set", f"train.log_every={every}", *QUIET, *sum((["--set", s] for s in sets), [])],
               folder / "probe.log")
        run = run_folder(folder, name)
    rows = [r for r in log_events(run, "train") if r["step"] > warmup]
    intervals = [1.0 / r["it_s"] for r in rows]
    start = log_events(run, "train_start")[-1]
    return {"launcher": launcher, "run": str(run), "warmup_steps": warmup, "timed_steps": rows[-1]["step"] - warmup,
            "s_per_step_intervals": intervals, "s_per_step": statistics.median(intervals),
            "precision": start.get("precision"), "world_size": start.get("world_size"),
            "load_average": list(os.getloadavg()), "time": time.time()}


def train_to(launcher: str, recipe: Path, sets: list[str], runs: Path, name: str, steps: int, log: Path) -> dict:
    """Train run ``name`` under ``runs`` to ``steps`` (new, continued with ``--resume``, or already
    there); constant lr after warm-up and a constant EMA decay make a continued run the same as a
    longer one. Returns the run folder, its step and the training seconds of every call so far
    (``train_end`` records: loop time, checkpoints and grids included)."""
    run = run_folder(runs, name)
    common = ["--device", "cpu", "--set", f"train.steps={steps}"]
    if checkpoint_step(run) >= steps:
        pass  # already there (a resumed study)
    elif run is not None and checkpoint_step(run) >= 0:
        odmaug(launcher, ["train-generator", "--resume", str(run), *common], log)
    else:
        odmaug(launcher, ["train-generator", "-r", str(recipe), "--runs-dir", str(runs), "--name", name, *common,
                          *sum((["--set", s] for s in sets), [])], log)
        run = run_folder(runs, name)
    ends = log_events(run, "train_end")
    return {"run": str(run), "step": checkpoint_step(run), "train_seconds": sum(e["seconds"] for e in ends),
            "calls": [{"steps_this_call": e["steps_this_call"], "seconds": e["seconds"]} for e in ends]}
