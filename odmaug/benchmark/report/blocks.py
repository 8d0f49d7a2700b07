"""The benchmark report's body, once for both renderings (``report.md`` and ``report.html``).

A body is a list of blocks: ``("h", level, text)``, ``("p", text)``, ``("table", header, rows)``,
``("list", items)``; rows come from :mod:`odmaug.benchmark.report.tables`.
"""

from __future__ import annotations

from typing import Any

from odmaug.benchmark.report.verdict import remedy_lines, verdict
from odmaug.metrics.generative_table import KID_SCALE_NOTE
from odmaug.benchmark.report.tables import (
    ARM_HEADER,
    GENERATOR_HEADER,
    PAIRED_HEADER,
    PER_GRADE_HEADER,
    TRANSLATION_HEADER,
    arm_rows,
    detail_rows,
    generator_footnotes,
    generator_rows,
    paired_rows,
    per_grade_generator_rows,
    translation_rows,
)


def bootstrap_note(results: dict[str, Any]) -> str:
    """What the two intervals count, with the seeds and images behind the bootstrap."""
    boot = results.get("bootstrap") or {}
    seeds_only = "“95% CI (seeds)”: t-interval over seeds, the test images held fixed."
    if "n_images" not in boot:
        return seeds_only + " " + boot.get("error", "No seeds × images bootstrap in these results.")
    df = "normal quantile (one seed: only the images vary)" if boot["n_seeds"] < 2 else f"t quantile on {boot['n_seeds'] - 1} df"
    return (f"{seeds_only} “seeds × images”: estimate ± {df} × SE, SE² = (seed spread)² / S + the test-set "
            f"variance every seed shares (a paired bootstrap of the {boot['n_images']} test images, {boot['resamples']} "
            "resamples, the same draws for every arm and seed); never narrower than the seeds-only interval. "
            "MDE: the smallest true difference detectable with 80% power at two-sided 5% on this many seeds and "
            "images, (t_{0.975} + t_{0.80}) × the same SE; a null result reads “no gain larger than the MDE”. "
            "A figure equal in both arms in every resample (say top-grade recall 0 in both) reads "
            "“0 [0, 0] (equal in every resample)”: no spread, so no MDE.")


def judge_blocks(results: dict[str, Any]) -> list[tuple]:
    """Who judged the domain figures and how well it grades real images, and any warning about it."""
    from odmaug.benchmark.judge import judge_text

    judge = results.get("judge")
    if not judge:
        return []
    return [("p", judge_text(judge))] + [("p", f"⚠ Warning: {line}") for line in judge.get("warnings", [])]


def report_blocks(results: dict[str, Any]) -> list[tuple]:
    """The report's body once, for both renderings: ("h", level, text), ("p", text), ("table", header, rows), ("list", items)."""
    seeds = results.get("seeds") or []
    detail_header = ["arm", "QWK", "accuracy", "macro-F1", "balanced acc."] + [f"recall g{g}" for g in range(results["num_classes"])]
    blocks: list[tuple] = [
        ("p", verdict(results)),
        *[("p", line) for line in remedy_lines(results)],  # the best cheap remedy against every generator arm
        ("p", f"Test split: {results.get('test_description', 'real test split')}; seeds {seeds}; "
              f"wall time {results.get('wall_time_s', 0) / 60:.1f} min."),
        ("h", 2, "Classifier per arm"), ("table", ARM_HEADER, arm_rows(results)),
        ("p", "“± – (reason)” and “[–, –] (reason)”: no spread is shown where it would measure nothing "
              "(one seed, or every seed giving the same value)."),
        ("h", 3, f"All metrics (mean ± std over {len(seeds)} seed(s))"), ("table", detail_header, detail_rows(results)),
    ]
    paired = paired_rows(results)
    if paired:
        blocks += [("h", 3, "Paired differences (same seeds)"), ("p", bootstrap_note(results)), ("table", PAIRED_HEADER, paired)]
    if results.get("generators"):
        blocks += [("h", 2, "Generators"),
                   ("p", "Overall: real training split vs a generated subset with the same grade mix. "
                         "FID marked * rests on fewer images than the small-set threshold and is biased upward; compare KID. "
                         + KID_SCALE_NOTE),
                   *judge_blocks(results),
                   ("table", GENERATOR_HEADER, generator_rows(results)),
                   *[("p", line.strip()) for line in generator_footnotes(results)],
                   ("h", 3, "Per grade"), ("table", PER_GRADE_HEADER, per_grade_generator_rows(results))]
    strengths = translation_rows(results)
    if strengths:
        blocks += [("h", 2, "Translation strength (chosen on validation, never on test)"),
                   ("table", TRANSLATION_HEADER, strengths)]
    if results.get("notes"):
        blocks += [("h", 2, "Notes"), ("list", results["notes"])]
    return blocks
