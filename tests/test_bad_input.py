"""Bad input, one table: every case is one ``error:`` line on stderr, exit code 2, no traceback,
and nothing in the working folder (outputs, runs folder) created or changed.

Each case is (id, command-line args, a fixture that prepares files, expected text of the error
line). ``{tmp}`` in the args is the test's folder (also the working directory and, through
``$ODMAUG_RUNS_DIR``, the parent of the runs folder); ``{smoke}`` is recipes/smoke.yaml.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
from PIL import Image

from helpers import assert_refused

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
Prepare = Callable[[Path], Optional[dict]]


def nothing(tmp: Path) -> None:
    return None


def recipe(text: str) -> Prepare:
    """``{tmp}/r.yaml`` with ``text``."""
    return lambda tmp: (tmp / "r.yaml").write_text(text) and None


def raw_file(name: str, data: bytes) -> Prepare:
    """``{tmp}/<name>`` holding ``data``."""
    return lambda tmp: (tmp / name).write_bytes(data) and None


def manifest(text: str) -> Prepare:
    """``{tmp}/m.csv`` with ``text`` (listed images need not exist: counting does not read them)."""
    return raw_file("m.csv", text.encode())


def png(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(path)


def folder(files: dict[str, bytes | None]) -> Prepare:
    """``{tmp}/imgs/<name>``: a small PNG where the value is None, else those bytes (empty dirs end in /)."""
    def make(tmp: Path) -> None:
        for name, data in files.items():
            target = tmp / "imgs" / name
            if name.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
            elif data is None:
                png(target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    return make


def bomb_png() -> bytes:
    """A PNG header claiming 20,000 x 20,000 pixels (PIL refuses it as a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def fake_run(tmp: Path) -> None:
    """``{tmp}/fake-run``: a run folder (config.yaml) whose generator was never trained."""
    (tmp / "fake-run").mkdir()
    (tmp / "fake-run" / "config.yaml").write_text(SMOKE.read_text())


def no_retinamnist(tmp: Path) -> dict:
    (tmp / "nodata").mkdir()
    return {"ODMAUG_DATA_DIR": None, "ODMAUG_OFFLINE": "1"}


def rows(n_per_grade: int = 10, grades: int = 5) -> list[str]:
    """Manifest rows ``img<g>_<i>.png,<g>`` (the files need not exist for counting)."""
    return [f"img{g}_{i}.png,{g}" for g in range(grades) for i in range(n_per_grade)]


def grouped_manifest(blank_row: int) -> str:
    """50 rows, two per patient, no split column; the group of one row left blank."""
    lines = [f"{r},p{i // 2}" if i != blank_row else f"{r}," for i, r in enumerate(rows())]
    return "path,label,group\n" + "\n".join(lines) + "\n"


PICKLE = pickle.dumps({"conv.weight": [1.0, 2.0]})
M = ["--set", "data.source=manifest", "--set", "data.path={tmp}/m.csv"]
INFO = ["data", "info", "-r", "{smoke}"]
GEN = ["train-generator", "-r", "{smoke}", "--runs-dir", "{tmp}/runs"]


CASES: list[tuple[str, list[str], Prepare, str]] = [
    # recipes
    ("recipe-missing", ["data", "info", "-r", "{tmp}/nope.yaml"], nothing, "recipe not found"),
    ("recipe-invalid-yaml", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("data: [unclosed\n"), "not valid YAML"),
    ("recipe-not-utf8", ["data", "info", "-r", "{tmp}/r.yaml"], raw_file("r.yaml", b"name: \xff\xfe\n"), "not valid YAML"),
    ("recipe-not-mapping", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("- a\n- b\n"), "must be a mapping"),
    ("recipe-unknown-key", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("data:\n  bogus: 1\n"),
     "unknown key 'bogus' in section 'data'"),
    ("recipe-unknown-section", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("trian:\n  steps: 3\n"),
     "unknown key 'trian' in section 'top level'"),
    ("recipe-wrong-type", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("train:\n  steps: many\n"), "train.steps"),
    ("recipe-out-of-range", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("data:\n  num_classes: 1\n"),
     "data.num_classes"),
    ("recipe-name-with-slash", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("name: a/b\n"), "plain folder name"),
    ("recipe-duplicate-key", ["data", "info", "-r", "{tmp}/r.yaml"],
     recipe("data:\n  source: synthetic\ntrain:\n  lr: 1.0e-4\n  steps: 3\n  lr: 2.0e-4\n"),
     "key 'lr' appears twice (lines 4 and 6)"),
    ("recipe-duplicate-section", ["data", "info", "-r", "{tmp}/r.yaml"],
     recipe("data:\n  source: synthetic\ndata:\n  image_size: 16\n"), "key 'data' appears twice"),
    ("set-no-equals", [*INFO, "--set", "trainlr"], nothing, "--set expects section.key=value"),
    ("set-empty-key", [*INFO, "--set", "=3"], nothing, "--set expects section.key=value"),
    ("set-into-value", [*INFO, "--set", "name.x=1"], nothing, "'name' is a value, not a section"),
    ("set-unknown-key", [*INFO, "--set", "data.bogus=1"], nothing, "unknown key 'bogus' in section 'data'"),
    ("set-unknown-sampler", [*INFO, "--set", "sample.sampler=euler"], nothing, "sample.sampler"),
    ("set-unknown-device", [*INFO, "--set", "device=tpu"], nothing, "device"),
    ("set-fractions-sum", [*INFO, "--set", "data.val_fraction=0.5", "--set", "data.test_fraction=0.5"], nothing,
     "fraction"),
    ("manifest-source-without-path", [*INFO, "--set", "data.source=manifest"], nothing, "data.path is required"),
    # data sources
    ("retinamnist-missing-offline", ["data", "info", "--source", "retinamnist", "--data-dir", "{tmp}/nodata"],
     no_retinamnist, "retinamnist.npz"),
    ("retinamnist-wrong-file", ["data", "info", "--source", "retinamnist", "--data-dir", "{tmp}"],
     raw_file("retinamnist.npz", b"not an npz"), "wrong md5"),
    ("folder-missing", [*INFO, "--source", "{tmp}/nope"], nothing, "image folder not found"),
    ("folder-grade-not-integer", [*INFO, "--source", "{tmp}/imgs"], folder({"mild/a.png": None}),
     "is not an integer grade"),
    ("folder-grade-out-of-range", [*INFO, "--source", "{tmp}/imgs"], folder({"7/a.png": None}), "outside 0..4"),
    ("folder-empty", [*INFO, "--source", "{tmp}/imgs"], folder({"0/": None}), "no images found"),
    ("folder-corrupt-image", [*INFO, "--source", "{tmp}/imgs", "--grid", "{tmp}/g.png"],
     folder({"0/bad.png": b"\x89PNG not really"}), "corrupt or unreadable image"),
    ("folder-decompression-bomb", [*INFO, "--source", "{tmp}/imgs", "--grid", "{tmp}/g.png"],
     folder({"0/huge.png": bomb_png()}), "huge.png (too many pixels"),
    ("grid-split-missing", [*INFO, "--source", "{tmp}/imgs", "--grid", "{tmp}/g.png", "--split", "val"],
     folder({"0/a.png": None}), "no 'val' split"),
    ("manifest-missing", [*INFO, "--source", "{tmp}/nope.csv"], nothing, "manifest not found"),
    ("manifest-no-label-column", [*INFO, "--source", "{tmp}/m.csv"], manifest("path\na.png\n"),
     "lacks column(s) label"),
    ("manifest-no-rows", [*INFO, "--source", "{tmp}/m.csv"], manifest("path,label\n"), "manifest has no rows"),
    ("manifest-not-csv", [*INFO, "--source", "{tmp}/m.csv"], raw_file("m.csv", b"\xff\xfe\x00\x81garbage"),
     "not a readable CSV manifest"),
    ("manifest-label-out-of-range", [*INFO, "--source", "{tmp}/m.csv"], manifest("path,label\na.png,9\n"),
     "label 9 (row 1) is outside 0..4"),
    ("manifest-label-not-integer", [*INFO, "--source", "{tmp}/m.csv"], manifest("path,label\na.png,two\n"),
     "is not an integer grade"),
    ("manifest-path-escapes", [*INFO, "--source", "{tmp}/m.csv"], manifest("path,label\n../../etc/passwd,0\n"),
     "escapes the manifest's folder"),
    ("manifest-unknown-split", [*INFO, "--source", "{tmp}/m.csv"], manifest("path,label,split\na.png,0,training\n"),
     "unknown split 'training'"),
    ("manifest-split-empty", [*INFO, "--source", "{tmp}/m.csv:test"], manifest("path,label,split\na.png,0,train\n"),
     "split 'test' is empty"),
    ("manifest-grade-without-images", [*INFO, *M], manifest("path,label\n" + "\n".join(rows(grades=4)) + "\n"),
     "grade 4 has no images"),
    ("manifest-blank-path", [*INFO, "--source", "{tmp}/m.csv"], manifest("path,label\na.png,0\n,1\n"),
     "blank 'path' in row 2"),
    ("manifest-blank-split", [*INFO, "--source", "{tmp}/m.csv"], manifest("path,label,split\na.png,0,train\nb.png,1,\n"),
     "blank 'split' in row 2"),
    ("manifest-blank-split-recipe", [*INFO, *M], manifest("path,label,split\na.png,0,test\nb.png,1,\nc.png,2,\n"),
     "blank 'split' in rows 2, 3"),
    ("manifest-blank-group", [*INFO, *M], manifest(grouped_manifest(blank_row=17)), "blank 'group' in row 18"),
    ("manifest-conflicting-labels", [*INFO, "--source", "{tmp}/m.csv"],
     manifest("path,label\na.png,1\nb.png,2\n./a.png,3\n"), "a.png is listed with different labels: 1 (row 1), 3 (row 3)"),
    # run folders and other commands
    ("generator-name-dotdot", [*GEN, "--name", "../../evil"], nothing, "run name '../../evil'"),
    ("generator-name-slash", [*GEN, "--name", "a/b"], nothing, "run name 'a/b'"),
    ("generator-resume-and-recipe", [*GEN, "--resume", "{tmp}/fake-run"], fake_run, "use either --recipe"),
    ("generator-resume-missing", ["train-generator", "--resume", "{tmp}/nope"], nothing, "run folder not found"),
    ("generator-resume-not-a-run", ["train-generator", "--resume", "{tmp}/imgs"], folder({"0/a.png": None}),
     "is not an odmaug run folder"),
    ("sample-out-not-png", ["sample", "--run", "{tmp}/fake-run", "--out", "{tmp}/s.jpg"], fake_run,
     "--out must be a .png"),
    ("sample-untrained-run", ["sample", "--run", "{tmp}/fake-run", "--out", "{tmp}/s.png"], fake_run, "checkpoint"),
    ("classifier-unknown-model", ["train-classifier", "-r", "{smoke}", "--set", "classifier.model=nope"], nothing,
     "unknown timm model 'nope'"),
    ("classifier-bad-seeds", ["train-classifier", "-r", "{smoke}", "--seeds", "4-2"], nothing, "empty range"),
    ("evaluate-missing-classifier", ["evaluate", "--classifier", "{tmp}/nope", "--data", "synthetic"], nothing,
     "classifier not found"),
    ("balance-unknown-strategy", ["balance", "-r", "{smoke}", "-o", "{tmp}/b.csv", "--strategy", "smote"], nothing,
     "unknown balancing strategy 'smote'"),
    ("balance-share-out-of-range", ["balance", "-r", "{smoke}", "-o", "{tmp}/b.csv", "--max-synthetic-share", "1.5"],
     nothing, "--max-synthetic-share must be in (0, 1]"),
    ("balance-oversample-with-synthetic",
     ["balance", "-r", "{smoke}", "-o", "{tmp}/b.csv", "--strategy", "oversample", "--synthetic", "synthetic"],
     nothing, "do not pass synthetic sets"),
    ("metrics-unknown-extractor", ["metrics", "-r", "{smoke}", "--real", "synthetic", "--generated", "synthetic",
                                   "-e", "bogus"], nothing, "unknown feature extractor 'bogus'"),
    ("metrics-pickle-weights", ["metrics", "-r", "{smoke}", "--real", "synthetic", "--generated", "synthetic",
                                "-e", "inception", "--inception-weights", "{tmp}/w.pth", "--no-cache"],
     raw_file("w.pth", PICKLE), "not a readable weights file"),
    ("recipe-bad-spacing", ["data", "info", "--set", "sample.timestep_spacing=uniform"], nothing, "'trailing', 'leading'"),
    ("recipe-crop-and-box", ["data", "info", "--set", "data.crop=fundus", "--set", "data.crop_box=[0,0,8,8]"], nothing,
     "are alternatives"),
    ("recipe-group-pattern-two-groups", ["data", "info", "--set", "data.group_pattern=(a)(b)"], nothing,
     "needs exactly one capture group"),
    ("translate-missing-run", ["translate", "--run", "{tmp}/nope", "--image", "{tmp}/x.png", "--out", "{tmp}/s.png"],
     nothing, "run folder not found"),
]


@pytest.mark.parametrize("case_id,args,prepare,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(case_id, args, prepare, expected, tmp_path, monkeypatch):
    assert_refused(args, prepare, expected, tmp_path, monkeypatch, SMOKE)


# ------------------------------------------------------------------------ unit checks
def test_sixteen_bit_png_reads_like_its_eight_bit_twin(tmp_path):
    from odmaug.data.table import read_image

    wide = np.linspace(0, 65535, 32 * 64).round().astype(np.uint16).reshape(32, 64)  # a 16-bit gradient
    Image.fromarray(wide).save(tmp_path / "g16.png")
    Image.fromarray(np.rint(wide / 257.0).astype(np.uint8)).save(tmp_path / "g8.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    from odmaug.data.pixels import COLOUR, convert

    got, twin = read_image(str(tmp_path / "g16.png")), read_image(str(tmp_path / "g8.png"))
    assert got.dtype == np.uint16 and np.array_equal(got[:, :, 0], wide)  # 16 bits kept (issue 29)
    got, twin = convert(got, COLOUR), convert(twin, COLOUR)  # as a colour 8-bit table prepares them
    assert got.shape == twin.shape == (32, 64, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - twin.astype(int)).max() <= 1
    assert (got == 255).mean() < 0.01  # not the almost-all-white image a plain convert("RGB") gives


def test_exact_duplicate_rows_warn_once_and_keep_one(tmp_path, monkeypatch):
    from odmaug.data import manifest as sources

    said: list[str] = []
    monkeypatch.setattr(sources, "warn", said.append)
    (tmp_path / "m.csv").write_text(
        "path,label,split,source\na.png,0,train,real\nb.png,1,train,real\na.png,0,train,real\n"
        "./a.png,0,train,real\nb.png,1,train,oversampled\nb.png,1,train,oversampled\n"
    )
    frame = sources.read_manifest(tmp_path / "m.csv", 5)
    assert len(said) == 1 and "2 exact duplicate row(s) dropped (rows 3, 4)" in said[0]
    # a.png once; b.png real once, and both oversampled repeats kept (they are deliberate)
    assert frame["path"].map(lambda p: Path(p).name).tolist() == ["a.png", "b.png", "b.png", "b.png"]


def test_wholly_blank_group_and_split_columns_mean_not_given(tmp_path):
    from odmaug.data.sources import read_manifest

    (tmp_path / "m.csv").write_text("path,label,split,group\na.png,0,,\nb.png,1,,\n")
    frame = read_manifest(tmp_path / "m.csv", 5)  # as odmaug's own manifests write an empty group
    assert frame["split"].isna().all() and frame["group"].isna().all()


def test_strict_yaml_allows_merge_keys_and_refuses_duplicates():
    from odmaug.errors import OdmaugError
    from odmaug.yaml_strict import strict_safe_load

    text = "base: &b\n  lr: 1\n  steps: 2\ntrain:\n  <<: *b\n  lr: 3\n"
    assert strict_safe_load(text, "r.yaml")["train"] == {"lr": 3, "steps": 2}
    with pytest.raises(OdmaugError, match=r"r.yaml: key 'seed' appears twice \(lines 1 and 3\)"):
        strict_safe_load("seed: 1\nname: x\nseed: 2\n", "r.yaml")


def test_create_run_refuses_a_path_name_before_making_anything(tmp_path):
    from odmaug.config import Recipe
    from odmaug.errors import OdmaugError
    from odmaug.runs import create_run

    for name in ("../evil", "a/b", "a\\b", ".hidden", ""):
        with pytest.raises(OdmaugError, match="run name"):
            create_run(Recipe(), tmp_path / "runs", name)
    assert not (tmp_path / "runs").exists()
