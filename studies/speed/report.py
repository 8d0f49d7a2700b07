"""The figures ``generator_speed.py`` derives from its timings (targets and their bounds, paired
time ratios, the ODM/DM step cost) and the tables it prints.
"""

from __future__ import annotations

import statistics

# (label, odmaug case(s), peer case(s), required ratio of peer time / odmaug time); of several cases
# on a side, each round takes the fastest. odmaug's cases are its default (precision auto, eager) and
# its opt-in compiled settings (train.compile, sample.compile).
ODMAUG_TRAIN = ("odmaug-train-fast", "odmaug-train-compiled")
ODMAUG_SAMPLE = ("odmaug-sample-fast", "odmaug-sample-compiled")
PEER_EAGER_TRAIN = ("peer-train-fp32", "peer-train-fp32-dropout", "peer-train-bf16-autocast-cl", "peer-train-bf16-cl")
TARGETS = [
    ("training >= 3x diffusers fp32 eager", ODMAUG_TRAIN, ("peer-train-fp32",), 3.0),
    ("training >= 2x diffusers best eager", ODMAUG_TRAIN, PEER_EAGER_TRAIN, 2.0),
    ("training >= 1x diffusers compiled (reference, not an issue target)", ODMAUG_TRAIN, ("peer-train-compiled",), 1.0),
    ("sampling >= 5x diffusers fp32 eager", ODMAUG_SAMPLE, ("peer-sample-fp32",), 5.0),
    ("sampling >= 1.5x diffusers compiled", ODMAUG_SAMPLE, ("peer-sample-compiled",), 1.5),
]
RATIO_PAIRS = (
    ("odmaug-train-odm", "odmaug-train-fast"), ("peer-train-fp32", "odmaug-train-fast"),
    ("peer-train-fp32-dropout", "odmaug-train-fast"), ("peer-train-compiled", "odmaug-train-fast"),
    ("peer-train-compiled", "odmaug-train-compiled"), ("peer-train-fp32-dropout", "peer-train-fp32"),
    ("peer-train-compiled", "peer-train-fp32-dropout"), ("odmaug-train-fast-64px", "odmaug-train-fast"),
    ("odmaug-train-fp32", "odmaug-train-fast"), ("odmaug-sample-fp32", "odmaug-sample-fast"),
    ("peer-train-fp32", "odmaug-train-fp32"), ("odmaug-train-fast", "odmaug-train-compiled"),
    ("odmaug-sample-fast", "odmaug-sample-compiled"), ("peer-sample-fp32", "odmaug-sample-fp32"),
    ("peer-train-bf16-cl", "peer-train-fp32"), ("peer-train-bf16-autocast-cl", "peer-train-fp32"),
    ("peer-sample-bf16-cl", "peer-sample-fp32"), ("peer-sample-compiled", "peer-sample-fp32"),
)


class Rounds:
    """The per-round times of the timed cases, and each case's time per training or denoising step."""

    def __init__(self, cases: dict, per_round: list[dict]) -> None:
        self.cases, self.per_round = cases, per_round

    def unit_time(self, r: dict, name: str) -> float:
        """Seconds per training step or per denoising step of ``name`` in round ``r`` (its median if not timed there)."""
        case = self.cases[name]
        sec = r[name] if name in r else statistics.median(case.times)
        return sec / case.sampling_steps

    def fastest(self, r: dict, names) -> float:
        return min(self.unit_time(r, n) for n in names)


def targets(rounds: Rounds, results: dict, ceilings: dict, native_bf16: bool) -> list[dict]:
    """Peer time / odmaug time (= throughput ratio odmaug / peer) per target, paired within rounds.

    bound: the ratio odmaug would reach running its FLOPs at 100% of the matmul ceiling of the
    precision its fast path computes in (bf16 with native bf16 units, else fp32), against the
    peer's time of the same round: no kernel tuning can beat it at an equal network and work.
    """
    ceiling_name = "bf16" if native_bf16 else "fp32"
    out = []
    for label, ours_all, peers, required in TARGETS:
        have = [p for p in peers if p in rounds.cases]
        ours = [o for o in ours_all if o in rounds.cases]
        if not ours or not have:
            out.append({"target": label, "required": required, "ratio": None, "status": "not measured"})
            continue
        ratios = [rounds.fastest(r, have) / rounds.fastest(r, ours) for r in rounds.per_round]
        best = min(have, key=lambda p: results[p]["seconds_per_unit"])
        best_ours = min(ours, key=lambda o: results[o]["seconds_per_unit"])
        flops_per_step = results[best_ours]["flops_per_unit"] / (results[best_ours].get("sampling_steps_per_unit") or 1)
        floor_seconds = flops_per_step / (ceilings[ceiling_name] * 1e9)
        bound = statistics.median(rounds.fastest(r, have) / floor_seconds for r in rounds.per_round)
        # the same bound at the fp32 ceiling (what an AVX2-only host, with fp32 as its fast path, is held to)
        floor_fp32 = flops_per_step / (ceilings["fp32"] * 1e9)
        bound_fp32 = statistics.median(rounds.fastest(r, have) / floor_fp32 for r in rounds.per_round)
        ratio = statistics.median(ratios)
        out.append({"target": label, "odmaug_cases": ours, "best_odmaug_case": best_ours, "peer_cases": have,
                    "best_peer_case": best, "required": required, "ratio": ratio, "per_round": ratios,
                    "status": "met" if ratio >= required else "missed",
                    "shortfall_factor": None if ratio >= required else required / ratio,
                    "bound_at_ceiling": bound, "bound_ceiling": ceiling_name, "bound_at_fp32_ceiling": bound_fp32,
                    "ratio_min": min(ratios), "ratio_max": max(ratios),
                    "reachable_at_equal_flops": bound >= required})
    return out


def time_ratios(rounds: Rounds) -> tuple[dict, dict]:
    """(median, spread) of the per-round time ratio of every measured pair in ``RATIO_PAIRS``."""
    ratios, spread = {}, {}
    for a, b in RATIO_PAIRS:
        if a in rounds.cases and b in rounds.cases:
            each = [rounds.unit_time(r, a) / rounds.unit_time(r, b) for r in rounds.per_round]
            ratios[f"{a} / {b} (time)"] = statistics.median(each)
            spread[f"{a} / {b} (time)"] = {"min": min(each), "max": max(each), "per_round": each}
    return ratios, spread


def odm_step_cost(cases: dict, per_round: list[dict], device) -> dict | None:
    """The ODM/DM training-step time ratio measured in this run: ``odmaug-train-odm`` / ``odmaug-train-fast``.

    Both are odmaug's 8.95 M default network at 32 px, batch ``--batch``, in the precision ``auto``
    picks on this device (bf16 autocast with native bf16), channels_last, identical optimizer code;
    DM is ``DiffusionLoss`` with gamma = 0, ODM the ``DiffusionConfig()`` ordinal defaults. Paired
    within the timing rounds (median, min, max over rounds).
    """
    dm, odm = cases.get("odmaug-train-fast"), cases.get("odmaug-train-odm")
    if dm is None or odm is None or not per_round:
        return None
    ratios = [r["odmaug-train-odm"] / r["odmaug-train-fast"] for r in per_round]
    return {"source": "measured in this run (paired within rounds)", "dm_case": "odmaug-train-fast",
            "odm_case": "odmaug-train-odm", "precision": dm.precision, "device": str(device),
            "ordinal": odm.info.get("ordinal"), "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "per_round": ratios, "rounds": len(ratios),
            "flops_ratio": odm.info["flops_per_unit"] / dm.info["flops_per_unit"],
            "note": "one counted ODM step's FLOPs vs one DM step's (the number of ordinal evaluations is random "
                    "per step); generator_cost.py measures the quickstart-size network"}


# ----------------------------------------------------------------------------- main


def _table(title: str, columns, left=()):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right", no_wrap=col == "case")
    return table


def print_report(report: dict, args) -> None:
    """The profiles, the sampling scaling, the cases, the notes and guards, and the targets last."""
    from rich.console import Console

    console = Console(width=190)
    counts = report["parameters"]
    console.print(f"parameters: odmaug {counts['odmaug']:,}, diffusers peer {counts['diffusers']:,}")
    _print_profiles_and_scaling(console, report)
    _print_cases(console, report)
    _print_notes(console, report)
    _print_guards(console, report)
    for note in report["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {args.out}")
    _print_targets(console, report)


def _print_profiles_and_scaling(console, report: dict) -> None:
    for name, ops in report["profiles_fast_path"].items():
        table = _table(f"torch.profiler top ops (self CPU), one {'training step' if 'train' in name else 'denoising step'}"
                       f" of {name}", ("op", "self ms", "share", "calls"), left=("op",))
        for op in ops:
            table.add_row(op["op"], f"{op['self_cpu_ms']:.1f}", f"{100 * op['share']:.1f}%", str(op["calls"]))
        console.print(table)
    if report["sampling_scaling"]:
        table = _table("odmaug sampling (generate, fast path, batch 64, guidance 2) vs n",
                       ("n", "DDIM steps", "seconds", "s/image", "img-steps/s", "per-image time vs first n"))
        for row in report["sampling_scaling"]:
            table.add_row(str(row["n"]), str(row["steps"]), f"{row['seconds']:.1f}", f"{row['seconds_per_image']:.3f}",
                          f"{row['image_steps_per_second']:.1f}", f"{row['per_image_time_vs_smallest_n']:.2f}")
        console.print(table)


def _print_cases(console, report: dict) -> None:
    ceilings = report["matmul_ceiling_gflops"]
    table = _table(f"generator speed, {report['machine']['cpu_model']}, {report['machine']['torch_threads']} threads, "
                   f"batch {report['batch']}, {report['rounds']} rounds, {report['date']}",
                   ("case", "setting", "params", "s/unit", "img/s | img-steps/s", "GFLOP/unit", "GFLOP/s",
                    "% bf16 ceil", "% fp32 ceil", "peak RSS MiB"), left=("case", "setting"))
    for name, r in report["cases"].items():
        speed = r.get("images_per_second", r.get("image_steps_per_second"))
        unit_flops = r["flops_per_unit"] / (r.get("sampling_steps_per_unit") or 1)
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        setting = r["setting"] + (f" [{r['image_size']} px]" if r["image_size"] != 32 else "")
        table.add_row(name, setting, f"{r['parameters'] / 1e6:.2f} M", f"{r['seconds_per_unit']:.3f}", f"{speed:.1f}",
                      f"{unit_flops / 1e9:.1f}", f"{r['gflops_per_second']:.0f}",
                      f"{100 * r['gflops_per_second'] / ceilings['bf16']:.0f}%",
                      f"{100 * r['gflops_per_second'] / ceilings['fp32']:.0f}%", rss)
    console.print(table)
    console.print(f"matmul ceilings measured in this run: fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 {ceilings['bf16']:.0f} "
                  "GFLOP/s. s/unit: one training step (batch images), or one guided DDIM denoising step of the batch "
                  "(2 x batch network passes). GFLOP/s of the compiled case uses the eager peer's FLOPs."
                  + ("" if report["native_bf16"] else " No native bf16 here: the bf16 'ceiling' is an emulated "
                     "path, so fp32 cases exceed it many times over."))


def _print_notes(console, report: dict) -> None:
    for name, r in report["cases"].items():
        if "compile_seconds_warm_cache" in r:
            cold = r.get("compile_seconds_cold_cache")
            console.print(f"{name}: compile time {cold:.0f} s cold (fresh process, empty inductor cache), "
                          f"{r['compile_seconds_warm_cache']:.0f} s warm" if cold is not None else
                          f"{name}: compile time {r['compile_seconds_warm_cache']:.0f} s")
    for key, value in report["other_time_ratios"].items():
        spread = report.get("other_time_ratio_spread", {}).get(key)
        console.print(f"time ratio {key} = {value:.2f}"
                      + (f" (rounds {spread['min']:.2f}..{spread['max']:.2f})" if spread else ""))
    cap = report.get("bf16_capability", {})
    console.print(f"bf16 capability: lscpu {cap.get('lscpu_flags')}, odmaug cpu_bf16_flags {cap.get('odmaug_cpu_bf16_flags')}, "
                  f"fast_bf16(cpu) {cap.get('odmaug_fast_bf16_cpu')}, torch CPU capability {cap.get('torch_cpu_capability')}"
                  + (f", CUDA {cap['cuda_device']} bf16 {cap['cuda_bf16_supported']}" if "cuda_device" in cap else ""))
    for name in report.get("compile_timed_out", []):
        console.print(f"[bold red]COMPILE TIMEOUT[/]: {name} (over {report['compile_timeout_seconds']:.0f} s), not timed")


def _flag(bad: bool) -> str:
    return "[bold red]FLAGGED[/]" if bad else "ok"


def _print_guards(console, report: dict) -> None:
    q = report["quality_guard"] or None
    if q is None:
        console.print("quality guard: skipped (CPU-only)")
    else:
        console.print(f"quality guard (eps relative error vs fp32, same weights and inputs, tolerance {q['tolerance']:.0e}): "
                      f"odmaug fast path ({q['odmaug_fast_precision']}) {q['odmaug_eps_rel_error']:.2e} "
                      f"(max per image {q['odmaug_eps_rel_error_max_per_image']:.2e}) {_flag(q['flagged'])}; "
                      f"odmaug bf16 autocast {q['odmaug_bf16_eps_rel_error']:.2e} (max per image "
                      f"{q['odmaug_bf16_eps_rel_error_max_per_image']:.2e}) {_flag(q['bf16_flagged'])}; "
                      f"peer pure bf16 {q['peer_pure_bf16_eps_rel_error']:.2e}"
                      + (f"; odmaug compiled vs eager {q['odmaug_compiled_eps_rel_error']:.2e} "
                         f"{_flag(q['compiled_flagged'])}" if "odmaug_compiled_eps_rel_error" in q else "")
                      + (f" (samples {q['odmaug_compiled_sample_rel_error']:.2e})"
                         if "odmaug_compiled_sample_rel_error" in q else "")
                      + (f"; odmaug fast vs fp32 samples after {q['sample_steps']} DDIM steps {q['odmaug_sample_rel_error']:.2e}"
                         if "odmaug_sample_rel_error" in q else ""))
    lg = (q or {}).get("training_loss")
    if lg:
        parts = ", ".join(f"{name} {r['mean_last_half']:.4f} ({r['difference_to_fp32']:+.4f}) {_flag(r['flagged'])}"
                          for name, r in lg["settings"].items())
        console.print(f"quality guard (training loss, {lg['network']}, mean of steps {lg['steps'] // 2 + 1}-{lg['steps']}, "
                      f"difference to fp32; noise = standard error {lg['noise_sem_fp32']:.4f}): {parts}")
    odm = report["odm_step_cost"]
    if odm:
        console.print(f"ODM/DM training-step time, measured here ({odm['device']}, {odm['precision']}, {odm['rounds']} "
                      f"paired rounds): {odm['ratio_median']:.2f} (rounds {odm['ratio_min']:.2f}..{odm['ratio_max']:.2f}); "
                      f"FLOPs ratio {odm['flops_ratio']:.2f}")
    else:
        console.print("ODM/DM step time: not measured (needs odmaug-train-fast and odmaug-train-odm)")


def _print_targets(console, report: dict) -> None:
    table = _table("targets (odmaug / peer throughput, fastest case of each side per round, median; bound = "
                   "the ratio if odmaug ran its FLOPs at 100% of this run's matmul ceiling)",
                   ("target", "odmaug / peer", "rounds min..max", "required", "status", "bound at 100% ceiling",
                    "bound at fp32 (AVX2) ceiling", "odmaug case", "peer case"),
                   left=("target", "odmaug case", "peer case"))
    for t in report["targets"]:
        if t["ratio"] is None:
            table.add_row(t["target"], "-", "", f"{t['required']:.1f}x", t["status"], "", "", "", "")
            continue
        status = "[green]met[/]" if t["status"] == "met" else f"[red]missed (needs {t['shortfall_factor']:.2f}x more)[/]"
        table.add_row(t["target"], f"{t['ratio']:.2f}x", f"{t['ratio_min']:.2f}..{t['ratio_max']:.2f}",
                      f"{t['required']:.1f}x", status, f"{t['bound_at_ceiling']:.2f}x ({t['bound_ceiling']})",
                      f"{t['bound_at_fp32_ceiling']:.2f}x", t["best_odmaug_case"], t["best_peer_case"])
    console.print(table)
