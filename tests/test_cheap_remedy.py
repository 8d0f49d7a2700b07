"""The best cheap remedy against every generator arm (issue 28): chosen on validation, never test;
the paired test differences of QWK and top-grade recall checked against scikit-learn on small
fabricated predictions; the lines at the top of the report."""

from __future__ import annotations

import json
import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, recall_score

from odmaug.benchmark.arm_specs import parse_arm
from odmaug.benchmark.cheap import best_cheap_arm, cheap_remedy_record, record_val_qwk, validation_qwk
from odmaug.benchmark.report.tables import boot_interval, boot_mde
from odmaug.benchmark.report.verdict import remedy_lines
from odmaug.benchmark.results import Pass, _classification
from odmaug.metrics.bootstrap import confusion_metric, paired_bootstrap
from odmaug.metrics.classification import classification_metrics
from test_classify_train import make_recipe

C, N, SEEDS = 5, 60, (0, 1, 2)
# arm -> (validation QWK per seed, share of test images predicted right): focal wins on validation,
# corn on test, so a choice by test would name corn
ARMS = {"real": ([0.60, 0.62, 0.61], 0.55), "focal": ([0.80, 0.79, 0.81], 0.60), "corn": ([0.70, 0.72, 0.71], 0.85),
        "odm": ([0.90, 0.90, 0.90], 0.70), "odm+corn": ([0.50, 0.50, 0.50], 0.75)}
LABELS = np.repeat(np.arange(C), N // C)


def _predictions(arm: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{arm}-{seed}".encode()))
    right = rng.random(N) < ARMS[arm][1]
    return np.where(right, LABELS, np.clip(LABELS + rng.choice([-1, 1], N), 0, C - 1))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """arm -> seed -> classifier record (dir with predictions.csv and metrics.json, test metrics)."""
    root = tmp_path_factory.mktemp("store")
    classifiers = {}
    for arm, (val, _) in ARMS.items():
        for seed in SEEDS:
            folder = root / f"{arm}-{seed}"
            folder.mkdir()
            pred = _predictions(arm, seed)
            pd.DataFrame({"path": [f"t{i}.png" for i in range(N)], "split": "test", "label": LABELS,
                          "predicted": pred}).to_csv(folder / "predictions.csv", index=False)
            (folder / "metrics.json").write_text(json.dumps({"val": {"qwk": val[seed]}}))
            classifiers.setdefault(arm, {})[seed] = {"dir": str(folder), "counts": None,
                                                      "test": classification_metrics(LABELS, pred, C)}
    return classifiers


def test_choice_is_by_validation_never_test(store):
    arms = [parse_arm(a) for a in ARMS]
    val = validation_qwk(arms, [store])
    assert list(val) == ["real", "focal", "corn"]  # the generator arms do not compete
    assert val["focal"] == pytest.approx(0.80) and best_cheap_arm(val) == "focal"
    assert best_cheap_arm({"a": 0.5, "b": 0.5, "c": None}) == "a" and best_cheap_arm({"a": None}) is None
    assert record_val_qwk({"val": {"qwk": 0.3}, "dir": "/nowhere"}) == 0.3  # the record's own figure first
    assert record_val_qwk({"dir": "/nowhere"}) is None


def test_generator_arms_against_the_remedy_match_sklearn(store):
    recipe = make_recipe("x.csv")
    plan = SimpleNamespace(arms=[parse_arm(a) for a in ARMS])
    passes = [Pass(plan, SimpleNamespace(fold=None), {}, store)]
    arms, bootstrap, cheap = _classification(recipe, passes)
    assert cheap["arm"] == "focal" and set(cheap["vs_generators"]) == {"odm", "odm+corn"}
    top = f"recall_grade_{C - 1}"
    for arm in ("odm", "odm+corn"):
        qwk = np.mean([cohen_kappa_score(LABELS, _predictions(arm, s), weights="quadratic")
                       - cohen_kappa_score(LABELS, _predictions("focal", s), weights="quadratic") for s in SEEDS])
        recall = np.mean([recall_score(LABELS, _predictions(arm, s), labels=[C - 1], average=None)[0]
                          - recall_score(LABELS, _predictions("focal", s), labels=[C - 1], average=None)[0] for s in SEEDS])
        got = cheap["vs_generators"][arm]
        assert got["qwk"]["estimate"] == pytest.approx(qwk) and got[top]["estimate"] == pytest.approx(recall)
        # the same interval and MDE as a direct paired bootstrap of the two arms (same resamples)
        direct = paired_bootstrap({arm: np.stack([_predictions(arm, s) for s in SEEDS]),
                                   "focal": np.stack([_predictions("focal", s) for s in SEEDS])}, LABELS, C,
                                  {"qwk": confusion_metric("qwk"), top: confusion_metric("top_recall")},
                                  refs=("focal",), seed=recipe.seed)["paired"][arm]["vs_focal"]
        for metric in ("qwk", top):
            for key in ("ci_low", "ci_high", "mde"):
                assert got[metric][key] == pytest.approx(direct[metric][key]), (arm, metric, key)
    # adding the remedy as a reference leaves the differences against real as they were
    assert bootstrap["paired"]["odm"]["vs_real"]["qwk"]["estimate"] == pytest.approx(np.mean(
        [cohen_kappa_score(LABELS, _predictions("odm", s), weights="quadratic")
         - cohen_kappa_score(LABELS, _predictions("real", s), weights="quadratic") for s in SEEDS]))


def test_report_opens_with_the_remedy_lines(store, tmp_path):
    from odmaug.benchmark.report import write_benchmark_report
    from odmaug.benchmark.results import summarise_arms

    recipe = make_recipe("x.csv")
    plan = SimpleNamespace(arms=[parse_arm(a) for a in ARMS])
    arms, bootstrap, cheap = _classification(recipe, [Pass(plan, SimpleNamespace(fold=None), {}, store)])
    results = {"name": "t", "num_classes": C, "seeds": list(SEEDS), "test_description": "toy", "arms": arms,
               "paired": summarise_arms(arms, C), "bootstrap": bootstrap, "cheap_remedy": cheap, "generators": {},
               "extractors": [], "grids": {}, "notes": [], "wall_time_s": 1.0}
    lines = remedy_lines(results)
    assert lines[0] == ("Best non-generative arm (real or a cheap remedy), chosen on validation (never test): focal, validation QWK 0.800 "
                        "(others: real 0.610, corn 0.710).")
    odm = cheap["vs_generators"]["odm"]
    assert lines[1] == (f"odm vs focal on test: Δ QWK {boot_interval(odm['qwk'])}, MDE {boot_mde(odm['qwk'])}; "
                        f"Δ top-grade recall {boot_interval(odm['recall_grade_4'])}, MDE {boot_mde(odm['recall_grade_4'])} "
                        "(95% intervals over seeds × test images).")
    assert lines[2].startswith("odm+corn vs focal on test: Δ QWK ") and len(lines) == 3
    markdown = write_benchmark_report(results, tmp_path, "name: t\n", {})["markdown"].read_text().splitlines()
    body = [line for line in markdown if line.strip()][:5]  # title, verdict, then the remedy lines
    assert body[0].startswith("# ") and body[1].startswith("Verdict:") and body[2:5] == lines


def test_remedy_lines_without_a_comparison():
    assert remedy_lines({}) == []  # results.json from before the comparison existed
    none = {"arm": None, "why": "no non-generative arm with a validation QWK", "val_qwk": {}, "vs_generators": {}}
    assert remedy_lines({"cheap_remedy": none}) == ["Best cheap remedy: none (no non-generative arm with a validation QWK)."]
    record = cheap_remedy_record([parse_arm("real"), parse_arm("focal")], {"real": 0.5, "focal": 0.6}, "focal", {}, C)
    assert record["why"] == "no generator arm"
    tied = cheap_remedy_record([parse_arm("real"), parse_arm("corn")], {"real": 0.0, "corn": 0.0}, "real", {}, C)
    assert best_cheap_arm(tied["val_qwk"]) == "real"  # ties: the first listed, and the lines say so
    assert remedy_lines({"num_classes": C, "cheap_remedy": tied})[1] == (
        "Tied on validation with corn: real is the first listed in benchmark.arms.")
    assert remedy_lines({"num_classes": C, "cheap_remedy": record})[-1] == "No generator arm to compare with focal."
