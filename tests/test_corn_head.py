"""The ordinal CORN head (issue 28; Shi, Cao & Raschka 2023): its loss and grade rule against the
reference code (coral-pytorch) and hand-computed cases, its grade probabilities, the refused
combinations, and a CORN classifier that trains, saves and predicts the same grades when loaded."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from coral_pytorch.dataset import corn_label_from_logits
from coral_pytorch.losses import corn_loss as reference_corn_loss

from odmaug.classify.corn import (corn_cumulative, corn_labels, corn_loss, corn_probabilities, grade_outputs,
                                  grades_from_probabilities, head_outputs)
from odmaug.classify.losses import build_criterion, grade_weights
from odmaug.classify.datasets import training_splits
from odmaug.classify.train import train_classifier
from odmaug.config import ClassifierConfig
from odmaug.errors import OdmaugError
from helpers import assert_refused
from test_classify_train import make_recipe, write_squares

COUNTS = np.array([40, 20, 10, 0, 2])


def _batch(seed: int, n: int = 16, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes - 1, generator=g) * 3, torch.randint(0, classes, (n,), generator=g)


# ------------------------------------------------------------------------ loss and rule


@pytest.mark.parametrize("seed", range(5))
def test_loss_and_labels_are_coral_pytorchs(seed):
    logits, labels = _batch(seed)
    assert torch.allclose(corn_loss(logits, labels), reference_corn_loss(logits, labels, 5), atol=1e-6)
    assert torch.equal(corn_labels(logits), corn_label_from_logits(logits))
    top_missing = labels.clamp(max=2)  # grades 3 and 4 absent: the last tasks' subsets are empty
    assert torch.allclose(corn_loss(logits, top_missing), reference_corn_loss(logits, top_missing, 5), atol=1e-6)


def test_loss_by_hand():
    # K = 3, two images. Image y=0 is in task 0's subset only (target 0); image y=2 in both (targets 1, 1).
    logits, labels = torch.tensor([[0.5, -1.0], [2.0, 0.3]]), torch.tensor([0, 2])
    def bce(x, t):
        return -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))
    expected = (bce(0.5, 0) + bce(2.0, 1) + bce(0.3, 1)) / 3  # three (image, task) pairs
    assert corn_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # grade weights w = [1, 0, 4]: sum_i w_i loss_i / sum_i w_i n_i
    weighted = (1 * bce(0.5, 0) + 4 * (bce(2.0, 1) + bce(0.3, 1))) / (1 * 1 + 4 * 2)
    assert corn_loss(logits, labels, torch.tensor([1.0, 0.0, 4.0])).item() == pytest.approx(weighted, rel=1e-6)
    # label smoothing e softens each binary target t to (1 - e) t + e / 2
    smoothed = (bce(0.5, 0.05) + bce(2.0, 0.95) + bce(0.3, 0.95)) / 3
    assert corn_loss(logits, labels, smoothing=0.1).item() == pytest.approx(smoothed, rel=1e-6)
    per_image = corn_loss(logits, labels, smoothing=torch.tensor([0.1, 0.1]))
    assert per_image.item() == pytest.approx(smoothed, rel=1e-6)


def test_grade_rule_and_probabilities_by_hand():
    # sigmoid(2) = 0.8808, sigmoid(0) = 0.5, sigmoid(-1) = 0.2689
    logits = torch.tensor([[2.0, 0.0, -1.0, 5.0]])
    s = [1 / (1 + math.exp(-x)) for x in (2.0, 0.0, -1.0, 5.0)]
    cum = np.cumprod(s)  # P(y > k): 0.881, 0.440, 0.118, 0.118
    assert np.allclose(corn_cumulative(logits).numpy()[0], cum, atol=1e-6)
    assert corn_labels(logits).tolist() == [1]  # only P(y > 0) exceeds 0.5
    expected = [1 - cum[0], cum[0] - cum[1], cum[1] - cum[2], cum[2] - cum[3], cum[3]]
    assert np.allclose(corn_probabilities(logits).numpy()[0], expected, atol=1e-6)


def test_probabilities_are_a_distribution_consistent_with_the_rule():
    logits, _ = _batch(7, n=200)
    probs = corn_probabilities(logits)
    assert probs.shape == (200, 5) and (probs >= 0).all() and torch.allclose(probs.sum(1), torch.ones(200))
    above = 1 - probs.cumsum(1)[:, :-1]  # P(y > k) back from the grade probabilities
    assert torch.allclose(above, corn_cumulative(logits), atol=1e-5)
    # the rule is the median grade: the first grade whose cumulative probability reaches 0.5
    median = (probs.cumsum(1) < 0.5).sum(1)
    assert torch.equal(median, corn_labels(logits))
    assert np.array_equal(grades_from_probabilities(probs.numpy(), "corn"), corn_labels(logits).numpy())
    assert np.array_equal(grades_from_probabilities(probs.numpy(), "softmax"), probs.argmax(1).numpy())
    got_probs, got_grades = grade_outputs(logits, "corn")
    assert np.allclose(got_probs, probs.numpy()) and np.array_equal(got_grades, corn_labels(logits).numpy())
    soft, grades = grade_outputs(torch.randn(4, 5), "softmax")
    assert np.allclose(soft.sum(1), 1) and np.array_equal(grades, soft.argmax(1))


def test_criterion_of_a_corn_head():
    logits, labels = _batch(3)
    cpu = torch.device("cpu")
    plain = build_criterion(ClassifierConfig(head="corn", label_smoothing=0.0), COUNTS, cpu)
    assert torch.allclose(plain(logits, labels, None), reference_corn_loss(logits, labels, 5), atol=1e-6)
    smooth = build_criterion(ClassifierConfig(head="corn", label_smoothing=0.1), COUNTS, cpu)
    assert torch.allclose(smooth(logits, labels, None), corn_loss(logits, labels, smoothing=0.1))
    rows = torch.full((16,), 0.3)  # the synthetic-row lever's per-image smoothing wins
    assert torch.allclose(smooth(logits, labels, rows), corn_loss(logits, labels, smoothing=0.3))
    weighted = build_criterion(ClassifierConfig(head="corn", class_weights="inverse"), COUNTS, cpu)
    assert torch.allclose(weighted(logits, labels, None),
                          corn_loss(logits, labels, grade_weights(COUNTS, "inverse"), 0.1))
    assert head_outputs("corn", 5) == 4 and head_outputs("softmax", 5) == 5
    with pytest.raises(ValueError, match="unknown classifier head"):
        head_outputs("coral", 5)


# ------------------------------------------------------------------------ settings


def test_default_head_leaves_stored_keys_alone():
    assert "head" not in ClassifierConfig().model_dump()
    assert ClassifierConfig(head="corn").model_dump()["head"] == "corn"


@pytest.mark.parametrize("bad", [{"loss": "focal"}, {"mixup_alpha": 0.2}, {"cutmix_alpha": 1.0}])
def test_corn_refuses_what_it_cannot_train_with(bad):
    with pytest.raises(ValueError, match="head: corn cannot be combined"):
        ClassifierConfig(head="corn", **bad)


def test_refused_combination_is_one_cli_error_line(tmp_path, monkeypatch, smoke_recipe_path):
    args = ["train-classifier", "--recipe", "{smoke}", "--set", "classifier.head=corn", "--set", "classifier.loss=focal"]
    assert_refused(args, lambda work: None, "head: corn cannot be combined with loss: focal", tmp_path, monkeypatch, smoke_recipe_path)


def test_unknown_head_is_one_line(smoke_recipe_path):
    from odmaug.config import load_recipe

    with pytest.raises(OdmaugError) as err:
        load_recipe(smoke_recipe_path, ["classifier.head=coral"])
    assert "classifier.head: Input should be 'softmax' or 'corn'" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------ a CORN classifier


@pytest.fixture(scope="module")
def corn_run(tmp_path_factory):
    manifest = write_squares(tmp_path_factory.mktemp("corn"), per_split=(("train", 8), ("val", 3), ("test", 3)))
    recipe = make_recipe(manifest, epochs=2, batch_size=8, head="corn")
    train, val, test = training_splits(recipe)
    out = tmp_path_factory.mktemp("corn-run") / "classifier"
    return recipe, test, train_classifier(recipe, train, val, test, out, seed=0, device="cpu", show_progress=False)


def test_corn_classifier_saves_its_head_and_predicts_with_its_rule(corn_run):
    from odmaug.classify.models import load_classifier
    from odmaug.classify.predict import load_images, predict_logits

    recipe, test, result = corn_run
    meta = json.loads((result.out_dir / "classifier.json").read_text())
    assert meta["head"] == "corn" and meta["num_classes"] == 5
    model, loaded = load_classifier(result.out_dir)
    assert loaded.head == "corn" and loaded.outputs == 4
    logits = predict_logits(model, loaded, load_images(test, loaded.image_size), torch.device("cpu"))
    assert logits.shape == (len(test), 4)
    frame = pd.read_csv(result.predictions_path)
    rows = frame[frame["split"] == "test"]
    probs = rows[[f"prob_{g}" for g in range(5)]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(rows["predicted"].to_numpy(), corn_labels(logits).numpy())
    assert np.allclose(probs, corn_probabilities(logits).numpy(), atol=1e-5)
    assert result.history[0]["val_loss"] > 0 and 0 <= result.val["accuracy"] <= 1


def test_evaluate_and_filter_read_a_corn_classifier(corn_run, tmp_path):
    from odmaug.augment.filter import predict_images
    from odmaug.classify.evaluate import evaluate_classifier
    from odmaug.classify.models import load_classifier
    from odmaug.classify.predict import load_images

    recipe, test, result = corn_run
    stored = pd.read_csv(result.predictions_path)
    stored = stored[stored["split"] == "test"]["predicted"].to_numpy()
    evaluated = evaluate_classifier(result.out_dir, test, tmp_path / "eval")
    assert evaluated["overall"]["n"] == len(test)
    again = pd.read_csv(tmp_path / "eval" / "predictions.csv")["predicted"].to_numpy()
    assert np.array_equal(again, stored)
    model, meta = load_classifier(result.out_dir)
    images = load_images(test, meta.image_size).permute(0, 2, 3, 1).numpy()
    grades = predict_images(model, meta, lambda i: images[i], len(images), torch.device("cpu"))
    assert np.array_equal(grades, stored)


def test_softmax_classifier_json_is_unchanged(tmp_path):
    from odmaug.classify.models import ClassifierMeta

    assert "head" not in ClassifierMeta("m", 5, 16).to_json()
    assert ClassifierMeta.from_json({"model": "m", "num_classes": 5, "image_size": 16}, "x").outputs == 5
    with pytest.raises(OdmaugError, match="not a valid classifier description"):
        ClassifierMeta.from_json({"model": "m", "num_classes": 5, "image_size": 16, "head": "coral"}, "x")
