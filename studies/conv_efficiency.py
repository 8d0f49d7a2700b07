"""How close odmaug's convolutions run to the matmul ceiling, layer shape by layer shape (issue 8).

Usage::

    python studies/conv_efficiency.py            # ~1 min on 2 cores

Profiles (``torch.profiler`` with shapes) one training step and one guided DDIM denoising step of
odmaug's generator at the size of ``generator_speed.py`` (8.95 M parameters, 32 px, batch 32, the
default precision of this machine), groups the convolution forward and backward calls by shape and
stride, counts their exact FLOPs (backward: weight gradient, plus input gradient where autograd
asks for it) and reports GFLOP/s against the matmul ceiling of the compute precision measured in
the same run (bf16 on CPUs with native bf16, else fp32), plus the share of the step spent in
convolutions. If convolutions already run near the ceiling, only the rest of the step (GroupNorm,
SiLU, attention, dropout, optimizer) is left to optimise. Writes
``studies/results/conv_efficiency.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from _common import RESULTS_DIR, best_ceilings, machine_record, matmul_ceilings
from speed.cases import Case

RESULTS = RESULTS_DIR / "conv_efficiency.json"
CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward")  # the CPU forward and backward kernels


def conv_flops(event) -> tuple[str, int]:
    """(shape label, FLOPs) of one ``CONV_OPS`` profiler event (its argument order is per op)."""
    args = event.concrete_inputs
    if event.name == "aten::convolution_backward":
        grad_out, x, w = event.input_shapes[:3]
        stride, groups, mask = args[4], args[9], args[10]
        passes = int(mask[0]) + int(mask[1])  # input gradient (if needed) + weight gradient
        kind = "backward"
    else:
        x, w = event.input_shapes[:2]
        stride, groups = args[4], args[6]
        ho = (x[2] + 2 * args[3][0] - w[2]) // stride[0] + 1
        grad_out, passes, kind = [x[0], w[0], ho, ho], 1, "forward"
    b, cout, ho, wo = grad_out
    cin, kh, kw = w[1], w[2], w[3]
    flops = 2 * b * cout * ho * wo * cin * kh * kw * passes // groups
    label = f"{kind:8s} {x[1]:>3}->{cout:<3} k{kh} s{stride[0]} {x[2]}px"
    return label, flops


def profile_case(case: Case, ceiling: float) -> dict:
    """Per-shape convolution GFLOP/s and % of ``ceiling`` in one unit of ``case``."""
    case.work()  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        case.work()
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    groups: dict[str, dict] = defaultdict(lambda: {"calls": 0, "flops": 0, "self_ms": 0.0})
    for event in prof.events():
        if event.name in CONV_OPS:
            label, flops = conv_flops(event)
            g = groups[label]
            g["calls"] += 1
            g["flops"] += flops
            g["self_ms"] += event.self_cpu_time_total / 1e3
    rows = []
    for label, g in sorted(groups.items(), key=lambda kv: -kv[1]["self_ms"]):
        gflops = g["flops"] / (g["self_ms"] / 1e3) / 1e9
        rows.append({"shape": label, **g, "gflops_per_second": gflops, "fraction_of_ceiling": gflops / ceiling})
    conv_ms = sum(r["self_ms"] for r in rows)
    conv_gflops = sum(r["flops"] for r in rows) / (conv_ms / 1e3) / 1e9
    return {"case": case.name, "setting": case.setting_text, "units": case.sampling_steps,
            "step_self_ms": total_us / 1e3, "conv_self_ms": conv_ms, "conv_share_of_step": conv_ms * 1e3 / total_us,
            "conv_gflops_per_second": conv_gflops, "conv_fraction_of_ceiling": conv_gflops / ceiling, "shapes": rows}


def main() -> None:
    from odmaug.precision import cpu_bf16_flags

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = "bf16" if cpu_bf16_flags() else "fp32"
    ceilings = matmul_ceilings()
    cases = [Case("odmaug-train-fast", 32, 1), Case("odmaug-sample-fast", 32, 1)]
    ceilings = best_ceilings(ceilings, matmul_ceilings())
    results = [profile_case(case, ceilings[precision]) for case in cases]
    report = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine_record(), "ceiling_precision": precision,
              "matmul_ceiling_gflops": ceilings, "cases": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    for r in results:
        table = Table(title=f"{r['case']} ({r['setting']}): convolutions {r['conv_self_ms']:.0f} of "
                            f"{r['step_self_ms']:.0f} ms ({100 * r['conv_share_of_step']:.0f}%), "
                            f"{r['conv_gflops_per_second']:.0f} GFLOP/s = {100 * r['conv_fraction_of_ceiling']:.0f}% "
                            f"of the {precision} ceiling", title_justify="left")
        for col in ("convolution", "calls", "ms", "GFLOP/s", f"% of {precision} ceiling"):
            table.add_column(col, justify="left" if col == "convolution" else "right")
        for row in r["shapes"][:14]:
            table.add_row(row["shape"], str(row["calls"]), f"{row['self_ms']:.1f}", f"{row['gflops_per_second']:.0f}",
                          f"{100 * row['fraction_of_ceiling']:.0f}%")
        console.print(table)
    console.print(f"matmul ceilings measured in this run: fp32 {ceilings['fp32']:.0f}, bf16 {ceilings['bf16']:.0f} GFLOP/s "
                  f"({report['date']}, {report['machine']['cpu_model']}, {args.threads} threads); wrote {args.out}")


if __name__ == "__main__":
    main()
