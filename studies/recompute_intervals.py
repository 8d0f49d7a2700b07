"""Recompute a results.json's seeds x images intervals with the t-interval of odmaug >= issue 24, when
the classifiers' predictions are no longer at hand (only results.json was kept).

results.json files written before issue 24 hold a two-stage percentile bootstrap (resample seeds,
then test images), too narrow with 3 seeds. The new interval (odmaug.metrics.bootstrap) is
estimate ± t_{S-1} SE with SE² = SE_seeds² + SE_images², SE_images² the test-set variance every
seed shares. Without the per-image predictions that shared part cannot be computed; this script
bounds it from above by the old bootstrap's image part, V_old - (S-1)/S * SE_seeds² (the two-stage
bootstrap spreads the seed mean by (S-1)/S of SE_seeds²), so the intervals it writes are at least
as wide as the exact ones (and never narrower than the seeds-only t-interval). Rerunning the
benchmark gives the exact figures.

    python studies/recompute_intervals.py docs/results/quickstart_benchmark_amx.json \
        --out docs/results/quickstart_benchmark_amx_recomputed.json --report docs/results/quickstart_benchmark_amx_recomputed_report.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scipy import stats


def recompute(summary: dict, seed_values: list[float], confidence: float, power: float) -> dict:
    """One figure's new summary from its old bootstrap summary and its per-seed values."""
    s = len(seed_values)
    if summary.get("se") is None or s < 2 or summary.get("identical"):
        return summary
    mean = sum(seed_values) / s
    se_seeds = math.sqrt(sum((v - mean) ** 2 for v in seed_values) / (s - 1) / s)
    image_part = max(summary["se"] ** 2 - (s - 1) / s * se_seeds ** 2, 0.0)
    se = math.hypot(se_seeds, math.sqrt(image_part))
    q, q_power = stats.t.ppf(0.5 + confidence / 2, s - 1), stats.t.ppf(power, s - 1)
    return summary | {"ci_low": summary["estimate"] - q * se, "ci_high": summary["estimate"] + q * se, "se": se,
                      "se_seeds": se_seeds, "se_images": math.sqrt(image_part), "df": s - 1, "mde": (q + q_power) * se}


def _seed_values(results: dict, arm: str, ref: str | None, metric: str) -> list[float]:
    seeds = [str(s) for s in results["bootstrap"]["seeds"]]
    own = [results["arms"][arm]["seeds"][s][metric] for s in seeds]
    if ref is None:
        return own
    return [a - b for a, b in zip(own, (results["arms"][ref]["seeds"][s][metric] for s in seeds))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, help="also write the report (markdown) of the recomputed results")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    boot = results["bootstrap"]
    conf, power = boot["confidence"], boot["power"]
    for arm, by_metric in boot["arms"].items():
        for metric, summary in by_metric.items():
            by_metric[metric] = recompute(summary, _seed_values(results, arm, None, metric), conf, power)
    for arm, pairs in boot["paired"].items():
        for ref, by_metric in pairs.items():
            for metric, summary in by_metric.items():
                values = _seed_values(results, arm, ref.removeprefix("vs_"), metric)
                by_metric[metric] = recompute(summary, values, conf, power)
    boot["method"] = "t-seeds-images, recomputed from a two-stage bootstrap (image part bounded from above)"
    args.out.write_text(json.dumps(results, indent=2))
    if args.report:
        from odmaug.benchmark.report.blocks import report_blocks
        from odmaug.benchmark.report.document import _markdown  # the report's own layout, without figures

        title = f"odmaug benchmark: {results['name']} (intervals recomputed from {args.results.name})"
        args.report.write_text(_markdown(report_blocks(results), title, [], args.report.parent,
                                         f"# the recipe: see {args.results.name}'s report", {}))
    print(f"wrote {args.out}" + (f" and {args.report}" if args.report else ""))


if __name__ == "__main__":
    main()
