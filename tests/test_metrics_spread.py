"""No figure looks more certain than it is: degenerate spreads print as "–" with their reason.

KID over subsets that are always the whole set, one KID subset, one seed, seeds that all agree: each
once printed a tiny or zero ± (e.g. "± 1.8e-07") that read as precision.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch_fidelity.metric_kid import kid_features_to_metric
from typer.testing import CliRunner

from odmaug.classify.report import seeds_table
from odmaug.cli import app
from odmaug.config import MetricsConfig
from odmaug.metrics import summarize_runs
from odmaug.metrics.generative import kid_from_features, metrics_from_features
from odmaug.metrics.generative_table import generative_table
from odmaug.metrics.features import REGISTRY

WHOLE = "subset size ≥ set size, every subset is the whole set"
PM_NUMBER = re.compile(r"±\s*-?\d")  # a printed "± <number>"


def rendered(table) -> str:
    console = Console(width=200, record=True, force_terminal=False)
    console.print(table)
    return console.export_text()


def torch_fidelity_kid(real, generated, subsets, size, seed):
    out = kid_features_to_metric(torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(generated, dtype=torch.float32),
                                 kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


def test_kid_whole_set_subsets_carry_no_std_and_the_mean_is_unchanged():
    rng = np.random.default_rng(0)
    real, generated = rng.normal(size=(12, 8)), rng.normal(0.3, 1.0, size=(12, 8))
    out = kid_from_features(real, generated, subsets=50, subset_size=1000, seed=3)
    mean, std = torch_fidelity_kid(real, generated, 50, 12, 3)
    assert std < 1e-5 * abs(mean)  # torch-fidelity's "spread": float32 rounding of one and the same value
    assert out["kid_mean"] == mean and out["kid_subset_size"] == 12
    assert out["kid_std"] is None and out["kid_std_omitted"] == WHOLE


@pytest.mark.parametrize("n_real,n_gen,subsets,why", [
    (10, 30, 20, "every real subset is the whole real set"),  # only the generated side varies: understated
    (30, 10, 20, "every generated subset is the whole generated set"),
    (30, 30, 1, "1 subset"),  # torch-fidelity's std of one value is 0.0
])
def test_kid_std_omitted_when_one_side_or_the_count_cannot_vary(n_real, n_gen, subsets, why):
    rng = np.random.default_rng(1)
    out = kid_from_features(rng.normal(size=(n_real, 8)), rng.normal(size=(n_gen, 8)), subsets, 1000, 0)
    assert out["kid_std"] is None and why in out["kid_std_omitted"]


def test_kid_std_kept_when_both_sides_vary():
    rng = np.random.default_rng(2)
    real, generated = rng.normal(size=(60, 8)), rng.normal(size=(50, 8))
    out = kid_from_features(real, generated, subsets=20, subset_size=20, seed=0)
    assert (out["kid_mean"], out["kid_std"]) == torch_fidelity_kid(real, generated, 20, 20, 0)
    assert out["kid_std_omitted"] is None and out["kid_std"] > 1e-3 * abs(out["kid_mean"])


def test_generative_table_prints_no_plus_minus_and_says_why():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 6)
    cfg = MetricsConfig(min_per_grade=4, nearest_k=2, kid_subsets=10, kid_subset_size=1000)
    result = metrics_from_features(rng.normal(size=(12, 8)), labels, rng.normal(size=(12, 8)), labels, 2, cfg, 0, "toy")
    rows = [result["overall"], *result["per_grade"]]
    assert all(r["kid_std"] is None and r["kid_std_omitted"] == WHOLE for r in rows)
    text = rendered(generative_table({**result, "real": {"name": "r"}, "generated": {"name": "g"}, "image_size": 8,
                                      "feature_dim": 8, "settings": cfg.model_dump()}))
    assert not PM_NUMBER.search(text), text
    assert f"KID ± omitted for all, 0, 1: {WHOLE}" in " ".join(text.split())


def test_summaries_over_equal_or_single_seeds_have_no_spread():
    equal = summarize_runs([0.5, 0.5, 0.5])
    assert equal["mean"] == 0.5 and equal["std"] is None and equal["ci_low"] is None and equal["ci_high"] is None
    assert equal["spread_omitted"] == "all 3 seeds equal"
    assert summarize_runs([0.0, 0.0])["spread_omitted"] == "both seeds equal"  # paired differences of equal runs
    assert summarize_runs([0.4])["spread_omitted"] == "1 seed"
    varied = summarize_runs([0.4, 0.5])
    assert varied["std"] > 0 and varied["spread_omitted"] is None


def test_seeds_table_shows_the_reason_not_a_zero_width_interval():
    summary = {"summary": {"test": {k: summarize_runs([0.5, 0.5, 0.5]) for k in
                                    ("qwk", "accuracy", "macro_f1", "balanced_accuracy", "mae")}}}
    text = rendered(seeds_table(summary, "test", "t"))
    assert "0.500 .. 0.500" not in text and "0.000" not in text
    assert text.count("– (all 3 seeds equal)") == 5


# --------------------------------------------------------------------------------------------------
# ``odmaug metrics`` end to end: the printed table and the JSON


@pytest.fixture(scope="module")
def domain_spec(tmp_path_factory) -> str:
    spec, _ = REGISTRY.get("domain").example(tmp_path_factory.mktemp("domain"))
    return spec


def _folder(root: Path, per_grade: int, seed: int) -> Path:
    from PIL import Image

    from odmaug.data.synthetic import draw_fundus

    for grade in range(5):
        (root / str(grade)).mkdir(parents=True)
        for i in range(per_grade):
            Image.fromarray(draw_fundus(grade, 5, 24, seed, grade * 100 + i)).save(root / str(grade) / f"{i}.png")
    return root


@pytest.mark.parametrize("subset_size", [1000, 4])
def test_cli_kid_on_tiny_sets(tmp_path, smoke_recipe_path, domain_spec, subset_size):
    real, fake = _folder(tmp_path / "real", 8, 0), _folder(tmp_path / "fake", 8, 1)
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, [
        "metrics", "--real", str(real), "--generated", str(fake), "-e", domain_spec, "-r", str(smoke_recipe_path),
        "--set", f"metrics.kid_subset_size={subset_size}", "--no-cache", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(out.read_text())["results"][0]["overall"], *json.loads(out.read_text())["results"][0]["per_grade"]]
    table = result.output[:result.output.index("wrote")]
    words = " ".join(table.split())  # the caption wraps at the terminal's width
    if subset_size == 1000:  # 8 and 40 images per set: every subset is the whole set
        assert all(r["kid_std"] is None and r["kid_std_omitted"] == WHOLE for r in rows)
        assert not PM_NUMBER.search(table) and f"KID ± omitted for all, 0, 1, 2, 3, 4: {WHOLE}" in words
    else:  # 4 of 8: the subsets differ, the std stays torch-fidelity's and is printed
        assert all(r["kid_std_omitted"] is None and r["kid_std"] > 1e-3 * abs(r["kid_mean"]) for r in rows)
        assert len(PM_NUMBER.findall(table)) == 6 and "omitted" not in table
