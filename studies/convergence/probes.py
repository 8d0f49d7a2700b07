"""Equal wall time from step-time probes: which launcher trains faster, and each run's steps.

Equal wall time is set by COST RATIOS measured in isolation, not by clocks during the long runs
(other jobs on a shared host would then decide the step counts): every probe round times the
baseline (the first configuration's ODM form) and the other runs one after another with nothing
else of the study running; a run's cost ratio is the median over rounds of its seconds per step
divided by the baseline's in the same round. A run then trains ``multiple * base_steps / ratio``
steps; the baseline trains exactly ``multiple * base_steps`` (quickstart: 2,000 at 1x), and its
seconds per step (median over rounds) times that is the wall budget the checkpoint stands for.
Runs added in a later invocation are probed then, in new rounds that time the baseline again.
"""

from __future__ import annotations

import statistics

from convergence.launch import LAUNCHERS, probe


def rotated(items: list, k: int) -> list:
    """``items`` started at position ``k`` (round-robin order: no run always follows the same one)."""
    k %= max(len(items), 1)
    return items[k:] + items[:k]


def choose_launcher(args, probes: dict, baseline: dict, base_name: str) -> str:
    """The training launcher: the stored one (a resumed study keeps it), the one asked for, or the
    one whose baseline probe was faster (median over ``args.launcher_rounds`` rounds of both)."""
    stored = probes.get("launcher")
    if stored:
        if args.launcher not in ("auto", stored):
            raise SystemExit(f"this study's runs train with {stored}; --launcher {args.launcher} would mix launchers "
                             "(use another --out and --work for a new study)")
        return stored
    if args.launcher != "auto":
        probes["launcher"], probes["launcher_choice"] = args.launcher, "asked for (--launcher)"
        return args.launcher
    compared = probes.setdefault("launcher_probes", {name: [] for name in LAUNCHERS})
    for r in range(min(len(v) for v in compared.values()), args.launcher_rounds):
        for launcher in (name for name in rotated(list(LAUNCHERS), r) if len(compared[name]) <= r):
            folder = args.work / "probes" / "launchers" / f"round-{r}"
            compared[launcher].append(probe(launcher, args.recipe, baseline["sets"], folder,
                                            f"{base_name}-{launcher}", args.probe_warmup, args.probe_steps))
    medians = {name: statistics.median(p["s_per_step"] for p in compared[name]) for name in LAUNCHERS}
    probes["launcher_s_per_step"] = medians
    probes["launcher"] = min(medians, key=medians.get)
    probes["launcher_choice"] = "faster in the baseline probe (median s/step over rounds)"
    print("launchers: " + ", ".join(f"{k} {v:.3f} s/step ({1 / v:.2f} steps/s)" for k, v in medians.items())
          + f" -> {probes['launcher']}", flush=True)
    return probes["launcher"]


def probe_rounds(args, probes: dict, runs: dict, base_name: str, launcher: str) -> None:
    """Probe every run not yet probed: ``args.probe_rounds`` new rounds of the baseline and them
    (a first invocation: every run), appended to ``probes["rounds"]``."""
    rounds = probes.setdefault("rounds", [])
    missing = [name for name in runs if not any(name in r["s_per_step"] for r in rounds)]
    if not missing:
        return
    members = [base_name] + [name for name in missing if name != base_name]
    for k in range(args.probe_rounds):
        index = len(rounds)
        folder = args.work / "probes" / f"round-{index}"
        found = {name: probe(launcher, args.recipe, runs[name]["sets"], folder, name, args.probe_warmup,
                             args.probe_steps) for name in rotated(members, k)}
        rounds.append({"round": index, "s_per_step": {n: p["s_per_step"] for n, p in found.items()},
                       "probes": found})


def cost_ratios(probes: dict, runs: dict, base_name: str) -> dict[str, float]:
    """Per run: the median over rounds of s/step(run) / s/step(baseline) in the same round."""
    out = {}
    for name in runs:
        ratios = [r["s_per_step"][name] / r["s_per_step"][base_name] for r in probes["rounds"] if name in r["s_per_step"]]
        out[name] = 1.0 if name == base_name else statistics.median(ratios)
    return out


def plan(args, probes: dict, runs: dict, base_name: str, base_steps: int) -> dict:
    """Steps per run and multiple, and the wall budget; stored in ``probes`` (the budget and the
    baseline's s/step are fixed by the first invocation, so later ones extend the same study)."""
    ratios = cost_ratios(probes, runs, base_name)
    if "baseline_s_per_step" not in probes:
        probes["baseline_s_per_step"] = statistics.median(r["s_per_step"][base_name] for r in probes["rounds"])
        probes["budget_s_1x"] = base_steps * probes["baseline_s_per_step"]
    probes["cost_ratio"] = ratios
    steps = {name: {f"{m:g}": max(1, round(m * base_steps / ratios[name])) for m in args.multiples} for name in runs}
    return {"steps": steps, "budget_s_1x": probes["budget_s_1x"], "ratios": ratios}


def print_plan(the_plan: dict, probes: dict) -> None:
    """The planned steps and expected wall seconds per run and checkpoint (from the probes)."""
    budget, base = the_plan["budget_s_1x"], probes["baseline_s_per_step"]
    print(f"\nplan: 1x = the baseline's {budget / base:.0f} steps x {base:.3f} s/step = {budget:.0f} s "
          f"({budget / 60:.1f} min) of training per run", flush=True)
    for name, by_multiple in the_plan["steps"].items():
        s_per_step = base * the_plan["ratios"][name]
        cells = ", ".join(f"{m}x: {s} steps (~{s * s_per_step / 60:.0f} min)" for m, s in by_multiple.items())
        print(f"  {name:<22} cost ratio {the_plan['ratios'][name]:.3f}  {cells}", flush=True)
