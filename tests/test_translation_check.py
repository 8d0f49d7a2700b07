"""``odmaug translate-check``: grade translation judged by a real-data classifier (issue 18, item 4).

On the smoke generator (2 training steps) and an untrained tiny classifier: the figures are
meaningless, the plumbing is what is checked (fields, counts, training-split sources, the strip
figure, determinism, refusals).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from odmaug.commands.translation_check import CHECK_FILE, STRIPS_FILE, draw_sources, parse_strengths, translation_check
from odmaug.classify import ClassifierMeta, create_model, save_classifier
from odmaug.cli import app
from odmaug.data import load_table
from odmaug.errors import OdmaugError
from odmaug.runs import open_run

SOURCES, STRENGTHS = 4, "0.5,0.3"


def _classifier(folder, num_classes: int = 5):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("test_resnet", num_classes=num_classes, image_size=16)
    save_classifier(model, ClassifierMeta(model="test_resnet", num_classes=num_classes, image_size=16), folder)
    return folder


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    return _classifier(tmp_path_factory.mktemp("clf") / "classifier")


@pytest.fixture(scope="module")
def checked(smoke_generator_step2, judge, tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "check"
    result = CliRunner().invoke(app, ["translate-check", "--run", str(smoke_generator_step2), "--classifier",
                                      str(judge), "--sources", str(SOURCES), "--strengths", STRENGTHS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_report_fields_and_counts(checked):
    out, printed = checked
    report = json.loads((out / CHECK_FILE).read_text())
    grades, n_out = report["grades"], SOURCES * 5
    assert grades == [0, 1, 2, 3, 4] and report["strengths"] == [0.3, 0.5] and report["settings"]["sampler"] == "ddim"
    assert report["sources"]["n"] == SOURCES and sum(report["sources"]["per_grade"].values()) == SOURCES
    assert [r["noise_seed"] for r in report["sources"]["rows"]] == list(range(SOURCES))
    assert 0 <= report["sources"]["classifier_agrees"] <= SOURCES
    for row in report["by_strength"]:
        assert row["sources"] == SOURCES and row["outputs"] == n_out
        for kind in ("predicted", "expected"):
            path = row[kind]
            assert path["sources"] == SOURCES and len(path["rho"]) == SOURCES and 0 <= path["rho_n"] <= SOURCES
            assert 0 <= path["flat"] <= path["monotone"] <= SOURCES
        assert np.array(row["predicted_grades"]).shape == (SOURCES, 5)
        assert row["distance"]["n"] == n_out and row["distance"]["mean"] > 0
        assert row["near_copies"]["outputs"] == n_out
    assert report["distance_rho"]["n"] == 2 * n_out
    near = report["near_copies"]
    assert near["outputs"] == 2 * n_out and near["quantile"] == 0.01 and near["test_images"] > 0
    assert report["strips"] == {"file": STRIPS_FILE, "strength": 0.5, "sources": SOURCES, "grades": grades}
    for words in ("rho, predicted", "monotone, expected", "near copies", str(out / CHECK_FILE)):
        assert words in " ".join(printed.split()), printed


def test_sources_come_only_from_the_training_split(checked, smoke_generator_step2):
    out, _ = checked
    table = load_table(open_run(smoke_generator_step2).recipe().data)
    split_of = dict(zip(table.frame["path"], table.frame["split"]))
    label_of = dict(zip(table.frame["path"], table.labels))
    rows = json.loads((out / CHECK_FILE).read_text())["sources"]["rows"]
    assert {split_of[r["path"]] for r in rows} == {"train"}
    assert all(label_of[r["path"]] == r["grade"] for r in rows)
    assert len({r["path"] for r in rows}) == SOURCES


def test_strip_figure_has_one_row_per_source(checked):
    out, _ = checked
    with Image.open(out / STRIPS_FILE) as img:
        width, height = img.size
    assert width > 0 and height > 0 and sorted(p.name for p in out.iterdir()) == sorted([CHECK_FILE, STRIPS_FILE])


def test_same_seed_same_figures(checked, smoke_generator_step2, judge, tmp_path):
    out, _ = checked
    again = translation_check(smoke_generator_step2, judge, tmp_path / "again", SOURCES, STRENGTHS, seed=0)
    assert again.report == json.loads((out / CHECK_FILE).read_text())
    other = translation_check(smoke_generator_step2, judge, tmp_path / "other", SOURCES, [0.5], grades="0,4", seed=1)
    assert other.report["grades"] == [0, 4] and other.report["sources"] != again.report["sources"]


def test_stratified_seeded_source_draw():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1)
    rows = draw_sources(labels, 7, seed=3)
    assert np.bincount(labels[rows], minlength=3).tolist() == [3, 3, 1]  # grade 2 runs out, the others share
    assert list(labels[rows]) == sorted(labels[rows]) and len(set(rows)) == 7
    assert np.array_equal(rows, draw_sources(labels, 7, seed=3))
    assert not np.array_equal(draw_sources(labels, 10, seed=3), draw_sources(labels, 10, seed=4))
    with pytest.raises(OdmaugError, match="1..14"):
        draw_sources(labels, 15, seed=0)
    assert parse_strengths("0.8, 0.4") == [0.4, 0.8]
    for bad in ("0", "1.5", "x", "0.4,-1", "0.4,0.4"):
        with pytest.raises(OdmaugError, match="strength"):
            parse_strengths(bad)


@pytest.mark.parametrize("case,extra,expected", [
    ("missing run", ["--run", "{tmp}/nope"], "run folder not found"),
    ("strength", ["--strengths", "0.5,1.2"], "--strengths must each be in (0, 1] (got 1.2)"),
    ("too many sources", ["--sources", "5000"], "--sources must be in 1.."),
    ("grade count", ["--classifier", "{three}"], "predicts 3 grades but the generator makes 5"),
    ("one grade", ["--grades", "2"], "at least 2 grades"),
])
def test_bad_input_is_one_error_line(case, extra, expected, smoke_generator_step2, judge, tmp_path):
    three = _classifier(tmp_path / "three", num_classes=3)
    args = ["translate-check", "--run", str(smoke_generator_step2), "--classifier", str(judge),
            "--out", str(tmp_path / "check"), "--sources", "2", "--strengths", "0.5"]
    args += [a.format(tmp=tmp_path, three=three) for a in extra]  # later options win
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.stderr
    assert not (tmp_path / "check").exists()


def test_grade_path_counts_flat_strips_and_defined_rhos():
    from odmaug.metrics.translation import grade_path

    out = grade_path(np.array([[0, 1, 2], [3, 3, 3], [2, 1, 0]]), np.arange(3))
    assert out["monotone"] == 2 and out["flat"] == 1 and out["rho_n"] == 2  # the flat strip has no rho


def test_an_earlier_check_is_kept_unless_forced(checked, smoke_generator_step2, judge):
    out, _ = checked
    before = (out / CHECK_FILE).read_bytes()
    with pytest.raises(OdmaugError, match="already holds a translation check"):
        translation_check(smoke_generator_step2, judge, out, SOURCES, [0.5], seed=3)
    assert (out / CHECK_FILE).read_bytes() == before
