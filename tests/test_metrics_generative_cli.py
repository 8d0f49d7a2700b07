"""Real-feature cache (reuse and invalidation) and the ``odmaug metrics`` command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.data import crops
from odmaug.data import decode_cache as data_cache
from odmaug.data.sources import folder_table
from odmaug.data.synthetic import draw_fundus
from odmaug.data.table import ImageTable
from odmaug.metrics.feature_cache import cached_features
from odmaug.metrics.features import REGISTRY

runner = CliRunner()


def write_folder(root: Path, per_grade: int, seed: int, grades: int = 3, size: int = 24) -> Path:
    """``root/<grade>/<i>.png`` drawn from the synthetic fundus generator."""
    for grade in range(grades):
        (root / str(grade)).mkdir(parents=True, exist_ok=True)
        for i in range(per_grade):
            Image.fromarray(draw_fundus(grade, grades, size, seed, grade * 100 + i)).save(root / str(grade) / f"{i}.png")
    return root


class Counter:
    """A stand-in for feature extraction that counts how often it really ran."""

    def __init__(self, table: ImageTable) -> None:
        self.table, self.calls = table, 0

    def __call__(self):
        self.calls += 1
        return np.random.default_rng(self.calls).normal(size=(len(self.table), 4)).astype(np.float32), self.table.labels


def test_cache_reuse_and_invalidation(tmp_path):
    root = write_folder(tmp_path / "real", per_grade=3, seed=0)
    table = ImageTable(folder_table(root, 3).assign(split="train"), 3, "real")
    cache = tmp_path / "cache"
    counter = Counter(table)

    def run(t=table, size=16, crop=None, ident="ext-a"):
        counter.table = t
        return cached_features(t, size, crop, ident, counter, cache)

    first = run()
    assert first[2]["cache"] == "miss" and counter.calls == 1
    again = run()
    assert again[2]["cache"] == "hit" and counter.calls == 1 and np.array_equal(again[0], first[0])
    assert Path(again[2]["path"]).suffix == ".npz" and not list(cache.glob(".*tmp"))  # atomic, no leftovers
    for change in ({"size": 32}, {"crop": (0, 0, 20, 20)}, {"ident": "ext-b"}):
        assert run(**change)[2]["cache"] == "miss"
    calls = counter.calls
    # Editing one image's pixels changes the key, even with the same file name and size.
    Image.fromarray(draw_fundus(2, 3, 24, 99, 7)).save(root / "1" / "0.png")
    assert run()[2]["cache"] == "miss" and counter.calls == calls + 1
    # Relabelling one row, or dropping one, changes it too.
    relabelled = ImageTable(table.frame.assign(label=np.roll(table.labels, 1)), 3, "real")
    assert run(t=relabelled)[2]["cache"] == "miss"
    assert run(t=ImageTable(table.frame.iloc[1:], 3, "real"))[2]["cache"] == "miss"
    # Marking one row generated changes it: data.crop skips generated rows, so its pixels change.
    assert run(t=ImageTable(table.frame, 3, "real", crop="fundus"))[2]["cache"] == "miss"
    generated = table.frame.assign(source=["synthetic"] + ["real"] * (len(table) - 1))
    assert run(t=ImageTable(generated, 3, "real", crop="fundus"))[2]["cache"] == "miss"
    # A damaged entry is recomputed (with a warning), not trusted and not fatal.
    path = Path(run()[2]["path"])
    path.write_bytes(b"garbage")
    assert run()[2]["cache"] == "miss" and run()[2]["cache"] == "hit"
    # No identity (an extractor without one): never cached.
    assert run(ident=None)[2]["cache"] == "off"


@pytest.mark.parametrize("change", ["prep_version", "pillow", "crop_code"])
def test_cache_misses_when_image_preparation_changes(tmp_path, monkeypatch, change):
    # What re-decodes the images (the decode cache's key) must recompute their features too.
    root = write_folder(tmp_path / "real", per_grade=2, seed=0)
    table = ImageTable(folder_table(root, 3).assign(split="train"), 3, "real", crop="fundus")
    counter = Counter(table)

    def run() -> str:
        return cached_features(table, 16, None, "ext-a", counter, tmp_path / "cache")[2]["cache"]

    def decode_entry() -> Path:
        return data_cache.entry_path(tmp_path / "images", table.paths[0], "fundus", None, 16)

    assert run() == "miss" and run() == "hit"
    before = decode_entry()
    if change == "prep_version":
        monkeypatch.setattr(data_cache, "PREP_VERSION", data_cache.PREP_VERSION + 1)
    elif change == "pillow":
        monkeypatch.setattr(PIL, "__version__", PIL.__version__ + ".post1")
    else:  # an edited threshold in the crop code, without a PREP_VERSION bump
        edited = tmp_path / "crops.py"
        edited.write_text(Path(crops.__file__).read_text().replace("FUNDUS_FLOOR = 12", "FUNDUS_FLOOR = 13"))
        monkeypatch.setattr(crops, "__file__", str(edited))
    assert decode_entry() != before
    assert run() == "miss" and run() == "hit" and counter.calls == 2


@pytest.fixture(scope="module")
def domain_classifier(tmp_path_factory) -> str:
    spec, _ = REGISTRY.get("domain").example(tmp_path_factory.mktemp("domain"))
    return spec


def test_cli_domain_extractor_on_synthetic_data(tmp_path, smoke_recipe_path, domain_classifier):
    out = tmp_path / "metrics.json"
    args = ["metrics", "--real", "synthetic:train", "--generated", "synthetic:test", "-e", domain_classifier,
            "--recipe", str(smoke_recipe_path), "--set", "metrics.min_per_grade=6", "--set", "metrics.kid_subsets=5",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    (res,) = data["results"]
    name = f"domain:{Path(domain_classifier.removeprefix('domain:')).parent.name}"  # <run>/classifier -> run name
    assert res["extractor"] == name and res["image_size"] == 16
    assert res["overall"]["n_real"] == 78 and res["overall"]["n_generated"] == 23  # smoke split sizes (train [28, 17, 14, 11, 8])
    assert res["overall"]["fid_small_set"] is True and np.isfinite(res["overall"]["fid"])
    grades = {r["grade"]: r for r in res["per_grade"]}
    assert grades[0]["too_few"] is False and grades[4]["too_few"] is True  # 8 vs 3 test images of grade 4
    assert name in result.output and "too few" in result.output and "*" in result.output
    assert "cache miss" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "cache hit" in again.output
    assert json.loads(out.read_text())["results"][0]["overall"] == res["overall"]  # same seed, same figures


def test_cli_inception_end_to_end_with_a_local_weights_file(tmp_path, monkeypatch):
    _, cfg = REGISTRY.get("inception").example(tmp_path)  # random network saved to disk: the loading path
    real = write_folder(tmp_path / "real", per_grade=3, seed=0, grades=2, size=20)
    fake = write_folder(tmp_path / "fake", per_grade=3, seed=1, grades=2, size=28)  # another resolution
    Image.open(fake / "0" / "0.png").convert("L").save(fake / "0" / "0.png")  # and a grayscale file
    out = tmp_path / "m.json"
    result = runner.invoke(app, [
        "metrics", "--real", str(real), "--generated", str(fake), "-e", "inception",
        "--inception-weights", cfg.inception_weights, "--set", "data.num_classes=2", "--set", "metrics.min_per_grade=3",
        "--set", "metrics.nearest_k=2", "--set", "metrics.kid_subsets=2", "--set", "metrics.batch_size=8",
        "--size", "20", "--device", "cpu", "--out", str(out), "--no-cache",
    ])
    assert result.exit_code == 0, result.output
    (res,) = json.loads(out.read_text())["results"]
    assert res["extractor"] == "inception" and res["feature_dim"] == 2048 and res["cache"]["cache"] == "off"
    assert "sha256:" in res["extractor_identity"]
    assert [r["n_real"] for r in res["per_grade"]] == [3, 3] and not res["per_grade"][0]["too_few"]
    assert res["overall"]["fid"] is not None and res["overall"]["precision"] is not None


def test_cli_offline_without_weights_says_how_to_get_them(tmp_path, monkeypatch, smoke_recipe_path):
    monkeypatch.setenv("ODMAUG_OFFLINE", "1")
    monkeypatch.delenv("ODMAUG_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["metrics", "--real", "synthetic:train", "--generated", "synthetic:test",
                                 "-e", "inception", "-r", str(smoke_recipe_path), "--out", str(out)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Inception metrics skipped" in errors[0] and "--inception-weights" in errors[0]
    assert result.output.count("Inception metrics skipped") == 1  # said once, not as a warning and an error
    assert "Traceback" not in result.output and not out.exists()


def test_cli_bad_inputs_are_one_line(tmp_path, smoke_recipe_path):
    base = ["metrics", "-r", str(smoke_recipe_path), "--generated", "synthetic:test"]
    result = runner.invoke(app, [*base, "--real", "synthetic:train", "-e", "clip"])
    assert result.exit_code == 2 and "unknown feature extractor 'clip'" in result.output
    result = runner.invoke(app, [*base, "--real", str(tmp_path / "missing.csv"), "-e", "inception"])
    assert result.exit_code == 2 and "manifest not found" in result.output
    result = runner.invoke(app, [*base, "--real", "synthetic:train", "-e", f"domain:{tmp_path}"])
    assert result.exit_code == 2 and "no trained classifier here" in result.output
    assert "Traceback" not in result.output
