"""The benchmark report's body, once for both renderings (``report.md`` and ``report.html``).

A body is a list of blocks: ``("h", level, text)``, ``("p", text)``, ``("table", header, rows)``,
``("list", items)``; rows come from :mod:`odmaug.benchmark.report.tables`.
"""

from __future__ import annotations

from typing import Any

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
    return (f"{seeds_only} “seeds × images”: paired hierarchical bootstrap ({boot['resamples']} resamples of "
            f"{boot['n_seeds']} seed(s), then of the {boot['n_images']} test images, the same draws for every arm), "
            "95% percentile interval. MDE: the smallest true difference detectable with 80% power at two-sided 5% "
            "on this many seeds and images, 2.80 × the bootstrap SE; a null result reads “no gain larger than the MDE”. "
            "Identical predictions differ by exactly 0 in every resample: “0 [0, 0] (identical predictions)”. "
            f"With few seeds (here {boot['n_seeds']}) its seed part is too narrow: resampling S values spreads as "
            "(S-1)/S of their variance, with no t correction; read it beside the seeds-only interval.")


def report_blocks(results: dict[str, Any]) -> list[tuple]:
    """The report's body once, for both renderings: ("h", level, text), ("p", text), ("table", header, rows), ("list", items)."""
    seeds = results.get("seeds") or []
    detail_header = ["arm", "QWK", "accuracy", "macro-F1", "balanced acc."] + [f"recall g{g}" for g in range(results["num_classes"])]
    blocks: list[tuple] = [
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
                         "FID marked * rests on fewer images than the small-set threshold and is biased upward; compare KID."),
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
