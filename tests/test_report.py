"""The benchmark report prints no spread that measures nothing, and says why (rebuilt from results alone)."""

from __future__ import annotations

import re

import pytest

from odmaug.benchmark import summarise_arms
from odmaug.benchmark.report import write_benchmark_report as write_report
from odmaug.benchmark.report.tables import arm_rows, detail_rows, generator_footnotes, generator_rows, paired_rows, per_grade_generator_rows

ZERO_SPREAD = re.compile(r"± 0\.0+\b|\[\+0\.000, \+0\.000\]|± [0-9.]+e-0[5-9]")  # "± 0.000", zero-width CI, "± 1.8e-07"


def _seeds(qwks: list[float], top_recall: float | None = None) -> dict[int, dict]:
    return {s: {"qwk": q, "accuracy": q / 2 + 0.3, "macro_f1": q, "balanced_accuracy": q, "mae": 1 - q,
                "recall_grade_0": 0.9, "recall_grade_1": q if top_recall is None else top_recall,
                "confusion": [[3, 1], [1, 3]]} for s, q in enumerate(qwks)}


def _kid_row(grade, n, mean, std, **extra) -> dict:
    return {"grade": grade, "n_real": n, "n_generated": n, "too_few": False, "fid": 1.5, "fid_small_set": True,
            "kid_mean": mean, "kid_std": std, "kid_subset_size": n, "precision": 0.9, "recall": 0.8, **extra}


def results(seed_values: dict[str, list[float]], top_recall: float | None = None) -> dict:
    arms = {arm: {"seeds": _seeds(values, top_recall)} for arm, values in seed_values.items()}
    paired = summarise_arms(arms, 2)
    # One row as written before kid_std_omitted existed (torch-fidelity's rounding-noise std), one as now.
    overall = _kid_row("all", 12, 2.1e-05, 1.8e-07)
    per_grade = [_kid_row(0, 6, 1.2e-05, None, kid_std_omitted="subset size ≥ set size, every subset is the whole set"),
                 _kid_row(1, 6, 3.4e-05, None, kid_std_omitted="subset size ≥ set size, every subset is the whole set")]
    generator = {"n_generated": 12, "metrics": {"domain": {"overall": overall, "per_grade": per_grade, "extractor": "domain:r"}},
                 "fidelity": {"qwk": 0.81, "accuracy": 0.7, "recall_per_grade": [0.8, 0.6], "confusion": [[4, 2], [1, 5]]}}
    return {"name": "t", "num_classes": 2, "seeds": list(range(len(next(iter(seed_values.values()))))),
            "test_description": "toy test split, 8 images [4, 4]", "arms": arms, "paired": paired,
            "generators": {"odm": generator}, "extractors": ["domain"], "grids": {}, "notes": [], "wall_time_s": 6.0}


def _text(rows: list[list[str]]) -> str:
    return "\n".join(" | ".join(r) for r in rows)


def test_equal_seeds_show_the_reason_not_a_zero_spread():
    # oversample trained the same as real on every seed; top-grade recall is 0.0 on every seed of every arm.
    res = results({"real": [0.5, 0.6, 0.7], "oversample": [0.5, 0.6, 0.7], "odm": [0.6, 0.8, 0.7]}, top_recall=0.0)
    arms = {r[0]: r for r in arm_rows(res)}
    assert arms["oversample"][4] == "+0.000 [–, –] (all 3 seeds equal)"
    assert arms["odm"][4].startswith("+0.100 [") and "seeds" not in arms["odm"][4]
    assert arms["odm"][1] == "0.700 ± 0.100" and arms["odm"][3] == "0.000 ± – (all 3 seeds equal)"
    assert "0.900 ± – (all 3 seeds equal)" in _text(detail_rows(res))
    paired = [r for r in paired_rows(res) if r[0] == "oversample" and r[2] == "qwk"]
    assert paired == [["oversample", "vs real", "qwk", "+0.000", "[–, –] (all 3 seeds equal)", "3", "–", "–", "–"]]
    assert not ZERO_SPREAD.search(_text(arm_rows(res) + detail_rows(res) + paired_rows(res)))


def test_one_seed_says_so_beside_every_figure():
    res = results({"real": [0.5], "odm": [0.7]})
    odm = {r[0]: r for r in arm_rows(res)}["odm"]
    assert odm[1] == "0.700 ± – (1 seed)" and odm[4] == "+0.200 [–, –] (1 seed)"
    assert all(r[4] == "[–, –] (1 seed)" and r[5] == "1" for r in paired_rows(res))


def test_kid_rows_print_no_rounding_noise_and_say_why():
    res = results({"real": [0.5, 0.6], "odm": [0.6, 0.9]})
    (row,) = generator_rows(res)
    assert row[3] == "0.0210 †" and row[6] == "12/12" and row[7] == "0.810 (n=12)"  # fidelity: every generated image
    assert generator_footnotes(res)[0] == "† KID ± omitted for odm/domain: subset size ≥ set size, every subset is the whole set."
    kids = [r[5] for r in per_grade_generator_rows(res)]
    assert kids == ["0.0120", "0.0340"]  # × 10³, significant digits: four decimals printed 0.0000


def test_written_report_carries_the_reasons(tmp_path):
    res = results({"real": [0.5, 0.6, 0.7], "oversample": [0.5, 0.6, 0.7], "odm": [0.6, 0.8, 0.7]}, top_recall=0.0)
    paths = write_report(res, tmp_path, "name: t\n", {"python": "3.11"})
    for doc in (paths["markdown"].read_text(), paths["html"].read_text()):
        assert not ZERO_SPREAD.search(doc)
        assert "(all 3 seeds equal)" in doc and "KID ± omitted for odm/domain" in doc
        assert "All metrics (mean ± std over 3 seed(s))" in doc
    assert (tmp_path / "figures" / "arms.png").stat().st_size > 1000  # equal seeds: no error bar, no crash


@pytest.mark.parametrize("values,reason", [([0.5], "1 seed"), ([0.5, 0.5], "both seeds equal")])
def test_summaries_from_older_results_json_are_judged_by_n_and_std(values, reason):
    res = results({"real": [0.4, 0.4], "odm": values})
    for summary in res["arms"]["odm"]["summary"].values():
        summary.pop("spread_omitted")  # results.json from before the field: equal seeds had std 0.0
        if summary["n"] > 1:
            summary.update(std=0.0, ci_low=summary["mean"], ci_high=summary["mean"])
    assert {r[0]: r for r in arm_rows(res)}["odm"][1] == f"0.500 ± – ({reason})"


def test_report_shows_each_translation_strength_choice(tmp_path):
    res = results({"real": [0.5, 0.6], "odm-translate": [0.6, 0.7]})
    res["translation"] = {"holdout": {"odm-translate": {
        "candidates": [0.5, 0.7], "seed": 0, "val_qwk": {"0.5": 0.41, "0.7": 0.45}, "chosen": 0.7,
        "rule": "best validation QWK of the first seed's classifier; ties: the larger strength"}}}
    doc = write_report(res, tmp_path, "name: t\n", {"python": "3.11"})["markdown"].read_text()
    assert "## Translation strength (chosen on validation, never on test)" in doc
    assert "| holdout | odm-translate | 0.5: 0.410, 0.7: 0.450 | 0.7 |" in doc
