import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from odmaug.benchmark import composition_matched, summarise_arms, synthesis_counts
from odmaug.cli import app
from odmaug.config import load_recipe, recipe_from_dict
from odmaug.data import ImageTable
from odmaug.data.synthetic import draw_fundus
from odmaug.errors import OdmaugError

runner = CliRunner()


def test_synthesis_counts_cover_balancing_and_metrics(smoke_recipe_path):
    recipe = load_recipe(smoke_recipe_path, ["benchmark.metrics_per_grade=10"])
    assert synthesis_counts(recipe, np.array([50, 20, 5, 45, 12])) == [10, 30, 45, 10, 38]
    capped = load_recipe(smoke_recipe_path, ["benchmark.metrics_per_grade=0", "benchmark.max_synthetic_share=0.5"])
    # a share cap of 0.5 allows at most as many synthetic images as real ones
    assert synthesis_counts(capped, np.array([50, 20, 5, 45, 12])) == [0, 20, 5, 5, 12]


def test_summaries_and_paired_differences_match_hand_computation():
    def seeds(values):
        return {s: {"qwk": v, "accuracy": v / 2, "macro_f1": v, "balanced_accuracy": v, "mae": 1 - v,
                    "recall_grade_0": v, "recall_grade_1": None, "confusion": [[1, 0], [0, 1]]} for s, v in enumerate(values)}

    arms = {"real": {"seeds": seeds([0.5, 0.6, 0.7])}, "odm": {"seeds": seeds([0.6, 0.8, 0.7])}}
    paired = summarise_arms(arms, 2)
    assert arms["odm"]["summary"]["qwk"]["mean"] == pytest.approx(0.7)
    assert arms["odm"]["summary"]["qwk"]["std"] == pytest.approx(np.std([0.6, 0.8, 0.7], ddof=1))
    diff = paired["odm"]["vs_real"]["qwk"]
    assert diff["mean"] == pytest.approx(np.mean([0.1, 0.2, 0.0]))
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * np.std([0.1, 0.2, 0.0], ddof=1) / math.sqrt(3)
    assert diff["ci_low"] == pytest.approx(0.1 - half) and diff["ci_high"] == pytest.approx(0.1 + half)
    assert paired["odm"]["vs_real"]["recall_grade_1"]["n"] == 0  # missing values are not differences
    assert "real" not in paired


def test_composition_matched_keeps_the_real_grade_mix():
    labels = np.repeat([0, 1, 2], [10, 30, 30])
    table = ImageTable(pd.DataFrame({"path": [f"x{i}" for i in range(70)], "label": labels}), 3)
    matched = composition_matched(table, np.array([100, 50, 20]), seed=0)
    assert matched.counts().tolist() == [10, 5, 2]


def test_unknown_arm_is_rejected():
    from odmaug.commands.names import check_names

    with pytest.raises(OdmaugError, match="benchmark.arms: unknown arm 'gan'"):  # names meet the registry at the boundary
        check_names(recipe_from_dict({"benchmark": {"arms": ["real", "gan"]}}))
    recipe = check_names(recipe_from_dict({"benchmark": {"arms": ["real", "external:sg2=/data/sg2"]}}))
    assert recipe.benchmark.arms[1] == "external:sg2=/data/sg2"


def _external_folder(root: Path, per_grade: int = 6) -> Path:
    for grade in range(5):
        (root / str(grade)).mkdir(parents=True)
        for i in range(per_grade):
            Image.fromarray(draw_fundus(grade, 5, 16, 99, grade * 100 + i)).save(root / str(grade) / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~1-2 min on an idle 2-core machine; far longer when the cores are shared
def test_smoke_benchmark_end_to_end_and_resume(tmp_path, smoke_recipe_path):
    external = _external_folder(tmp_path / "stylegan")
    # --device auto, as users run it: every stage must resolve it (the domain extractor once did not).
    args = ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--device", "auto", "--set", "classifier.epochs=3",
            "--set", f"benchmark.arms=[real, oversample, dm, odm, 'external:sg={external}']"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    bench = next((tmp_path / "runs").glob("*-benchmark-smoke"))
    results = json.loads((bench / "results.json").read_text())

    assert list(results["arms"]) == ["real", "oversample", "dm", "odm", "external:sg"]
    for arm, data in results["arms"].items():
        for record in data["seeds"].values():
            for key in ("qwk", "accuracy", "macro_f1", "balanced_accuracy"):
                assert math.isfinite(record[key]), (arm, key)
    for arm in ("oversample", "dm", "odm"):  # balanced arms: every grade filled to the majority count
        counts = next(iter(results["arms"][arm]["training_counts"].values()))
        assert len(set(counts["total"])) == 1
    assert set(results["generators"]) == {"dm", "odm", "sg"}
    for gen in results["generators"].values():
        overall = gen["metrics"]["domain"]["overall"]
        assert math.isfinite(overall["fid"]) and 0 <= overall["precision"] <= 1
        assert len(gen["metrics"]["domain"]["per_grade"]) == 5
        assert -1 <= gen["fidelity"]["qwk"] <= 1
    assert any("inception" in note for note in results["notes"])  # no weights offline: said, not hidden

    report = (bench / "report" / "report.md").read_text()
    for arm in results["arms"]:
        assert f"| {arm} |" in report
    html = (bench / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4  # self-contained: figures embedded
    for figure in ("arms.png", "confusion.png", "fid-per-grade-domain.png", "samples.png"):
        assert (bench / "report" / "figures" / figure).stat().st_size > 1000
    table = result.output[result.output.index("Severity classifier per arm"):]
    assert "Δ QWK vs real" in table and all(arm in table for arm in results["arms"])
    # Seeds x test images bootstrap from the stored test predictions (issue 19).
    boot, n_test = results["bootstrap"], int(results["test_description"].split(" images")[0].split()[-1])
    assert (boot["n_images"], boot["n_seeds"], set(boot["arms"])) == (n_test, len(results["seeds"]), set(results["arms"]))
    d = boot["paired"]["odm"]["vs_real"]["qwk"]
    assert d["ci_low"] <= d["estimate"] <= d["ci_high"] and d["mde"] > 0
    assert d["estimate"] == pytest.approx(results["paired"]["odm"]["vs_real"]["qwk"]["mean"], abs=1e-9)
    assert f"bootstrap 1 seed × {n_test} images" in table and "MDE" in table  # headers wrap at 80 columns
    assert "difference [95% CI, seeds × images]" in report and f"1 seed × {n_test} images" in report

    # The store makes a second invocation reuse every expensive stage.
    plan = runner.invoke(app, ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"),
                               "--set", "classifier.epochs=3", "--dry-run"])
    assert plan.exit_code == 0, plan.output
    rows = [line for line in plan.output.splitlines() if "generator" in line or "synthesis" in line]
    assert rows and all("reuse" in line for line in rows)


def test_benchmark_without_test_split_is_a_clear_error(tmp_path, smoke_recipe_path):
    result = runner.invoke(app, ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path),
                                 "--set", "data.test_fraction=0", "--dry-run"])
    assert result.exit_code == 2
    assert "no test split" in result.output
