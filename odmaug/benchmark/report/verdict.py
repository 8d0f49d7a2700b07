"""The benchmark's verdict in one sentence, at the top of the report and at the end of the console.

The tables hold every interval, but a reader of the smoke run (1 seed, 23 test images) saw
intervals that exclude zero and took them for findings. The sentence states what the run can and
cannot say: at plumbing size (fewer than :data:`MIN_SEEDS` seeds or :data:`MIN_TEST_IMAGES` test
images, or the smoke recipe) that it is not evidence; otherwise which arms change QWK against
real-only training (the seeds × test images interval excludes 0) and the minimum detectable effect
(MDE) that bounds the arms that do not.

:func:`remedy_lines` follow it: the best cheap remedy (the non-generative arm with the best
validation QWK) and every generator arm against it on test, for QWK and top-grade recall.
"""

from __future__ import annotations

from typing import Any, Optional

MIN_SEEDS = 3
"""Below 3 seeds the seed spread has under 2 degrees of freedom: no interval over seeds means much."""
MIN_TEST_IMAGES = 100
"""Below ~100 test images a single image moves QWK by a few hundredths, and the top grade has a handful."""


def _qwk_vs_real(results: dict[str, Any], arm: str) -> Optional[dict[str, Any]]:
    return results.get("bootstrap", {}).get("paired", {}).get(arm, {}).get("vs_real", {}).get("qwk")


def _mde_text(diffs: dict[str, dict[str, Any]]) -> str:
    mdes = sorted(d["mde"] for d in diffs.values() if d.get("mde") is not None and not d.get("identical"))
    if not mdes:
        return "no MDE computed"
    span = f"{mdes[0]:.2f}" if round(mdes[0], 2) == round(mdes[-1], 2) else f"{mdes[0]:.2f}-{mdes[-1]:.2f}"
    return f"MDE {span} QWK"


def plumbing_reasons(results: dict[str, Any]) -> list[str]:
    """Why the run is too small to be evidence (empty: it is large enough to be read)."""
    seeds = len(results.get("seeds") or [])
    images = (results.get("bootstrap") or {}).get("n_images")
    reasons = []
    if seeds < MIN_SEEDS:
        reasons.append(f"{seeds} seed{'s' * (seeds != 1)}")
    if images is not None and images < MIN_TEST_IMAGES:
        reasons.append(f"{images} test images")
    if results.get("name") == "smoke":
        reasons.append("the smoke recipe")
    return reasons


def verdict(results: dict[str, Any]) -> str:
    """One sentence: the verdict on Δ QWK against real-only training, with its MDE."""
    diffs = {arm: d for arm in results.get("arms", {}) if arm != "real"
             if (d := _qwk_vs_real(results, arm)) and d.get("estimate") is not None}
    mde = _mde_text(diffs)
    reasons = plumbing_reasons(results)
    if reasons:
        return (f"Verdict: not evidence. This is a plumbing-size run ({', '.join(reasons)}; evidence needs at "
                f"least {MIN_SEEDS} seeds and {MIN_TEST_IMAGES} test images from a real recipe): at this size even "
                f"an interval that excludes 0 is not a finding ({mde}).")
    if not diffs:
        return "Verdict: none: these results hold no seeds × test images interval of Δ QWK against real."
    found = [(arm, d) for arm, d in diffs.items() if d.get("ci_low") is not None and not d.get("identical")
             and (d["ci_low"] > 0 or d["ci_high"] < 0)]
    if not found:
        return ("Verdict: no arm changes QWK detectably against real-only training: every 95% interval over "
                f"seeds × test images contains 0, so read it as “no change larger than the MDE” ({mde}), "
                "not as “no change”.")
    parts = [f"{arm} {d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" for arm, d in found]
    rest = "" if len(found) == len(diffs) else "; the other arms show no change larger than the MDE"
    return (f"Verdict: Δ QWK against real-only training excludes 0 for {', '.join(parts)} (95% intervals over "
            f"seeds × test images){rest} ({mde}).")


def remedy_lines(results: dict[str, Any]) -> list[str]:
    """The lines after the verdict: the best cheap remedy (chosen on validation) and every generator
    arm against it on test, Δ QWK and Δ top-grade recall with the seeds × images interval and MDE
    (results.json's ``cheap_remedy``, :mod:`odmaug.benchmark.cheap`); none for results without it."""
    from odmaug.benchmark.report.tables import boot_interval, boot_mde

    cheap = results.get("cheap_remedy")
    if not cheap:
        return []
    best = cheap.get("arm")
    if best is None:
        return [f"Best cheap remedy: none ({cheap.get('why', 'no non-generative arm')})."]
    val = cheap.get("val_qwk") or {}
    others = ", ".join(f"{arm} {q:.3f}" for arm, q in val.items() if arm != best and q is not None)
    tied = [arm for arm, q in val.items() if arm != best and q is not None and round(q, 3) == round(val[best], 3)]
    lines = [f"Best non-generative arm (real or a cheap remedy), chosen on validation (never test): {best}, "
             f"validation QWK {val[best]:.3f}" + (f" (others: {others})." if others else ".")]
    if tied:  # a choice among equals carries no information; say so rather than imply a winner
        lines.append(f"Tied on validation with {', '.join(tied)}: {best} is the first listed in benchmark.arms.")
    top = f"recall_grade_{results.get('num_classes', 0) - 1}"
    for arm, diffs in (cheap.get("vs_generators") or {}).items():
        qwk, recall = diffs.get("qwk"), diffs.get(top)
        lines.append(f"{arm} vs {best} on test: Δ QWK {boot_interval(qwk)}, MDE {boot_mde(qwk)}; Δ top-grade "
                     f"recall {boot_interval(recall)}, MDE {boot_mde(recall)} (95% intervals over seeds × test images).")
    if not cheap.get("vs_generators"):
        lines.append(f"No generator arm to compare with {best}.")
    elif cheap.get("why"):  # e.g. unreadable predictions: the comparisons have no interval
        lines.append(f"Comparisons without intervals: {cheap['why']}.")
    return lines
