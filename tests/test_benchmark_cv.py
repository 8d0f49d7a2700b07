"""``benchmark.protocol: cv``: per-fold generators that never see their fold's test part, pooled results."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from odmaug.benchmark.generators import TRAIN_IMAGES
from odmaug.cli import app
from odmaug.metrics.classification import classification_metrics

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_cv_benchmark_trains_per_fold_without_leakage_and_pools(tmp_path, smoke_recipe_path):
    args = ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--set", "benchmark.protocol=cv", "--set", "benchmark.cv.folds=3", "--set", "benchmark.arms=[real, odm]",
            "--set", "benchmark.seeds=[0, 1]", "--set", "classifier.epochs=2", "--set", "benchmark.metrics_per_grade=4"]
    dry = runner.invoke(app, args + ["--dry-run", "--no-estimate"])
    assert dry.exit_code == 0, dry.output
    assert "fold" in dry.output and dry.output.count("generator") >= 3  # one ODM generator per fold

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    bench = next((tmp_path / "runs").glob("*-benchmark-smoke"))
    results = json.loads((bench / "results.json").read_text())
    assert results["protocol"] == "cv" and results["bootstrap"]["folds"] == 3

    # No image of a fold's test part is in that fold's generator training set.
    generators = {k: Path(v) for k, v in results["generator_runs"].items()}
    assert sorted(generators) == ["fold0-odm", "fold1-odm", "fold2-odm"]
    tested = []
    for fold in range(3):
        dataset = pd.read_csv(bench / "datasets" / f"fold{fold}-real-seed0.csv")
        test_paths = set(dataset.loc[dataset["split"] == "test", "path"])
        trained = set(pd.read_csv(generators[f"fold{fold}-odm"] / TRAIN_IMAGES)["path"])
        assert trained and test_paths and not (trained & test_paths)
        assert trained == set(dataset.loc[dataset["split"] == "train", "path"])  # the fold's training part
        tested += sorted(test_paths)
    assert len(tested) == len(set(tested)) == 112  # every smoke image tested exactly once

    # Per-seed figures are those of the pooled predictions (recomputed here from the stored files).
    for arm, data in results["arms"].items():
        for seed, record in data["seeds"].items():
            frames = []
            for fold in range(3):
                predictions = pd.read_csv(Path(data["classifiers"][str(fold)][seed]) / "predictions.csv")
                frames.append(predictions[predictions["split"] == "test"])
            pooled = pd.concat(frames)
            expected = classification_metrics(pooled["label"], pooled["predicted"], 5)
            assert record["qwk"] == pytest.approx(expected["qwk"]) or (math.isnan(record["qwk"]) and math.isnan(expected["qwk"]))
            assert record["accuracy"] == pytest.approx(expected["accuracy"])
    boot = results["bootstrap"]
    assert (boot["n_images"], boot["n_seeds"]) == (112, 2)
    assert "3-fold cross-validation" in results["test_description"]
    assert any("fold 0's generators" in note for note in results["notes"])
    assert (bench / "report" / "report.md").is_file()


def test_fold_stratified_bootstrap_keeps_each_fold_size():
    from odmaug.metrics.bootstrap import _image_counts

    strata = np.repeat([0, 1, 2], [5, 7, 9])
    counts = _image_counts(np.random.default_rng(0), 200, len(strata), strata)
    for fold, size in enumerate((5, 7, 9)):
        assert np.all(counts[:, strata == fold].sum(1) == size)


def test_gpu_verdict_script_usage_and_skip_without_cuda(tmp_path):
    import subprocess
    import sys

    import torch

    script = Path(__file__).resolve().parents[1] / "studies" / "gpu_verdict.sh"
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would run the whole benchmark")
    skipped = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert skipped.returncode == 0 and "no CUDA device: skipped" in skipped.stdout


@pytest.mark.parametrize("overrides, warned", [
    (["benchmark.cv.folds=3"], True),
    (["benchmark.cv.folds=3", "benchmark.protocol=cv"], False),
    ([], False),
])
def test_cv_settings_without_the_cv_protocol_are_named_not_silently_ignored(smoke_recipe_path, monkeypatch,
                                                                            overrides, warned):
    from odmaug.benchmark import protocol
    from odmaug.config import load_recipe
    from odmaug.data import load_table

    said = []
    monkeypatch.setattr(protocol, "warn", said.append)
    recipe = load_recipe(smoke_recipe_path, overrides)
    protocol.benchmark_splits(recipe, load_table(recipe.data))
    assert any("benchmark.protocol is holdout" in line for line in said) == warned
