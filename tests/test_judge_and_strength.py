"""The generators' judge (issue 24 item 8) and translation chains (item 7): a weak judge says so,
a separate judge is planned and keyed, and two nominal strengths that run one chain are refused."""

import pytest

from odmaug.benchmark import Splits, make_plan
from odmaug.benchmark.judge import judge_recipe, judge_text, judge_warnings
from odmaug.config import load_recipe
from odmaug.data import load_table
from odmaug.diffusion.schedule import linear_betas, NoiseSchedule
from odmaug.diffusion.translate import check_distinct_chains, effective_strength
from odmaug.errors import OdmaugError


def _schedule(timesteps: int) -> NoiseSchedule:
    return NoiseSchedule(linear_betas(timesteps, 1e-4, 0.02))


def test_effective_strength_is_the_chains_first_timestep_over_t():
    schedule = _schedule(100)  # 5 trailing steps: 99, 79, 59, 39, 19
    assert schedule.sampling_timesteps(5, "trailing") == [99, 79, 59, 39, 19]
    assert effective_strength(schedule, 0.5, 5) == effective_strength(schedule, 0.55, 5) == 0.4
    assert effective_strength(schedule, 0.6, 5) == 0.6 and effective_strength(schedule, 1.0, 5) == 1.0
    assert effective_strength(schedule, 0.1, 5) == 0.11  # below every listed step: the single step t0 = 10
    assert check_distinct_chains(schedule, [0.7, 0.5], 5, "trailing") == {0.5: 0.4, 0.7: 0.6}
    with pytest.raises(OdmaugError, match=r"strengths: 0.5 and 0.55 run the same chain \(both start at t = 39 of "
                                          r"T = 100 with 5 trailing steps, effective strength 0.4\)"):
        check_distinct_chains(schedule, [0.55, 0.5], 5, "trailing")


def test_the_benchmark_refuses_candidates_that_run_one_chain_before_any_work(tmp_path, smoke_recipe_path):
    recipe = load_recipe(smoke_recipe_path, ["benchmark.arms=[real, odm-translate]",
                                             "benchmark.translate.strengths=[0.5, 0.55]"])
    with pytest.raises(OdmaugError, match="benchmark.translate.strengths: 0.5 and 0.55 run the same chain"):
        make_plan(recipe, tmp_path / "store", Splits.of(load_table(recipe.data)))
    assert not (tmp_path / "store").exists()
    finer = load_recipe(smoke_recipe_path, ["benchmark.arms=[real, odm-translate]", "sample.steps=20",
                                            "benchmark.translate.strengths=[0.5, 0.55]"])
    make_plan(finer, tmp_path / "store", Splits.of(load_table(finer.data)))  # 20 steps: two chains


def test_judge_settings_plan_and_recipe(tmp_path, smoke_recipe_path):
    with pytest.raises(OdmaugError, match="epochs applies to a separate judge: set benchmark.judge.separate=true"):
        load_recipe(smoke_recipe_path, ["benchmark.judge.epochs=5"])
    recipe = load_recipe(smoke_recipe_path, ["benchmark.arms=[real, odm]", "benchmark.judge.separate=true",
                                             "benchmark.judge.epochs=20", "benchmark.judge.seed=7"])
    assert judge_recipe(recipe).classifier.epochs == 20 and judge_recipe(recipe).classifier.model == "test_resnet"
    plan = make_plan(recipe, tmp_path / "store", Splits.of(load_table(recipe.data)))
    [stage] = [s for s in plan.stages if s.name.startswith("judge")]
    assert (stage.kind, stage.name, stage.left) == ("classifier", "judge (test_resnet, seed 7)", 20)
    real_only = load_recipe(smoke_recipe_path, ["benchmark.arms=[real, oversample]", "benchmark.judge.separate=true"])
    plan = make_plan(real_only, tmp_path / "store", Splits.of(load_table(real_only.data)))
    assert not any(s.name.startswith("judge") for s in plan.stages)  # nothing to judge: no judge
    with pytest.raises(OdmaugError, match="no_such_model"):
        bad = load_recipe(smoke_recipe_path, ["benchmark.judge.separate=true", "benchmark.judge.model=no_such_model"])
        make_plan(bad, tmp_path / "store", Splits.of(load_table(bad.data)))


def test_a_weak_or_degenerate_judge_is_called_out(smoke_recipe_path):
    recipe = load_recipe(smoke_recipe_path)  # min_qwk 0.5, min_real_precision 0.5 by default
    good = {"source": "the real arm's seed-0 classifier", "model": "resnet18", "test_qwk": 0.62,
            "test_accuracy": 0.55, "n_test": 400,
            "real_reference": {"fid": 3.2, "precision": 0.81, "recall": 0.77, "n_real": 1080, "n_heldout": 120}}
    assert judge_warnings(good, recipe) == []
    assert judge_text(good) == (
        "Judge of the domain figures and grade fidelity: the real arm's seed-0 classifier, resnet18, test QWK 0.620, "
        "accuracy 0.550 on 400 test images. Held-out real images (120 val) against the real training split (1080) "
        "in its features: FID 3.20, precision 0.810, recall 0.770 (what a perfect generator would score here).")
    weak = good | {"test_qwk": 0.23}
    [line] = judge_warnings(weak, recipe)
    assert line.startswith("the judge (the real arm's seed-0 classifier) has test QWK 0.230, below benchmark.judge.min_qwk 0.5")
    degenerate = good | {"real_reference": good["real_reference"] | {"precision": 0.0}}
    [line] = judge_warnings(degenerate, recipe)
    assert "held-out real images score precision 0.000" in line
    assert len(judge_warnings(degenerate | {"test_qwk": float("nan")}, recipe)) == 2  # both reasons
