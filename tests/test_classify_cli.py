"""``odmaug train-classifier`` and ``odmaug evaluate`` end to end on the smoke recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.commands.classify import parse_seeds
from odmaug.errors import OdmaugError

SMOKE = str(Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml")
FAST = ["--set", "classifier.epochs=2"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = run("train-classifier", "--recipe", SMOKE, "--runs-dir", str(runs), "--device", "cpu", *FAST)
    assert result.exit_code == 0, result.output
    (root,) = list(runs.iterdir())
    return root, result.output


def test_train_classifier_writes_a_run(trained_run):
    root, output = trained_run
    folder = root / "classifier"
    for name in ("model.safetensors", "classifier.json", "config.yaml", "metrics.json", "predictions.csv"):
        assert (folder / name).is_file(), name
    assert "QWK" in output and "per grade (test)" in output and "img/s" in output
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["model"] == "test_resnet" and len(metrics["history"]) == 2
    events = [json.loads(line)["event"] for line in (root / "log.jsonl").read_text().splitlines()]
    assert events.count("classifier_epoch") == 2


def test_evaluate_split_and_manifest(trained_run, tmp_path):
    root, _ = trained_run
    result = run("evaluate", "--classifier", str(root), "--data", "synthetic:test", "--out", str(tmp_path / "e"))
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    training = json.loads((root / "classifier" / "metrics.json").read_text())
    assert saved["overall"]["qwk"] == pytest.approx(training["test"]["qwk"])
    assert (tmp_path / "e" / "confusion.png").stat().st_size > 1000
    # The predictions file is itself a manifest; marked synthetic, it is a grade-fidelity check.
    preds = pd.read_csv(root / "classifier" / "predictions.csv")
    manifest = tmp_path / "generated.csv"
    preds.assign(source="synthetic")[["path", "label", "source"]].to_csv(manifest, index=False)
    result = run("evaluate", "--classifier", str(root / "classifier"), "--data", str(manifest))
    assert result.exit_code == 0, result.output
    # a second manifest with the same file name gets its own folder: no evaluation overwrites another
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "generated.csv").write_bytes(manifest.read_bytes())
    result = run("evaluate", "--classifier", str(root / "classifier"), "--data", str(tmp_path / "other" / "generated.csv"))
    assert result.exit_code == 0, result.output
    folders = sorted((root / "classifier" / "evaluations").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("generated-") and (f / "evaluation.json").is_file() for f in folders)


def test_evaluate_rejects_grades_the_model_does_not_know(trained_run, tmp_path):
    root, _ = trained_run
    manifest = tmp_path / "bad.csv"
    pd.DataFrame({"path": ["synthetic://32/0/1/0"], "label": [7]}).to_csv(manifest, index=False)
    result = run("evaluate", "--classifier", str(root), "--data", str(manifest))
    assert result.exit_code == 2
    assert "trained for grades 0..4" in result.output and "Traceback" not in result.output


def test_bad_inputs_are_one_line(tmp_path):
    result = run("train-classifier", "--recipe", SMOKE, "--runs-dir", str(tmp_path), "--set", "classifier.model=resnet_18")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: unknown timm model 'resnet_18'") and "resnet18" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written
    result = run("train-classifier", "--recipe", SMOKE, "--runs-dir", str(tmp_path),
                 "--set", f"classifier.pretrained={tmp_path / 'missing.safetensors'}", *FAST)
    assert result.exit_code == 2 and "pretrained weights not found" in result.output
    result = run("evaluate", "--classifier", str(tmp_path / "nothing"), "--data", "synthetic:test")
    assert result.exit_code == 2 and "classifier not found" in result.output
    result = run("train-classifier", "--recipe", SMOKE, "--seeds", "3-1")
    assert result.exit_code == 2 and "empty range" in result.output


def test_seeds_option_summarises(tmp_path):
    out = tmp_path / "multi"
    result = run("train-classifier", "--recipe", SMOKE, "--out", str(out), "--seeds", "0,1", "--set", "classifier.epochs=1")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["summary"]["test"]["qwk"]["n"] == 2
    assert "95% interval" in result.output


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5,1") == [1, 3, 4, 5]
    with pytest.raises(OdmaugError):
        parse_seeds("a")
