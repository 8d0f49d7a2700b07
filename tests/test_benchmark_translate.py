"""Benchmark translation arms (``odm-translate``, ``dm-translate``; issue 18 item 3): sources from the
pass's training split only, the strength chosen on validation, the generator shared with the
from-noise arm; and the ``benchmark.filter`` lever (issue 19 item 3)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from odmaug.augment.from_real import FromReal, source_pools, translation_sample
from odmaug.benchmark import Splits, make_plan, parse_arm, synthesis_folder
from odmaug.benchmark.arms import BY_TRANSLATION, ODM
from odmaug.benchmark.selection import best_strength
from odmaug.benchmark.synthesis_stage import FILTER_MAX_FACTOR, synthetic_sets, top_up
from odmaug.cli import app
from odmaug.config import SampleConfig, load_recipe
from odmaug.data import load_table
from odmaug.errors import OdmaugError

runner = CliRunner()


def test_best_val_qwk_wins_and_ties_go_to_the_larger_strength():
    assert best_strength({0.5: 0.30, 0.7: 0.40}) == 0.7
    assert best_strength({0.5: 0.45, 0.7: 0.40}) == 0.5
    assert best_strength({0.3: 0.40, 0.5: 0.40, 0.7: 0.20}) == 0.5  # tie: the larger of the best
    assert best_strength({0.5: math.nan, 0.7: -0.1}) == 0.7  # a NaN QWK is the worst
    assert best_strength({0.6: 0.1}) == 0.6
    with pytest.raises(ValueError):
        best_strength({})


def test_filter_top_up_asks_for_the_shortfall_over_the_acceptance_rate():
    need = {0: 4, 1: 8, 2: 10}
    # grade 1 kept 6 of 8: 2 short at a 3/4 rate -> 3 more; grade 2 kept 1 of 10: rate floored at 1/4, capped
    assert top_up(need, dict(need), np.array([4, 6, 1])) == {0: 4, 1: 11, 2: FILTER_MAX_FACTOR * 10}
    assert top_up(need, dict(need), np.array([4, 8, 10])) is None  # nothing short
    at_cap = {g: FILTER_MAX_FACTOR * n for g, n in need.items()}
    assert top_up(need, at_cap, np.array([0, 0, 0])) is None  # short, but at the cap: left to balancing


def test_translation_arms_share_the_generator_and_key_their_folders(tmp_path, smoke_recipe_path):
    arm = parse_arm("odm-translate")
    assert arm.kind.generator is ODM and arm.kind.synthesis == BY_TRANSLATION
    assert arm.synthetic_name == "odm-translate" and parse_arm("dm-translate").synthetic_name == "dm-translate"
    from odmaug.commands.names import check_names

    with pytest.raises(OdmaugError, match="unknown arm 'odm-translate:x'"):
        check_names(load_recipe(smoke_recipe_path, ["benchmark.arms=[real, 'odm-translate:x']"]))
    with pytest.raises(OdmaugError, match=r"benchmark\.translate\.strengths\.1: must be in \(0, 1\] \(got 1\.5\)"):
        load_recipe(smoke_recipe_path, ["benchmark.translate.strengths=[0.5, 1.5]"])

    recipe = load_recipe(smoke_recipe_path, ["benchmark.arms=[real, odm, odm-translate]",
                                             "benchmark.translate.strengths=[0.8, 0.5]"])
    plan = make_plan(recipe, tmp_path / "store", Splits.of(load_table(recipe.data)))
    assert list(plan.generators) == ["odm"]  # one ODM generator for both arms
    sets = synthetic_sets(plan, recipe)
    assert [s.key for s in sets] == ["odm", "odm-translate@0.5", "odm-translate@0.8"]
    folders = {s.key: plan.synthesis[s.key] for s in sets}
    assert len({f.parent for f in folders.values()}) == 1 and len(set(folders.values())) == 3  # side by side
    assert folders["odm"] == synthesis_folder(plan.generators["odm"], recipe)  # from-noise key unchanged
    other = synthesis_folder(plan.generators["odm"], recipe, FromReal(0.5, "2,3"))
    assert other != folders["odm-translate@0.5"] and other.name.startswith("translated-step")
    # The dry-run plan shows the selection's cost: one first-seed classifier per candidate strength.
    names = [s.name for s in plan.stages if s.kind == "classifier"]
    assert names[:2] == ["odm-translate seed 0 strength 0.5", "odm-translate seed 0 strength 0.8"]
    single = load_recipe(smoke_recipe_path, ["benchmark.arms=[real, odm-translate]", "benchmark.translate.strengths=[0.6]"])
    plan = make_plan(single, tmp_path / "store", Splits.of(load_table(single.data)))
    assert not any("strength" in s.name for s in plan.stages if s.kind == "classifier")  # one candidate: no selection
    assert [s.kind for s in plan.stages].count("synthesis") == 1


def test_sources_come_from_the_table_passed_in(smoke_recipe_path, monkeypatch):
    import odmaug.augment.from_real as from_real

    recipe = load_recipe(smoke_recipe_path)
    train = load_table(recipe.data).split("train")
    part = type(train)(train.frame.iloc[::2], train.num_classes, train.name, train.data_dir)  # e.g. a fold's part
    monkeypatch.setattr(from_real, "load_table", lambda cfg: pytest.fail("sources reloaded from recipe.data"))
    pools = source_pools(recipe, None, [4], FromReal(0.5, "auto", train=part), SampleConfig(sampler="ddim"), 16)
    assert set(pools.table.paths) == set(part.paths) and len(pools.pools[4]) == int(part.counts()[3])
    assert translation_sample(SampleConfig(sampler="dpmpp-2m")).sampler == "ddim"


def test_filter_classifier_is_planned_before_synthesis(tmp_path, smoke_recipe_path):
    recipe = load_recipe(smoke_recipe_path, ["benchmark.arms=[real, odm]", "benchmark.filter.max_grade_error=0"])
    plan = make_plan(recipe, tmp_path / "store", Splits.of(load_table(recipe.data)))
    kinds = [(s.kind, s.name) for s in plan.stages]
    assert kinds.index(("classifier", "real seed 0 (filter)")) < kinds.index(("synthesis", "odm"))
    assert load_recipe(smoke_recipe_path).benchmark.filter is None  # off by default


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~1-2 min on an idle 2-core machine
def test_translation_arm_smoke_then_filter(tmp_path, smoke_recipe_path):
    args = ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--set", "benchmark.translate.strengths=[0.5,0.8]", "--set", "classifier.epochs=2"]
    result = runner.invoke(app, args + ["--set", "benchmark.arms=[real,odm,odm-translate]"])
    assert result.exit_code == 0, result.output
    [bench] = (tmp_path / "runs").glob("*-benchmark-smoke")
    results = json.loads((bench / "results.json").read_text())
    assert list(results["arms"]) == ["real", "odm", "odm-translate"]

    # The strength: one of the candidates, the argmax of the recorded val QWKs, said in the log.
    choice = results["translation"]["holdout"]["odm-translate"]
    assert choice["candidates"] == [0.5, 0.8] and choice["chosen"] in (0.5, 0.8)
    assert choice["chosen"] == best_strength({float(s): q for s, q in choice["val_qwk"].items()})
    assert "» strength odm-translate: val QWK" in result.output

    # One ODM generator, shared: the translated folders sit in it, beside the from-noise one.
    store = tmp_path / "runs" / "store"
    [generator] = store.glob("generator-*")
    assert results["generator_runs"] == {"odm": str(generator)}
    chosen = Path(choice["synthesis"][f"{choice['chosen']:g}"])
    assert chosen.parent == generator and len(list(generator.glob("translated-step*"))) == 2

    # Every translated training row starts from a training-split image, never a val or test one.
    dataset = pd.read_csv(bench / "datasets" / "odm-translate-seed0.csv")
    real = dataset[dataset["source"] == "real"]
    train, held_out = set(real.loc[real["split"] == "train", "path"]), set(real.loc[real["split"] != "train", "path"])
    manifest = pd.read_csv(chosen / "manifest.csv")
    assert set(manifest["source_path"]) <= train and not set(manifest["source_path"]) & held_out
    synthetic = dataset[dataset["source"] == "synthetic"]
    assert len(synthetic) > 0 and set(synthetic["path"]) <= {str(chosen / p) for p in manifest["path"]}
    assert set(synthetic["source_path"]) <= train and set(synthetic["strength"]) == {choice["chosen"]}
    # T = 100, 5 trailing steps (99, 79, 59, 39, 19): nominal 0.5 starts at 39, 0.8 at 79
    assert choice["effective"] == {"0.5": 0.4, "0.8": 0.8}
    assert set(manifest["effective_strength"]) == {choice["effective"][f"{choice['chosen']:g}"]}
    # The judge: by default the real arm's seed-0 classifier, its test QWK beside the domain figures.
    judge = results["judge"]
    assert judge["dir"] == results["domain_classifier"] == results["arms"]["real"]["classifiers"]["0"]
    assert judge["test_qwk"] == results["arms"]["real"]["seeds"]["0"]["qwk"] and judge["n_test"] > 0
    assert 0.0 <= judge["real_reference"]["precision"] <= 1.0 and judge["real_reference"]["n_heldout"] > 0
    report = (bench / "report" / "report.md").read_text()
    assert "Judge of the domain figures and grade fidelity: the real arm's seed-0 classifier" in report
    assert f"domain (judge QWK {judge['test_qwk']:.3f})" in report
    # The winner's selection classifier is the arm's seed-0 classifier (reused, not trained twice).
    assert len(list(store.glob("classifier-odm-translate-seed0-*"))) == 2

    # benchmark.filter: the real arm's first classifier grades every synthetic set before balancing
    # (the generated ones, topped up; an external arm's finished images, as given).
    external = _external_folder(tmp_path / "sg")
    filtered = runner.invoke(app, args + ["--set", f"benchmark.arms=[real,odm,odm-translate,'external:sg={external}']",
                                          "--set", "benchmark.filter.max_grade_error=1",
                                          "--set", "benchmark.judge.separate=true", "--set", "benchmark.judge.epochs=3",
                                          "--set", "benchmark.judge.min_qwk=0.99"])
    assert filtered.exit_code == 0, filtered.output
    assert "» filter: synthetic images kept" in filtered.output
    [second] = [b for b in (tmp_path / "runs").glob("*-benchmark-smoke") if b != bench]
    again = json.loads((second / "results.json").read_text())
    # A separate judge: its own classifier (3 epochs), and a warning when its test QWK is below the floor.
    [judge_dir] = store.glob("classifier-judge-seed0-*")
    assert again["judge"]["dir"] == str(judge_dir) and again["domain_classifier"] == str(judge_dir)
    assert len(json.loads((judge_dir / "metrics.json").read_text())["history"]) == 3
    assert any(n.startswith("the judge (a separate classifier") and "below benchmark.judge.min_qwk 0.99" in n
               for n in again["notes"])
    assert "⚠ Warning: the judge (a separate classifier" in (second / "report" / "report.md").read_text()
    real_dir = again["arms"]["real"]["classifiers"]["0"]
    for name in ("synthetic-step*", "translated-step*"):
        for folder in generator.glob(name):
            grading = pd.read_csv(folder / "grading.csv")
            assert set(grading["classifier"]) == {str(Path(real_dir).resolve())}
            kept = pd.read_csv(folder / "manifest.csv")
            assert ((kept["predicted_grade"] - kept["label"]).abs() <= 1).all()
    odm = pd.read_csv(second / "datasets" / "odm-seed0.csv")
    [noise] = generator.glob("synthetic-step*")
    kept_paths = {str(noise / p) for p in pd.read_csv(noise / "manifest.csv")["path"]}
    assert set(odm.loc[odm["source"] == "synthetic", "path"]) <= kept_paths
    sg = pd.read_csv(second / "datasets" / "external-sg-seed0.csv")
    sg = sg[sg["source"] == "synthetic"]
    assert ((sg["predicted_grade"] - sg["label"]).abs() <= 1).all()


def _external_folder(root: Path) -> Path:
    from PIL import Image

    from odmaug.data.synthetic import draw_fundus

    for grade in range(5):
        (root / str(grade)).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(draw_fundus(grade, 5, 16, 99, grade * 100 + i)).save(root / str(grade) / f"{i}.png")
    return root


def test_a_folds_translations_start_from_that_folds_training_part(tmp_path, smoke_recipe_path, monkeypatch):
    import odmaug.augment.synthesis as augment_synthesis
    from odmaug.benchmark.protocol import benchmark_splits
    from odmaug.benchmark.synthesis_stage import synthesize
    from odmaug.distributed import Context

    recipe = load_recipe(smoke_recipe_path, ["benchmark.protocol=cv", "benchmark.cv.folds=3",
                                             "benchmark.arms=[real, odm-translate]", "benchmark.translate.strengths=[0.6]"])
    splits = benchmark_splits(recipe, load_table(recipe.data))[1]
    plan = make_plan(recipe, tmp_path / "store", splits)
    seen = []

    def record(request, **kwargs):  # stands in for the generator: only the sources it is given matter here
        seen.append(request.from_real)
        raise RuntimeError("stop")

    monkeypatch.setattr(augment_synthesis, "run_synthesis", record)
    with pytest.raises(RuntimeError, match="stop"):
        synthesize(plan, recipe, splits, Context(), False)
    [given] = seen
    assert given.strength == 0.6 and given.train is splits.train
    assert not set(given.train.paths) & (set(splits.test.paths) | set(splits.val.paths))


def test_filter_table_keeps_finished_images_graded_close(tmp_path):
    import torch
    from PIL import Image

    from odmaug.augment.filter import GradeFilter, filter_table, predict_grades
    from odmaug.classify import ClassifierMeta, create_model, load_classifier, save_classifier
    from odmaug.data import ImageTable
    from odmaug.data.synthetic import draw_fundus

    torch.manual_seed(0)
    save_classifier(create_model("test_resnet", 5, 16), ClassifierMeta("test_resnet", 5, 16), tmp_path / "clf")
    paths, labels = [], []
    for grade in range(5):
        for i in range(3):
            paths.append(tmp_path / f"{grade}-{i}.png")
            labels.append(grade)
            Image.fromarray(draw_fundus(grade, 5, 16, 7, grade * 10 + i)).save(paths[-1])
    table = ImageTable(pd.DataFrame({"path": [str(p) for p in paths], "label": labels, "source": "synthetic"}), 5)
    kept, rejected = filter_table(GradeFilter(tmp_path / "clf", max_grade_error=0), table, torch.device("cpu"))
    model, meta = load_classifier(tmp_path / "clf")
    predicted = predict_grades(model, meta, paths, torch.device("cpu"))
    exact = predicted == np.array(labels)
    assert kept.paths == [str(p) for p, k in zip(paths, exact) if k]
    assert (kept.frame["predicted_grade"] == kept.frame["label"]).all()
    assert sum(rejected.values()) == int((~exact).sum())
