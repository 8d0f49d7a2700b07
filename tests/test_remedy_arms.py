"""The cheap rare-grade remedies as benchmark arms (issue 28): each changes its classifier's loss or
sampler, and nothing else (table, batches, other settings); its store key is its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import odmaug.classify.step as step_module
from odmaug.benchmark.arms import ARMS, Arm, ArmKind, REAL_ONLY
from odmaug.benchmark.arm_specs import check_arm_spec, parse_arm
from odmaug.benchmark.remedies import arm_recipe
from odmaug.benchmark.store import classifier_folder
from odmaug.classify.losses import build_criterion, focal_loss, grade_weights
from odmaug.classify.datasets import training_splits
from odmaug.classify.step import epoch_order
from odmaug.classify.train import train_classifier
from odmaug.cli import app
from odmaug.config import ClassifierConfig
from odmaug.data import ImageTable
from odmaug.errors import OdmaugError
from test_classify_train import make_recipe, write_squares

REMEDIES = {"class-weighted": {"class_weights": "inverse"}, "class-weighted-effective": {"class_weights": "effective"},
            "corn": {"head": "corn"},
            "mixup": {"mixup_alpha": 0.2}, "cutmix": {"cutmix_alpha": 1.0},
            "balanced-sampler": {"balanced_sampling": True}, "focal": {"loss": "focal"}}
COUNTS = np.array([40, 20, 10, 0, 2])


def _batch(seed=0, n=12, classes=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes, generator=g) * 3, torch.randint(0, classes, (n,), generator=g)


# ------------------------------------------------------------------------ losses


def test_grade_weights_inverse_and_effective():
    inverse = grade_weights(COUNTS, "inverse")
    assert torch.allclose(inverse, torch.tensor([72 / 200, 72 / 100, 72 / 50, 0.0, 72 / 10]))
    beta = 0.999
    raw = np.array([(1 - beta) / (1 - beta ** n) if n else 0.0 for n in COUNTS])
    effective = grade_weights(COUNTS, "effective", beta)
    assert torch.allclose(effective, torch.tensor(raw * 5 / raw.sum(), dtype=torch.float32))
    assert effective[4] > effective[2] > effective[1] > effective[0] and effective[3] == 0
    with pytest.raises(ValueError, match="unknown class weights"):
        grade_weights(COUNTS, "sqrt")


@pytest.mark.parametrize("kind", ["inverse", "effective"])
def test_class_weighted_loss_is_torch_weighted_cross_entropy(kind):
    cfg = ClassifierConfig(class_weights=kind, label_smoothing=0.1)
    logits, labels = _batch()
    loss = build_criterion(cfg, COUNTS, torch.device("cpu"))(logits, labels, None)
    expected = F.cross_entropy(logits, labels, weight=grade_weights(COUNTS, kind), label_smoothing=0.1)
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_default_settings_keep_plain_cross_entropy():
    assert build_criterion(ClassifierConfig(), COUNTS, torch.device("cpu")) is None
    dumped = ClassifierConfig().model_dump()  # stored classifiers' keys unchanged
    assert not {"loss", "focal_gamma", "class_weights", "class_weights_beta"} & set(dumped)


def test_focal_loss_matches_its_formula_and_is_cross_entropy_at_gamma_zero():
    logits, labels = _batch(1)
    p = logits.softmax(1)
    direct = torch.stack([-(1 - p[i, y]) ** 2 * torch.log(p[i, y]) for i, y in enumerate(labels.tolist())]).mean()
    assert torch.allclose(focal_loss(logits, labels, 2.0), direct)
    assert focal_loss(logits, labels, 2.0) < F.cross_entropy(logits, labels)
    weight = grade_weights(COUNTS, "inverse")
    assert torch.allclose(focal_loss(logits, labels, 0.0), F.cross_entropy(logits, labels))
    assert torch.allclose(focal_loss(logits, labels, 0.0, weight), F.cross_entropy(logits, labels, weight=weight))
    assert torch.allclose(focal_loss(logits, labels, 0.0, smoothing=0.1), F.cross_entropy(logits, labels, label_smoothing=0.1))
    cfg = ClassifierConfig(loss="focal", focal_gamma=0.0, label_smoothing=0.1)
    assert torch.allclose(build_criterion(cfg, COUNTS, torch.device("cpu"))(logits, labels, None),
                          F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_bad_loss_settings_are_one_line_errors(smoke_recipe_path):
    from odmaug.config import load_recipe

    for bad in ("loss=hinge", "focal_gamma=-1", "class_weights=sqrt", "class_weights_beta=1", "mixup_alpha=-1"):
        with pytest.raises(OdmaugError) as err:
            load_recipe(smoke_recipe_path, [f"classifier.{bad}"])
        assert f"classifier.{bad.split('=')[0]}" in str(err.value) and "\n" not in str(err.value)
    kind = ArmKind("bad", "bad", REAL_ONLY, training=(("focal_gamma", -1.0),))
    with pytest.raises(OdmaugError) as err:
        arm_recipe(make_recipe("x.csv"), Arm("bad", kind, None))
    assert "\n" not in str(err.value) and "benchmark arm bad: classifier.focal_gamma" in str(err.value)
    for spec in ("focal:x", "class-weighted:inverse"):
        with pytest.raises(ValueError, match="unknown arm"):
            check_arm_spec(spec)


# ------------------------------------------------------------------------ arms: one change each


@pytest.mark.parametrize("name", sorted(REMEDIES))
def test_remedy_arm_changes_only_its_classifier_options(name):
    recipe = make_recipe("x.csv")
    arm = parse_arm(name)
    assert arm.kind.table is ARMS.get("real").table and arm.kind.generator is None and arm.synthetic_name is None
    own = arm_recipe(recipe, arm)
    before, after = recipe.classifier.model_dump(), own.classifier.model_dump()
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == set(REMEDIES[name]) and all(after[k] == v for k, v in REMEDIES[name].items())
    assert own.to_dict() | {"classifier": None} == recipe.to_dict() | {"classifier": None}
    assert arm_recipe(recipe, parse_arm("real")) is recipe


def test_every_arm_has_its_own_store_key(tmp_path):
    recipe = make_recipe("x.csv")
    table = ImageTable(pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1], "split": ["train", "train"],
                                     "source": ["real", "real"]}), 5, "t")
    keys = {name: classifier_folder(tmp_path, "x", arm_recipe(recipe, parse_arm(name)), (table, table, table), 0).name
            for name in ["real", *REMEDIES]}
    assert len(set(keys.values())) == len(keys)


class _Recorder:
    """Records every training batch's labels and each step's loss function."""

    def __init__(self, monkeypatch):
        self.batches, self.criteria = [], []
        original = step_module.Stepper.step

        def step(stepper, images, labels, generator, smoothing=None):
            self.batches.append(labels.tolist())
            self.criteria.append(stepper.criterion)
            return original(stepper, images, labels, generator, smoothing)

        monkeypatch.setattr(step_module.Stepper, "step", step)


def _train(name, manifest, tmp_path, monkeypatch):
    recipe = arm_recipe(make_recipe(manifest, epochs=1, batch_size=8), parse_arm(name))
    train, val, test = training_splits(recipe)
    recorder = _Recorder(monkeypatch)
    train_classifier(recipe, train, val, test, tmp_path / name, seed=0, device="cpu", show_progress=False)
    return recorder, train


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_squares(tmp_path_factory.mktemp("small"), per_split=(("train", 8), ("val", 2), ("test", 2)))


@pytest.mark.parametrize("name", ["class-weighted", "focal", "corn"])
def test_loss_remedies_train_on_the_batches_of_real(name, small, tmp_path, monkeypatch):
    real, _ = _train("real", small, tmp_path, monkeypatch)
    monkeypatch.undo()
    remedy, _ = _train(name, small, tmp_path, monkeypatch)
    assert remedy.batches == real.batches  # same table, same order: only the loss differs
    assert real.criteria[0] is None and remedy.criteria[0] is not None


def test_balanced_sampler_keeps_the_epoch_length_of_real(small, tmp_path, monkeypatch):
    real, train = _train("real", small, tmp_path, monkeypatch)
    monkeypatch.undo()
    balanced, _ = _train("balanced-sampler", small, tmp_path, monkeypatch)
    assert len(balanced.batches) == len(real.batches) and sum(map(len, balanced.batches)) == sum(map(len, real.batches))
    assert balanced.batches != real.batches and balanced.criteria[0] is None


def test_balanced_draws_are_near_uniform_over_grades():
    labels = torch.tensor([0] * 600 + [1] * 250 + [2] * 100 + [3] * 40 + [4] * 10)
    order = epoch_order(labels, True, torch.Generator().manual_seed(0))
    assert len(order) == len(labels)
    counts = torch.bincount(labels[order], minlength=5).float()
    assert (counts / len(labels) - 0.2).abs().max() < 0.04  # 1000 draws: a few standard deviations


# ------------------------------------------------------------------------ planning


def test_dry_run_plans_the_remedy_arms(tmp_path, smoke_recipe_path):
    args = ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"),
            "--set", f"benchmark.arms=[real, {', '.join(REMEDIES)}]", "--dry-run", "--no-estimate"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in REMEDIES:
        assert f"{name} seed" in result.output, result.output


# ------------------------------------------------------------------------ mixup / cutmix (timm)


@pytest.mark.parametrize("name, alpha", [("mixup", "mixup_alpha"), ("cutmix", "cutmix_alpha")])
def test_mixed_targets_sum_to_one_and_are_timms(name, alpha):
    from timm.data.mixup import mixup_target

    from odmaug.classify.mixing import Mixer

    cfg = arm_recipe(make_recipe("x.csv"), parse_arm(name)).classifier
    assert getattr(cfg, alpha) > 0
    mixer = Mixer.build(cfg, 5, 8)
    x = torch.rand(8, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 4, 1, 2])
    original = x.clone()
    mixed, target = mixer(x, labels, torch.Generator().manual_seed(3))
    assert torch.allclose(target.sum(1), torch.ones(8))
    # one lambda per batch: recover it from the targets and compare with timm's own target
    on, off = 1 - cfg.label_smoothing + cfg.label_smoothing / 5, cfg.label_smoothing / 5
    lam = float((target[0, 0] - off) / (on - off)) if labels[0] != labels[-1] else None
    assert lam is not None and 0 <= lam <= 1
    assert torch.allclose(target, mixup_target(labels, 5, lam, cfg.label_smoothing), atol=1e-6)
    if name == "mixup":
        assert torch.allclose(mixed, lam * original + (1 - lam) * original.flip(0), atol=1e-5)
    again = mixer(original.clone(), labels, torch.Generator().manual_seed(3))[1]
    assert torch.equal(again, target)  # seeded from the training generator


def test_mixing_settings_are_checked():
    from odmaug.classify.mixing import Mixer

    with pytest.raises(OdmaugError, match="even batch size"):
        Mixer.build(ClassifierConfig(mixup_alpha=0.2), 5, 7)
    with pytest.raises(ValueError, match="cannot be combined"):
        ClassifierConfig(mixup_alpha=0.2, loss="focal")
    assert Mixer.build(ClassifierConfig(), 5, 7) is None


def test_mixup_arm_trains_on_the_table_of_real(small, tmp_path, monkeypatch):
    real, _ = _train("real", small, tmp_path, monkeypatch)
    monkeypatch.undo()
    mixed, _ = _train("mixup", small, tmp_path, monkeypatch)
    assert len(mixed.batches) == len(real.batches) and mixed.batches[0] == real.batches[0]
    assert sorted(sum(mixed.batches, [])) == sorted(sum(real.batches, []))  # one epoch: every image once


def test_benchmark_with_remedy_arms_end_to_end(tmp_path, smoke_recipe_path):
    import json

    arms = ["real", "class-weighted", "focal", "mixup"]
    args = ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--set", f"benchmark.arms=[{', '.join(arms)}]", "--set", "classifier.epochs=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    bench = next((tmp_path / "runs").glob("*-benchmark-smoke"))
    assert list(json.loads((bench / "results.json").read_text())["arms"]) == arms
    records = {arm: json.loads((bench / "classifiers" / f"{arm}-seed0.json").read_text()) for arm in arms}
    assert {arm: r["training"] for arm, r in records.items()} == {"real": {}, **{a: REMEDIES[a] for a in arms[1:]}}
    assert len({r["dir"] for r in records.values()}) == len(arms)
    assert {r["counts"] is None for r in records.values()} == {True}  # every table is the real one
