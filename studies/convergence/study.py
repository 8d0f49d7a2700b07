"""The study's control flow: the results JSON as the resumable state, probes, then per multiple
every run trained and evaluated, the JSON rewritten (atomically) after every evaluation."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from convergence import launch, probes
from convergence.evaluate import evaluate_checkpoint, protocol
from convergence.options import lscpu_bf16_flags, parse_args, run_names
from convergence.report import figure, print_report


def load_state(args, runs: dict) -> dict:
    """The JSON at ``args.out`` (a study to extend) or a new record; refuses a stored study whose
    recipe, base steps or run settings differ from these options (its step counts would not apply)."""
    from _common import ROOT, machine_record

    recipe = args.recipe.resolve()
    fixed = {"recipe": str(recipe.relative_to(ROOT) if recipe.is_relative_to(ROOT) else recipe), "base_steps": args.base_steps}
    if args.out.exists():
        state = json.loads(args.out.read_text())
        if state["settings"] != fixed:
            raise SystemExit(f"{args.out} is a study with {state['settings']}, not {fixed}: use another --out/--work")
        for name, spec in runs.items():
            stored = state["runs"].get(name)
            if stored is not None and stored["sets"] != spec["sets"]:
                raise SystemExit(f"{args.out}: run {name} was trained with {stored['sets']}, not {spec['sets']}")
            state["runs"].setdefault(name, {**spec, "checkpoints": {}})
        return state
    host = machine_record() | {"lscpu_bf16_flags": lscpu_bf16_flags()}
    return {"benchmark": "convergence", "settings": fixed, "host": host, "commands": [], "probes": {}, "judge": {},
            "runs": {name: {**spec, "checkpoints": {}} for name, spec in runs.items()}, "diagnosis": {}}


def save(state: dict, args) -> None:
    """Write the JSON atomically (a kill mid-write leaves the previous file)."""
    from odmaug.atomic import atomic_write_json

    atomic_write_json(args.out, state)


def base_steps(args) -> int:
    """The baseline's steps at 1x: ``--base-steps`` or the recipe's ``train.steps``."""
    from odmaug.config import load_recipe

    return args.base_steps or load_recipe(args.recipe).train.steps


def train_and_evaluate(state: dict, args, the_plan: dict, launcher: str, reference_of) -> None:
    """Per multiple, per run: train to the planned steps, evaluate (unless stored with the same
    protocol), save. A run found past its target (killed while going further before this
    checkpoint was evaluated) cannot be evaluated there any more: that is said, and skipped."""
    for m in (f"{x:g}" for x in args.multiples):
        # ODM forms first: a study cut short still has the baseline-vs-candidate ODM comparison
        for name, run in sorted(state["runs"].items(), key=lambda item: item[1].get("form") != "odm"):
            if name not in args.runs:
                continue
            target = the_plan["steps"][name][m]
            entry = run["checkpoints"].get(m, {})
            if entry.get("evaluation", {}).get("protocol") == protocol(args) and entry.get("steps") == target:
                continue
            t0 = time.perf_counter()
            trained = launch.train_to(launcher, args.recipe, run["sets"], args.work / "runs", name, target,
                                      args.work / "train.log")
            if trained["step"] != target:
                print(f"  {name}: at step {trained['step']}, past {m}x's {target}: not evaluated at {m}x", flush=True)
                continue
            entry = {"multiple": float(m), "steps": target, "budget_s": float(m) * the_plan["budget_s_1x"],
                     **trained, "stage_wall_s": time.perf_counter() - t0}
            entry["evaluation"] = evaluate_checkpoint(Path(trained["run"]), name, m, reference_of(), args)
            run["run"], run["checkpoints"][m] = trained["run"], entry
            save(state, args)


def study(args) -> None:
    runs = run_names(args.configs)
    base_name = next(iter(runs)).replace("-dm", "-odm")
    args.base_steps = base_steps(args)
    args.work.mkdir(parents=True, exist_ok=True)
    state = load_state(args, runs)
    state["commands"].append({"argv": ["python", *sys.argv], "time": time.time(), "load_average": list(os.getloadavg())})
    launcher = probes.choose_launcher(args, state["probes"], runs[base_name], base_name)
    probes.probe_rounds(args, state["probes"], runs, base_name, launcher)
    the_plan = probes.plan(args, state["probes"], runs, base_name, args.base_steps)
    stored = state.setdefault("plan", {"baseline": base_name, "steps": {}})
    for name, steps in the_plan["steps"].items():  # an invocation with fewer multiples keeps the others
        stored["steps"].setdefault(name, {}).update(steps)
    stored["s_per_step"] = {n: state["probes"]["baseline_s_per_step"] * r for n, r in the_plan["ratios"].items()}
    save(state, args)
    probes.print_plan(the_plan, state["probes"])
    if args.probe_only:
        print(f"wrote {args.out} (probes and plan only)")
        return
    from convergence.judge import study_reference, trained_judge

    trained_judge(args.work, args.recipe, args.judge_epochs, args.threads)  # before the runs, as the study began
    cache: dict = {}

    def reference_of():  # built on first need: a study with nothing left to evaluate loads no data
        if "ref" not in cache:
            cache["ref"] = study_reference(args, state)
        return cache["ref"]

    train_and_evaluate(state, args, the_plan, launcher, reference_of)
    save(state, args)
    print_report(state)
    print(f"wrote {args.out}; figure {figure(state, args.out.with_name(args.out.stem + '_fid_vs_wall.png'))}")


def diagnose(args) -> None:
    """``--diagnose RUN``: the eps diagnosis of a run folder (or a run of this study by name),
    printed and stored under ``diagnosis`` in ``--out`` when that file exists."""
    from convergence.diagnose import eps_diagnosis, print_diagnosis
    from odmaug.data import load_table, load_uint8
    from odmaug.diffusion import load_generator

    run = launch.given_run(args.work, args.diagnose, "--diagnose")
    gen = load_generator(run, device="cpu")
    train = load_table(gen.recipe.data).split("train")
    images = load_uint8(train, gen.recipe.data.image_size, gen.recipe.data.crop_box)
    diag = eps_diagnosis(gen, images, train.labels, args.buckets, args.diagnose_per_bucket)
    print_diagnosis(run.name, diag)
    if args.out.exists():
        state = json.loads(args.out.read_text())
        state.setdefault("diagnosis", {}).setdefault(run.name, {})[str(diag["step"])] = diag
        save(state, args)
        print(f"stored in {args.out}")


def rejudge_all(args) -> None:
    """``--rejudge``: every stored evaluation whose sample sets are cached under ``--work``, judged
    again under today's protocol (see :func:`convergence.evaluate.rejudge`); the JSON rewritten."""
    from convergence.evaluate import rejudge
    from convergence.judge import study_reference

    if not args.out.exists():
        raise SystemExit(f"no study at {args.out}")
    state = json.loads(args.out.read_text())
    ref = study_reference(args, state)
    print(f"  judge: {json.dumps(state['judge']['far_cluster'])}", flush=True)
    for name, run in state["runs"].items():
        for m, entry in run["checkpoints"].items():
            if "evaluation" in entry and entry["evaluation"].get("protocol", {}).get("far_factor") is None:
                print(f"  {name} {m}x: {'rejudged' if rejudge(entry, ref, args) else 'samples not cached, kept'}", flush=True)
    save(state, args)
    print_report(state)


def sweep(args) -> None:
    """``--ema-sweep RUN``: every EMA of the run's last checkpoint judged, stored in ``--out``."""
    from convergence.ema_sweep import ema_sweep, print_sweep

    if not args.out.exists():
        raise SystemExit(f"no study at {args.out}: the sweep is judged by the study's judge")
    state = json.loads(args.out.read_text())
    print_sweep(ema_sweep(args, state))
    save(state, args)
    print(f"stored in {args.out}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report:
        if not args.out.exists():
            raise SystemExit(f"no study at {args.out}")
        state = json.loads(args.out.read_text())
        print_report(state)
        print(f"\nfigure: {figure(state, args.out.with_name(args.out.stem + '_fid_vs_wall.png'))}")
    elif args.diagnose:
        diagnose(args)
    elif args.ema_sweep:
        sweep(args)
    elif args.rejudge:
        rejudge_all(args)
    else:
        study(args)
