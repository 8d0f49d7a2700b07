"""The synthetic-row levers of classifier training (issue 19, item 3): the synthetic share of every
batch and label smoothing of synthetic rows; exact, seeded, resumable, inactive without synthetic
rows, validated at recipe load, and through the benchmark end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from odmaug.classify.levers import SyntheticLevers, keyed_settings, mixed_epoch_order, synthetic_per_batch
from odmaug.classify.datasets import training_splits
from odmaug.classify.state import fingerprint
from odmaug.classify.step import smoothed_cross_entropy
from odmaug.classify.train import train_classifier
from odmaug.cli import app
from odmaug.config import dump_recipe, load_recipe, recipe_from_dict
from odmaug.data import ImageTable
from odmaug.errors import OdmaugError
from helpers import classifier_cut_after_one_epoch
from test_classify_train import make_recipe, write_squares

LEVERS = {"synthetic_batch_share": 0.4, "synthetic_label_smoothing": 0.3}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The squares set, its ``synth`` rows turned into synthetic training rows: 60 real + 40
    synthetic training images, real val and test."""
    root = tmp_path_factory.mktemp("mixed")
    manifest = write_squares(root, per_split=(("train", 12), ("synth", 8), ("val", 6), ("test", 6)))
    frame = pd.read_csv(manifest)
    frame["source"] = np.where(frame["split"] == "synth", "synthetic", "real")
    frame["split"] = frame["split"].replace("synth", "train")
    frame.to_csv(manifest, index=False)
    return manifest


def _labels_and_mask(n=150, n_synthetic=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n,), generator=g)
    synthetic = torch.zeros(n, dtype=torch.bool)
    synthetic[torch.randperm(n, generator=g)[:n_synthetic]] = True
    return labels, synthetic


@pytest.mark.parametrize("share, batch, balanced", [(0.5, 16, False), (0.3, 16, False), (0.05, 10, True), (0.9, 7, False)])
def test_every_batch_holds_the_share(share, batch, balanced):
    labels, synthetic = _labels_and_mask()
    steps = len(labels) // batch
    order = mixed_epoch_order(labels, synthetic, share, batch, steps, balanced, torch.Generator().manual_seed(0))
    assert order.shape == (steps * batch,)
    per_batch = synthetic[order].view(steps, batch).sum(1)
    assert all(abs(int(k) - round(share * batch)) <= 1 for k in per_batch)
    assert abs(int(per_batch.sum()) - share * batch * steps) <= 0.5 + 1e-9  # the epoch as a whole: the share
    assert per_batch.tolist() == synthetic_per_batch(share, batch, steps)
    if not balanced:  # shuffled passes: no row repeats before its pool is used up
        real_rows = order[~synthetic[order]]
        assert len(set(real_rows.tolist())) == min(len(real_rows), int((~synthetic).sum()))


def test_same_seed_same_order_and_resume_continues_it():
    labels, synthetic = _labels_and_mask()

    def epochs(generator, n):
        return [mixed_epoch_order(labels, synthetic, 0.5, 16, 9, False, generator) for _ in range(n)]

    full = epochs(torch.Generator().manual_seed(3), 3)
    assert all(torch.equal(a, b) for a, b in zip(full, epochs(torch.Generator().manual_seed(3), 3)))
    assert not torch.equal(full[0], epochs(torch.Generator().manual_seed(4), 1)[0])
    # A run cut after epoch 1 restores the generator state saved then (classify/state.py does so).
    first = torch.Generator().manual_seed(3)
    epochs(first, 1)
    resumed = torch.Generator()
    resumed.set_state(first.get_state())
    assert all(torch.equal(a, b) for a, b in zip(full[1:], epochs(resumed, 2)))


def test_a_share_needs_both_pools():
    labels, _ = _labels_and_mask()
    with pytest.raises(OdmaugError, match="both synthetic and other"):
        mixed_epoch_order(labels, torch.zeros(len(labels), dtype=torch.bool), 0.5, 16, 9, False, torch.Generator())


def test_per_sample_smoothing_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(32, 5, generator=g) * 3, torch.randint(0, 5, (32,), generator=g)
    for eps in (0.0, 0.1, 0.37, 0.9):
        ours = smoothed_cross_entropy(logits, labels, torch.full((32,), eps))
        assert ours.item() == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=eps).item(), abs=1e-6)
    eps = torch.rand(32, generator=g) * 0.9
    per_row = torch.stack([F.cross_entropy(logits[i : i + 1], labels[i : i + 1], label_smoothing=float(eps[i]))
                           for i in range(32)])
    assert smoothed_cross_entropy(logits, labels, eps).item() == pytest.approx(per_row.mean().item(), abs=1e-6)


def test_levers_act_only_with_synthetic_rows(mixed):
    recipe = make_recipe(mixed, **LEVERS)
    train, _, _ = training_splits(recipe)
    assert SyntheticLevers.active(recipe.classifier, train).record() == LEVERS
    real = ImageTable(train.frame[train.frame["source"] == "real"].reset_index(drop=True), 5, "real")
    assert SyntheticLevers.active(recipe.classifier, real).record() == {}
    plain = make_recipe(mixed)
    assert keyed_settings(recipe.classifier, real) == keyed_settings(plain.classifier, real)
    assert keyed_settings(recipe.classifier, train) == {**keyed_settings(plain.classifier, train), **LEVERS}


def test_unset_levers_leave_dumps_and_keys_as_before(mixed):
    plain = make_recipe(mixed)
    dumped = plain.to_dict()["classifier"]
    assert not set(LEVERS) & set(dumped)  # stage keys hashed over the section stay as they were
    train, val, test = training_splits(plain)
    before = fingerprint(plain, train, val, test, 0)
    with_levers = make_recipe(mixed, **LEVERS)
    assert fingerprint(with_levers, train, val, test, 0) != before
    assert recipe_from_dict(yaml.safe_load(dump_recipe(with_levers))).classifier == with_levers.classifier


def test_training_with_levers_resumes_exactly(mixed, tmp_path):
    recipe = make_recipe(mixed, epochs=2, **LEVERS)
    train, val, test = training_splits(recipe)
    full = classifier_cut_after_one_epoch(recipe, (train, val, test), tmp_path)
    resumed = train_classifier(recipe, train, val, test, tmp_path / "cut", 3, "cpu", show_progress=False)
    assert resumed.resumed_from == 1
    a, b = load_file(str(full.model_path)), load_file(str(resumed.model_path))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]
    assert json.loads(full.metrics_path.read_text())["train"]["synthetic_levers"] == LEVERS
    # Without the levers the same table trains otherwise: the key changed, nothing is reused.
    plain = train_classifier(make_recipe(mixed, epochs=2), train, val, test, tmp_path / "cut", 3, "cpu",
                             show_progress=False)
    assert plain.resumed_from == 0
    assert not all(torch.equal(a[k], v) for k, v in load_file(str(plain.model_path)).items())


def test_inactive_levers_reuse_the_real_classifier(mixed, tmp_path):
    plain = make_recipe(mixed, epochs=1)
    train, val, test = training_splits(plain)
    real = ImageTable(train.frame[train.frame["source"] == "real"].reset_index(drop=True), 5, "real")
    first = train_classifier(plain, real, val, test, tmp_path / "real", 0, "cpu", show_progress=False)
    again = train_classifier(make_recipe(mixed, epochs=1, **LEVERS), real, val, test, tmp_path / "real", 0, "cpu",
                             show_progress=False)
    assert again.resumed_from == -1 and again.test == first.test


@pytest.mark.parametrize("setting", ["synthetic_batch_share=0", "synthetic_batch_share=1", "synthetic_batch_share=-0.2",
                                     "synthetic_batch_share=half", "synthetic_label_smoothing=1",
                                     "synthetic_label_smoothing=-0.1"])
def test_bad_lever_values_are_one_error(smoke_recipe_path, tmp_path, setting):
    with pytest.raises(OdmaugError) as err:
        load_recipe(smoke_recipe_path, [f"classifier.{setting}"])
    assert f"classifier.{setting.split('=')[0]}" in str(err.value) and "\n" not in str(err.value)
    result = CliRunner().invoke(app, ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path),
                                      "--set", f"classifier.{setting}", "--dry-run"])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [result.output.strip()]


def test_benchmark_with_levers_end_to_end(tmp_path, smoke_recipe_path):
    args = ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--set", "classifier.synthetic_batch_share=0.5", "--set", "classifier.synthetic_label_smoothing=0.2",
            "--set", "benchmark.arms=[real,odm]", "--set", "classifier.epochs=2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    bench = next((tmp_path / "runs").glob("*-benchmark-smoke"))
    assert list(json.loads((bench / "results.json").read_text())["arms"]) == ["real", "odm"]
    expected = {"synthetic_batch_share": 0.5, "synthetic_label_smoothing": 0.2}
    odm = json.loads((bench / "classifiers" / "odm-seed0.json").read_text())
    assert odm["synthetic_levers"] == expected
    assert json.loads((bench / "classifiers" / "real-seed0.json").read_text())["synthetic_levers"] == {}
    metrics = json.loads((Path(odm["dir"]) / "metrics.json").read_text())
    assert metrics["train"]["synthetic_levers"] == expected and metrics["train"]["sources"]["synthetic"] > 0
    recipe = load_recipe(bench / "config.yaml")
    assert (recipe.classifier.synthetic_batch_share, recipe.classifier.synthetic_label_smoothing) == (0.5, 0.2)
