"""Classifier training: learning, determinism, resumption, files, multi-seed summaries, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from odmaug.classify.evaluate import evaluate_classifier, grade_fidelity
from odmaug.classify.models import create_model
from odmaug.classify.predict import load_images
from odmaug.classify.seeds import train_seeds
from odmaug.classify.datasets import training_splits
from odmaug.classify.step import epoch_order, lr_factor
from odmaug.classify.train import train_classifier
from odmaug.classify.transforms import AugmentSettings, augment_batch
from odmaug.config import recipe_from_dict
from odmaug.data import ImageTable, load_table, table_from_spec
from odmaug.errors import OdmaugError
from odmaug.metrics import classification_metrics, summarize_runs
from helpers import classifier_cut_after_one_epoch

SIZE = 16
CLASSIFIER = {"model": "test_resnet", "epochs": 8, "batch_size": 20, "lr": 3e-3, "warmup_epochs": 0.5,
              "color_jitter": 0.0}


def write_squares(root, per_split=(("train", 20), ("val", 6), ("test", 6)), seed=0):
    """A separable graded set: a square whose size and brightness grow with the grade."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in per_split:
        for grade in range(5):
            for i in range(n):
                img = np.full((SIZE, SIZE, 3), rng.integers(0, 30), dtype=np.uint8)
                side = 4 + 2 * grade
                x0, y0 = rng.integers(0, SIZE - side + 1, 2)
                img[y0 : y0 + side, x0 : x0 + side] = np.clip(60 + 45 * grade + rng.integers(-10, 10, 3), 0, 255)
                path = root / f"{split}-{grade}-{i}.png"
                Image.fromarray(img).save(path)
                rows.append({"path": path.name, "label": grade, "split": split})
    manifest = root / "squares.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def make_recipe(manifest, **classifier):
    return recipe_from_dict(
        {"data": {"source": "manifest", "path": str(manifest), "image_size": SIZE},
         "classifier": {**CLASSIFIER, **classifier}, "device": "cpu"}
    )


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return write_squares(tmp_path_factory.mktemp("squares"))


@pytest.fixture(scope="module")
def trained(squares, tmp_path_factory):
    recipe = make_recipe(squares)
    train, val, test = training_splits(recipe)
    out = tmp_path_factory.mktemp("run") / "classifier"
    return recipe, train_classifier(recipe, train, val, test, out, seed=0, device="cpu", show_progress=False)


def test_learns_a_separable_set_and_writes_its_files(trained):
    recipe, result = trained
    assert result.val["qwk"] > 0.95 and result.test["qwk"] > 0.95
    for name in ("model.safetensors", "classifier.json", "config.yaml", "metrics.json", "predictions.csv"):
        assert (result.out_dir / name).is_file()
    assert not (result.out_dir / "train_state.safetensors").exists()
    assert len(result.history) == 8 and 1 <= result.best_epoch <= 8
    assert result.val["qwk"] == max(h["val_qwk"] for h in result.history)
    preds = pd.read_csv(result.predictions_path)
    assert list(preds.columns[:5]) == ["path", "split", "source", "label", "predicted"]
    assert [c for c in preds.columns if c.startswith("prob_")] == [f"prob_{c}" for c in range(5)]
    np.testing.assert_allclose(preds.filter(like="prob_").sum(axis=1), 1.0, atol=1e-4)
    test_rows = preds[preds["split"] == "test"]
    recomputed = classification_metrics(test_rows["label"], test_rows["predicted"], 5)
    saved = json.loads(result.metrics_path.read_text())
    assert saved["test"]["qwk"] == pytest.approx(recomputed["qwk"]) == pytest.approx(result.test["qwk"])
    assert saved["best_epoch"] == result.best_epoch and saved["timing"]["images_per_second"] > 0


def test_evaluate_reproduces_training_test_metrics(trained, tmp_path):
    recipe, result = trained
    test = load_table(recipe.data).split("test")
    evaluation = evaluate_classifier(result.out_dir, test, tmp_path / "eval", "cpu", recipe.classifier.precision)
    assert evaluation["overall"]["qwk"] == pytest.approx(result.test["qwk"])
    assert evaluation["overall"]["confusion"] == result.test["confusion"]
    for name in ("evaluation.json", "confusion.csv", "confusion.png", "predictions.csv"):
        assert (tmp_path / "eval" / name).is_file()
    confusion = pd.read_csv(tmp_path / "eval" / "confusion.csv", index_col=0)
    assert confusion.to_numpy().tolist() == result.test["confusion"]


def test_grade_fidelity_scores_only_synthetic_rows(trained, squares, tmp_path):
    _, result = trained
    frame = pd.read_csv(squares)
    frame["path"] = [str(squares.parent / p) for p in frame["path"]]
    frame["source"] = np.where(frame["split"] == "test", "synthetic", "real")
    # Intended grades reversed on the real rows: they must not count.
    frame.loc[frame["source"] == "real", "label"] = 4 - frame.loc[frame["source"] == "real", "label"]
    table = ImageTable(frame, 5, "mixed")
    fidelity = grade_fidelity(result.out_dir, table)
    assert fidelity["n"] == 30 and fidelity["qwk"] == pytest.approx(result.test["qwk"])
    assert len(fidelity["recall_per_grade"]) == 5
    mixed = evaluate_classifier(result.out_dir, table)
    assert set(mixed["by_source"]) == {"real", "synthetic"} and mixed["by_source"]["real"]["qwk"] < 0


def test_same_seed_same_weights_other_seed_differs(squares, tmp_path):
    recipe = make_recipe(squares, epochs=1)
    train, val, test = training_splits(recipe)
    runs = [train_classifier(recipe, train, val, test, tmp_path / f"r{i}", seed=s, device="cpu", show_progress=False)
            for i, s in enumerate((7, 7, 8))]
    weights = [load_file(str(r.model_path)) for r in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert (runs[0].predictions_path.read_text() == runs[1].predictions_path.read_text())


def test_interrupted_training_resumes_to_the_same_result(squares, tmp_path):
    recipe = make_recipe(squares, epochs=2)
    train, val, test = training_splits(recipe)
    full = classifier_cut_after_one_epoch(recipe, (train, val, test), tmp_path)
    assert (tmp_path / "cut" / "train_state.safetensors").is_file()
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train_classifier(recipe, train, val, test, tmp_path / "cut", 3, "cpu", show_progress=False)
    assert resumed.resumed_from == 1
    a, b = load_file(str(full.model_path)), load_file(str(resumed.model_path))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test == full.test
    again = train_classifier(recipe, train, val, test, tmp_path / "cut", 3, "cpu", show_progress=False)
    assert again.resumed_from == -1 and again.test == full.test
    # Another setting never reuses the finished run.
    other = recipe.model_copy(deep=True)
    other.classifier.label_smoothing = 0.0
    changed = train_classifier(other, train, val, test, tmp_path / "cut", 3, "cpu", show_progress=False)
    assert changed.resumed_from == 0


def test_train_seeds_summary(squares, tmp_path):
    recipe = make_recipe(squares, epochs=1)
    train, val, test = training_splits(recipe)
    summary = train_seeds(recipe, train, val, test, tmp_path, [0, 1], device="cpu", show_progress=False)
    qwks = [run["test"]["qwk"] for run in summary["runs"]]
    expected = summarize_runs(qwks)
    assert summary["summary"]["test"]["qwk"] == pytest.approx(expected)
    assert (tmp_path / "seed0" / "model.safetensors").is_file() and (tmp_path / "summary.json").is_file()
    with pytest.raises(OdmaugError, match="repeat"):
        train_seeds(recipe, train, val, test, tmp_path, [1, 1])


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 100, 0) == pytest.approx(1.0)


def test_balanced_sampling_equalises_grades():
    labels = torch.tensor([0] * 800 + [1] * 150 + [2] * 50)
    order = epoch_order(labels, True, torch.Generator().manual_seed(0))
    share = torch.bincount(labels[order], minlength=3).float() / len(order)
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.05)
    again = epoch_order(labels, True, torch.Generator().manual_seed(0))
    assert torch.equal(order, again)
    plain = epoch_order(labels, False, torch.Generator().manual_seed(0))
    assert torch.equal(plain.sort().values, torch.arange(1000))


def test_augment_flips_are_exact_and_draws_seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 8, 8), generator=g, dtype=torch.uint8)
    flips = AugmentSettings(hflip=True, vflip=True, rotation_degrees=0.0, color_jitter=0.0)
    out = augment_batch(x, flips, torch.Generator().manual_seed(1))
    ref = x.float() / 255
    candidates = [ref, ref.flip(-1), ref.flip(-2), ref.flip(-1).flip(-2)]
    for i in range(32):
        assert min((out[i] - c[i]).abs().max().item() for c in candidates) < 1e-5
    full = AugmentSettings(True, True, 180.0, 0.2)
    a = augment_batch(x, full, torch.Generator().manual_seed(2))
    b = augment_batch(x, full, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and a.shape == (32, 3, 8, 8)
    assert not torch.equal(a, augment_batch(x, full, torch.Generator().manual_seed(3)))


def test_crop_box_applies_to_real_rows_only(tmp_path):
    img = np.zeros((20, 20, 3), np.uint8)
    img[:10, :10] = 255  # white top-left quarter
    Image.fromarray(img).save(tmp_path / "a.png")
    frame = pd.DataFrame({"path": [str(tmp_path / "a.png")] * 2, "label": [0, 0], "source": ["real", "synthetic"]})
    out = load_images(ImageTable(frame, 5), 10, crop_box=(0, 0, 10, 10))
    assert out[0].float().mean() == 255  # cropped to the white quarter
    assert out[1].float().mean() < 100  # synthetic: resized whole


def test_bad_inputs(squares, tmp_path):
    recipe = make_recipe(squares)
    train, val, test = training_splits(recipe)
    with pytest.raises(OdmaugError, match="unknown timm model 'resnet_18'.*resnet18"):
        train_classifier(make_recipe(squares, model="resnet_18"), train, val, test, tmp_path / "a", 0, "cpu", show_progress=False)
    with pytest.raises(OdmaugError, match="pretrained weights not found"):
        train_classifier(make_recipe(squares, pretrained=str(tmp_path / "none.safetensors")), train, val, test,
                         tmp_path / "b", 0, "cpu", show_progress=False)
    other = create_model("resnet10t", 5, SIZE)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "r10.safetensors"))
    with pytest.raises(OdmaugError, match="do not fit this architecture"):
        train_classifier(make_recipe(squares, pretrained=str(tmp_path / "r10.safetensors")), train, val, test,
                         tmp_path / "c", 0, "cpu", show_progress=False)
    with pytest.raises(OdmaugError, match="validation split is empty"):
        train_classifier(recipe, train, val.split("nothing"), test, tmp_path / "d", 0, "cpu", show_progress=False)
    with pytest.raises(OdmaugError, match="grade 3 has no images"):
        few = ImageTable(train.frame[train.frame["label"] != 3], 5, "no-grade-3")
        train_classifier(recipe, few, val, test, tmp_path / "e", 0, "cpu", show_progress=False)
    only_train = Path(squares).parent / "only_val.csv"  # beside it: its relative paths name real images
    pd.read_csv(squares).query("split == 'val'").to_csv(only_train, index=False)
    with pytest.raises(OdmaugError, match="no training rows"):
        training_splits(recipe, only_train)


def test_manifest_without_val_uses_the_recipe_splits(squares, tmp_path):
    recipe = make_recipe(squares)
    frame = pd.read_csv(squares).query("split == 'train'")
    frame["path"] = [str(squares.parent / p) for p in frame["path"]]
    manifest = tmp_path / "balanced.csv"
    frame.assign(source="real").to_csv(manifest, index=False)
    train, val, test = training_splits(recipe, manifest)
    assert len(train) == 100 and len(val) == 30 and len(test) == 30
    assert table_from_spec(str(manifest), recipe.data).splits() == ["train"]


def test_bf16_hazard_detection_and_fp32_fallback():
    from odmaug.classify.predict import bf16_hazards
    from odmaug.classify.step import training_precision

    model = create_model("test_resnet", 5, SIZE)
    assert "layer4.0.conv1" in bf16_hazards(model, 16)
    assert bf16_hazards(model, 64) == []
    cpu = torch.device("cpu")
    assert training_precision(model, "test_resnet", "fp32", 64, cpu) is None
    assert training_precision(model, "test_resnet", "bf16", 16, cpu) is None  # falls back, with a warning
    assert training_precision(model, "test_resnet", "bf16", 64, cpu) == torch.bfloat16
    with pytest.raises(OdmaugError, match="fp16 needs a CUDA device"):
        training_precision(model, "test_resnet", "fp16", 64, cpu)


def test_trained_weights_are_finite(trained):
    _, result = trained
    weights = load_file(str(result.model_path))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
