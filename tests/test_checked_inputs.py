"""Issue 25 beside its bad-input table (tests/test_bad_input_before_work.py): what still works,
the lock's life cycle, the image check's cache, the probe's accepted sizes, the report's verdict
and KID's scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.errors import OdmaugError

SMOKE = str(Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml")
runner = CliRunner()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lock_left_by_a_dead_process_is_taken_over_and_removed_on_exit(smoke_run, tmp_path):
    import socket

    out = tmp_path / "syn"
    out.mkdir()
    (out / ".odmaug.lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                                  "started": "yesterday", "command": "augment"}))
    result = runner.invoke(app, ["augment", "--run", str(smoke_run), "--target-class", "4", "--n", "2",
                                 "--out", str(out), "--no-grid"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "4").iterdir()) == ["0.png", "1.png"]
    assert not (out / ".odmaug.lock").exists()


def test_a_held_lock_names_its_holder_and_a_refused_run_leaves_no_folder(tmp_path):
    from odmaug.augment.lock import FolderLock

    first = FolderLock(tmp_path / "a" / "b" / "syn")
    first.acquire()
    second = FolderLock(tmp_path / "a" / "b" / "syn")
    with pytest.raises(OdmaugError, match=r"syn is in use by another odmaug augment \(pid \d+ on "):
        second.acquire()
    assert (tmp_path / "a" / "b" / "syn" / ".odmaug.lock").is_file()  # the refusal left the holder's lock
    first.release()
    assert not (tmp_path / "a").exists()  # made for the lock, empty again: gone


def test_data_info_still_counts_a_manifest_with_a_missing_image(tmp_path):
    rows = ["path,label,split"] + [f"img{g}_{s}.png,{g},{s}" for g in range(5) for s in ("train", "val", "test")]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["data", "info", "-r", SMOKE, "--source", str(tmp_path / "m.csv")])
    assert result.exit_code == 0, result.output
    assert "│ test  │" in result.output


def test_image_check_reads_each_header_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    from odmaug.data import verify

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    reads: list[str] = []
    real = verify._header_problem
    monkeypatch.setattr(verify, "_header_problem", lambda p: reads.append(p) or real(p))
    assert verify.file_problem(str(path)) is None and verify.file_problem(str(path)) is None
    assert len(reads) == 1
    path.write_bytes(b"not an image any more")
    assert "corrupt or unreadable image" in verify.file_problem(str(path))
    assert len(reads) == 2


def test_train_classifier_force_replaces_a_finished_classifier_of_other_settings(tmp_path):
    out = tmp_path / "clf"
    args = ["train-classifier", "-r", SMOKE, "--out", str(out), "--runs-dir", str(tmp_path / "runs")]
    assert runner.invoke(app, [*args, "--set", "classifier.epochs=2"]).exit_code == 0
    again = runner.invoke(app, [*args, "--set", "classifier.epochs=2"])  # same settings: reused, no refusal
    assert again.exit_code == 0, again.output
    refused = runner.invoke(app, [*args, "--set", "classifier.epochs=1"])
    assert refused.exit_code == 2 and "classifier.epochs=2 (now 1)" in refused.stderr
    forced = runner.invoke(app, [*args, "--set", "classifier.epochs=1", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "--force: replacing the finished classifier" in forced.stderr
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == 1


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("resnet18", 28), ("test_resnet", 16),
                                       ("efficientnet_b0", 16), ("vit_tiny_patch16_224", 32), ("convnext_atto", 32)])
def test_the_recipes_sizes_and_the_named_smallest_sizes_are_accepted(name, size):
    from odmaug.classify.models import check_classifier

    check_classifier(name, 5, size)  # the quickstart (resnet18, 32 px), the smoke recipe (test_resnet, 16 px)


def test_changing_the_pixels_a_patch_grid_never_reads_changes_nothing():
    """The fact behind the refusal: at 24 px a 16 px patch grid ignores all pixels outside its one patch."""
    import timm
    import torch

    from odmaug.classify.learnable import measure

    model = timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=24).eval()
    x = torch.rand(1, 3, 24, 24)
    y = x.clone()
    y[..., 16:, :], y[..., :, 16:] = torch.rand_like(y[..., 16:, :]), torch.rand_like(y[..., :, 16:])
    with torch.no_grad():
        assert torch.equal(model(x), model(y))
    assert measure(model, 24)[0] == pytest.approx(1 - 256 / 576)


def _results(seeds, images, low, high, name="retina"):
    diff = {"estimate": (low + high) / 2, "ci_low": low, "ci_high": high, "mde": 0.17, "identical": False}
    return {"name": name, "seeds": seeds, "num_classes": 5, "arms": {"real": {"summary": {}}, "odm": {"summary": {}}},
            "bootstrap": {"n_images": images, "n_seeds": len(seeds), "resamples": 2000,
                          "paired": {"odm": {"vs_real": {"qwk": diff}}}}}


@pytest.mark.parametrize("results,expected", [
    (_results([0], 23, 0.02, 0.4, "smoke"), "Verdict: not evidence. This is a plumbing-size run (1 seed, 23 test images, "
                                            "the smoke recipe"),
    (_results([0, 1], 400, 0.02, 0.4), "plumbing-size run (2 seeds;"),
    (_results([0, 1, 2], 400, -0.1, 0.1), "Verdict: no arm changes QWK detectably against real-only training"),
    (_results([0, 1, 2], 400, 0.01, 0.09), "excludes 0 for odm +0.050 [+0.010, +0.090]"),
])
def test_the_verdict_sentence_says_what_the_run_can_and_cannot_show(results, expected):
    from odmaug.benchmark.report.blocks import report_blocks
    from odmaug.benchmark.report.verdict import verdict

    assert expected in verdict(results) and "MDE 0.17 QWK" in verdict(results)
    assert report_blocks({**results, "paired": {}})[0] == ("p", verdict(results))  # the report's first sentence


def test_large_kid_values_are_written_as_a_power_of_ten():
    from odmaug.metrics.generative_table import kid_text

    assert kid_text(457380.347) == "4.57×10⁸" and kid_text(0.9996e6) == "1.00×10⁹"
    assert kid_text(26.5017189) == "26502" and kid_text(2.1e-5) == "0.0210"  # below 10⁵: plain, as before
