"""Bad input found before any work (issue 25), one table as in tests/test_bad_input.py: every case
is one ``error:`` line on stderr, exit code 2, no traceback, and nothing in the working folder
(outputs, runs folder) created or changed.

The cases: a missing or unreadable image in any split (refused before training, ``--dry-run``
too), models that run but cannot learn, ``retinamnist://`` indices outside their split, finished
classifiers overwritten, input silently reinterpreted (empty ``--seeds`` or recipe, YAML booleans
as numbers, absurd sizes), and a second ``augment`` into a folder another one is writing.
``{tmp}`` is the test's folder (and working directory); ``{smoke}`` is recipes/smoke.yaml.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
from PIL import Image

from helpers import assert_refused
from test_bad_input import SMOKE, bomb_png, nothing, recipe

Prepare = Callable[[Path], Optional[dict]]
SPLITS = {"train": 6, "val": 2, "test": 2}


def _png_bytes(value: int = 90) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def split_set(missing: tuple[str, ...] = (), replace: Optional[dict[str, bytes]] = None) -> Prepare:
    """``{tmp}/m.csv`` listing 16 px PNGs ``{tmp}/imgs/<split>_<grade>_<i>.png`` (6, 2 and 2 per grade
    in train, val, test); ``missing`` are listed but not there, ``replace`` holds other bytes."""
    def make(tmp: Path) -> None:
        (tmp / "imgs").mkdir()
        rows = ["path,label,split"]
        for split, n in SPLITS.items():
            for g in range(5):
                for i in range(n):
                    name = f"{split}_{g}_{i}.png"
                    rows.append(f"imgs/{name},{g},{split}")
                    if name not in missing:
                        data = (replace or {}).get(name, _png_bytes(20 * g + i))
                        (tmp / "imgs" / name).write_bytes(data)
        (tmp / "m.csv").write_text("\n".join(rows) + "\n")
    return make


def folder_set(corrupt: str) -> Prepare:
    """``{tmp}/imgs/<grade>/<i>.png`` (10 per grade, no splits); ``corrupt`` (``"<grade>/<i>.png"``) is not a PNG."""
    def make(tmp: Path) -> None:
        for g in range(5):
            (tmp / "imgs" / str(g)).mkdir(parents=True)
            for i in range(10):
                data = b"\x89PNG not really" if f"{g}/{i}.png" == corrupt else _png_bytes(20 * g + i)
                (tmp / "imgs" / str(g) / f"{i}.png").write_bytes(data)
    return make


def _need_retinamnist() -> None:
    from odmaug.data import retinamnist
    from odmaug.errors import OdmaugError

    try:
        retinamnist.locate(None, download=False)
    except OdmaugError:
        pytest.skip("retinamnist.npz not available: set ODMAUG_DATA_DIR to the folder that holds it")


def ref_manifest(bad: str, split: str = "train") -> Prepare:
    """``{tmp}/m.csv`` of ``retinamnist://`` references, split column given: grade 0's first row is ``bad``."""
    def make(tmp: Path) -> None:
        _need_retinamnist()
        rows = ["path,label,split"]
        for name, n in SPLITS.items():
            rows += [f"retinamnist://{name}/{10 * g + i},{g},{name}" for g in range(5) for i in range(n)]
        first = rows.index(f"retinamnist://{split}/0,0,{split}")
        rows[first] = f"{bad},0,{split}"
        (tmp / "m.csv").write_text("\n".join(rows) + "\n")
    return make


def fake_classifier(folder: str = "clf", config_overrides: tuple[str, ...] = ()) -> Prepare:
    """``{tmp}/<folder>``: a finished classifier (weights, metrics.json with a key of other inputs,
    the smoke recipe as its config.yaml, plus ``config_overrides``)."""
    def make(tmp: Path) -> None:
        from odmaug.config import dump_recipe, load_recipe

        out = tmp / folder
        out.mkdir(parents=True)
        meta = {"model": "test_resnet", "num_classes": 5, "image_size": 16}
        (out / "classifier.json").write_text(json.dumps(meta))
        (out / "model.safetensors").write_bytes(b"weights of an 8-epoch classifier")
        (out / "metrics.json").write_text(json.dumps({"key": "the key of other inputs"}))
        (out / "config.yaml").write_text(dump_recipe(load_recipe(SMOKE, list(config_overrides))))
    return make


_GENERATOR: dict[str, Path] = {}


def generator_run(tmp: Path) -> None:
    """``{tmp}/gen``: a copy of a smoke generator trained for 2 steps (trained once per session)."""
    if "run" not in _GENERATOR:
        from odmaug.config import load_recipe
        from odmaug.diffusion.trainer import train_generator
        from odmaug.runs import create_run

        cfg = load_recipe(SMOKE, ["train.steps=2", "train.sample_every=1000"])
        run = create_run(cfg, Path(tempfile.mkdtemp(prefix="odmaug-gen-")))
        train_generator(run, cfg, show_progress=False)
        _GENERATOR["run"] = run.root
    shutil.copytree(_GENERATOR["run"], tmp / "gen")


def locked(where: str, host: Optional[str] = None) -> Prepare:
    """The generator run, and ``{tmp}/<where>/.odmaug.lock`` held by this live process (or another host)."""
    def make(tmp: Path) -> None:
        generator_run(tmp)
        (tmp / where).mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": host or socket.gethostname(), "started": "2026-12-01T10:00:00+0000",
                  "command": "augment"}
        (tmp / where / ".odmaug.lock").write_text(json.dumps(record))
    return make


def truncated_png() -> bytes:
    data = _png_bytes()
    return data[: len(data) * 2 // 3]


M = ["--set", "data.source=manifest", "--set", "data.path={tmp}/m.csv", "--set", "data.min_split_images=0"]
CLS = ["train-classifier", "-r", "{smoke}", *M, "--set", "classifier.epochs=1"]
BENCH = ["benchmark", "-r", "{smoke}", *M, "--set", "classifier.epochs=1", "--set", "train.steps=2"]
GEN = ["train-generator", "-r", "{smoke}", *M, "--set", "train.steps=2"]
INFO = ["data", "info", "-r", "{smoke}"]
REFS = ["data", "info", "-r", "{smoke}", "--source", "{tmp}/m.csv", "--grid", "{tmp}/g.png", "--set",
        "data.min_split_images=0"]
TRANSLATE = ["translate", "--run", "{tmp}/gen", "--out", "{tmp}/s.png", "--image"]
AUGMENT = ["augment", "--run", "{tmp}/gen", "--target-class", "4", "--n", "2"]
SMOKE_CLS = ["train-classifier", "-r", "{smoke}", "--set", "classifier.epochs=1"]
MISSING_TEST = split_set(missing=("test_3_1.png",))
MISSING_VAL = split_set(missing=("val_2_1.png",))
VIT = ["--set", "classifier.model=vit_tiny_patch16_224", "--set", "classifier.image_size=24"]
EFFNET = ["--set", "classifier.model=efficientnet_b0", "--set", "classifier.image_size=8"]
HUGE = "100000000000000000000000"

CASES: list[tuple[str, list[str], Prepare, str | tuple[str, ...]]] = [
    # 1. every image of every split exists and decodes, checked before the first step
    ("classifier-missing-val", CLS, MISSING_VAL, ("image not found:", "val_2_1.png (split 'val'; 1 of the 50")),
    ("classifier-missing-test", CLS, MISSING_TEST, "test_3_1.png (split 'test'"),
    ("classifier-missing-train", CLS, split_set(missing=("train_0_3.png",)), "train_0_3.png (split 'train'"),
    ("classifier-two-missing", CLS, split_set(missing=("val_1_0.png", "test_4_1.png")), "2 of the 50 images of m"),
    ("classifier-out-missing-test", [*CLS, "--out", "{tmp}/clf"], MISSING_TEST, "test_3_1.png (split 'test'"),
    ("classifier-seeds-missing-test", [*CLS, "--seeds", "0,1"], MISSING_TEST, "test_3_1.png (split 'test'"),
    ("classifier-manifest-option-missing-test",
     ["train-classifier", "-r", "{smoke}", "--manifest", "{tmp}/m.csv", "--set", "classifier.epochs=1",
      "--set", "data.min_split_images=0"], MISSING_TEST, "test_3_1.png (split 'test'"),
    ("classifier-corrupt-test", CLS, split_set(replace={"test_1_0.png": b"\x89PNG not really"}),
     ("corrupt or unreadable image", "test_1_0.png")),
    ("classifier-empty-file-val", CLS, split_set(replace={"val_0_0.png": b""}),
     ("corrupt or unreadable image", "val_0_0.png")),
    ("classifier-truncated-png-test", CLS, split_set(replace={"test_2_1.png": truncated_png()}),
     ("corrupt or unreadable image", "test_2_1.png")),
    ("classifier-bomb-test", CLS, split_set(replace={"test_0_0.png": bomb_png()}), "test_0_0.png (too many pixels"),
    ("benchmark-dry-run-missing-test", [*BENCH, "--dry-run", "--no-estimate"], MISSING_TEST,
     "test_3_1.png (split 'test'"),
    ("benchmark-dry-run-missing-val", [*BENCH, "--dry-run", "--no-estimate"], MISSING_VAL, "val_2_1.png (split 'val'"),
    ("benchmark-dry-run-estimate-missing-test", [*BENCH, "--dry-run"], MISSING_TEST, "test_3_1.png (split 'test'"),
    ("benchmark-missing-test", BENCH, MISSING_TEST, "test_3_1.png (split 'test'"),
    ("benchmark-dry-run-folder-corrupt",
     ["benchmark", "-r", "{smoke}", "--set", "data.source=folder", "--set", "data.path={tmp}/imgs", "--set",
      "data.min_split_images=0", "--dry-run", "--no-estimate"], folder_set("3/7.png"),
     ("corrupt or unreadable image", "3/7.png")),
    ("generator-missing-test", GEN, MISSING_TEST, "test_3_1.png (split 'test'"),
    ("generator-missing-val", GEN, MISSING_VAL, "val_2_1.png (split 'val'"),
    ("evaluate-missing-test", ["evaluate", "-r", "{smoke}", "--classifier", "{tmp}/clf", "--data", "{tmp}/m.csv:test"],
     lambda tmp: (MISSING_TEST(tmp), fake_classifier()(tmp)) and None, "test_3_1.png (split 'test'"),
    ("metrics-real-missing", ["metrics", "-r", "{smoke}", "--real", "{tmp}/m.csv:test", "--generated", "synthetic",
                              "-e", "inception", "--no-cache"], MISSING_TEST, "test_3_1.png (split 'test'"),
    ("balance-missing-test", ["balance", "-r", "{smoke}", *M, "-o", "{tmp}/b.csv"], MISSING_TEST,
     "test_3_1.png (split 'test'"),
    ("classifier-manifest-ref-beyond-split", CLS, ref_manifest("retinamnist://val/120", "val"),
     "retinamnist://val/120: index 120 is outside 0..119 (RetinaMNIST's val split has 120 images)"),
    ("benchmark-dry-run-manifest-ref-negative", [*BENCH, "--dry-run", "--no-estimate"],
     ref_manifest("retinamnist://test/-1", "test"), "retinamnist://test/-1: not a RetinaMNIST image reference"),
    # 2. models that run but cannot learn at the size
    ("classifier-vit-24-unseen-pixels", [*SMOKE_CLS, *VIT], nothing,
     ("vit_tiny_patch16_224 runs at 24x24 px but cannot learn", "never read 56% of each image",
      "smallest size above 24 px where it can is 32 px")),
    ("classifier-vit-40-unseen-pixels", [*SMOKE_CLS, "--set", "classifier.model=vit_tiny_patch16_224",
                                         "--set", "classifier.image_size=40"], nothing,
     ("never read 36% of each image", "is 48 px")),
    ("classifier-deit-24-unseen-pixels", [*SMOKE_CLS, "--set", "classifier.model=deit_tiny_patch16_224",
                                          "--set", "classifier.image_size=24"], nothing, "never read 56% of each image"),
    ("classifier-efficientnet-8-collapsed", [*SMOKE_CLS, *EFFNET], nothing,
     ("efficientnet_b0 runs at 8x8 px but cannot learn", "1x1 from stride 8 on", "its last 2 downsampling stages",
      "is 16 px")),
    ("classifier-resnet18-8-collapsed", [*SMOKE_CLS, "--set", "classifier.model=resnet18", "--set",
                                         "classifier.image_size=8"], nothing, ("resnet18 runs at 8x8 px", "is 16 px")),
    ("classifier-out-vit-24", [*SMOKE_CLS, *VIT, "--out", "{tmp}/clf"], nothing, "never read 56% of each image"),
    ("benchmark-dry-run-vit-24", ["benchmark", "-r", "{smoke}", *VIT, "--dry-run", "--no-estimate"], nothing,
     "never read 56% of each image"),
    ("benchmark-dry-run-efficientnet-8", ["benchmark", "-r", "{smoke}", *EFFNET, "--dry-run"], nothing,
     "1x1 from stride 8 on"),
    # 4. retinamnist:// references outside their split: one line, never a traceback or image 1079
    ("translate-index-beyond-split", [*TRANSLATE, "retinamnist://train/99999"],
     lambda tmp: (_need_retinamnist(), generator_run(tmp)) and None,
     "retinamnist://train/99999: index 99999 is outside 0..1079 (RetinaMNIST's train split has 1080 images)"),
    ("translate-negative-index", [*TRANSLATE, "retinamnist://train/-1"],
     lambda tmp: (_need_retinamnist(), generator_run(tmp)) and None,
     "retinamnist://train/-1: not a RetinaMNIST image reference"),
    ("translate-unknown-split", [*TRANSLATE, "retinamnist://training/3"],
     lambda tmp: (_need_retinamnist(), generator_run(tmp)) and None, "retinamnist://training/3: not a RetinaMNIST"),
    ("translate-second-image-missing", [*TRANSLATE, "{tmp}/eye.png", "--image", "{tmp}/nope.png"],
     lambda tmp: (generator_run(tmp), (tmp / "eye.png").write_bytes(_png_bytes())) and None,
     "--image: image not found:"),
    ("data-info-grid-index-beyond-split", REFS, ref_manifest("retinamnist://train/99999"),
     "index 99999 is outside 0..1079"),
    ("data-info-grid-negative-index", REFS, ref_manifest("retinamnist://train/-1"),
     "retinamnist://train/-1: not a RetinaMNIST image reference"),
    ("data-info-grid-test-index-400", [*REFS, "--split", "test"], ref_manifest("retinamnist://test/400", "test"),
     "index 400 is outside 0..399 (RetinaMNIST's test split has 400 images)"),
    # 5. finished work is replaced only with --force
    ("classifier-out-finished-other-epochs", [*SMOKE_CLS, "--out", "{tmp}/clf"], fake_classifier(),
     ("clf holds a finished classifier made with classifier.epochs=8 (now 1)", "or --force to replace it")),
    ("classifier-out-finished-other-model", ["train-classifier", "-r", "{smoke}", "--out", "{tmp}/clf"],
     fake_classifier(config_overrides=("classifier.model=resnet18",)),
     "made with classifier.model='resnet18' (now 'test_resnet')"),
    ("classifier-out-finished-seed", [*SMOKE_CLS, "--seeds", "0,1", "--out", "{tmp}/clf"],
     fake_classifier("clf/seed0"), "seed0 holds a finished classifier made with classifier.epochs=8 (now 1)"),
    # 6. input silently reinterpreted
    ("classifier-seeds-empty", [*SMOKE_CLS, "--seeds", ""], nothing, "--seeds expects e.g. 0,1,2 or 0-4, got ''"),
    ("classifier-seeds-huge-range", [*SMOKE_CLS, "--seeds", "0-99999999"], nothing,
     "--seeds: '0-99999999' asks for 100000000 seeds (at most 1000"),
    ("recipe-empty", ["data", "info", "-r", "{tmp}/r.yaml"], recipe(""), "the recipe is empty"),
    ("recipe-comments-only", ["train-generator", "-r", "{tmp}/r.yaml"], recipe("# nothing yet\n\n# still nothing\n"),
     "the recipe is empty"),
    ("recipe-empty-mapping", ["benchmark", "-r", "{tmp}/r.yaml", "--dry-run"], recipe("{}\n"), "the recipe is empty"),
    ("recipe-seed-yes", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("data:\n  source: synthetic\nseed: yes\n"),
     "r.yaml: seed: a YAML boolean (yes/no, on/off, true/false) is not a number"),
    ("recipe-steps-on", ["data", "info", "-r", "{tmp}/r.yaml"], recipe("data:\n  source: synthetic\ntrain:\n  steps: on\n"),
     "r.yaml: train.steps: a YAML boolean"),
    ("recipe-channel-mult-yes", ["data", "info", "-r", "{tmp}/r.yaml"],
     recipe("data:\n  source: synthetic\ngenerator:\n  channel_mult: [1, yes]\n"), "generator.channel_mult: a YAML boolean"),
    ("set-seed-yes", [*INFO, "--set", "seed=yes"], nothing, "--set seed=yes: seed: a YAML boolean"),
    ("set-lr-true", [*INFO, "--set", "train.lr=true"], nothing, "train.lr: a YAML boolean"),
    ("set-image-size-false", [*INFO, "--set", "classifier.image_size=false"], nothing, "classifier.image_size: a YAML boolean"),
    ("set-steps-huge", [*INFO, "--set", f"train.steps={HUGE}"], nothing,
     "train.steps: Input should be less than or equal to 10000000"),
    ("recipe-steps-float-huge", ["data", "info", "-r", "{tmp}/r.yaml"],
     recipe("data:\n  source: synthetic\ntrain:\n  steps: 1.0e+23\n"), "r.yaml: train.steps"),
    ("benchmark-dry-run-steps-huge", ["benchmark", "-r", "{smoke}", "--set", f"train.steps={HUGE}", "--dry-run"],
     nothing, "train.steps: Input should be less than or equal to 10000000"),
    ("set-epochs-huge", [*SMOKE_CLS, "--set", "classifier.epochs=1000000"], nothing,
     "classifier.epochs: Input should be less than or equal to 10000"),
    ("set-batch-huge", [*INFO, "--set", "train.batch_size=10000000"], nothing, "train.batch_size: Input should be less"),
    ("set-augment-n-huge", [*INFO, "--set", "augment.n=100000000000"], nothing, "augment.n: Input should be less"),
    ("set-sample-steps-huge", [*INFO, "--set", "sample.steps=1000000"], nothing, "sample.steps: Input should be less"),
    ("augment-source-grades-empty", [*AUGMENT, "--from-real", "--source-grades", ""], generator_run,
     "--source-grades: '' is not a grade"),
    # 7. one writer per output folder
    ("augment-locked-out", [*AUGMENT, "--out", "{tmp}/syn"], locked("syn"),
     ("syn is in use by another odmaug augment (pid", "started 2026-12-01T10:00:00+0000")),
    ("augment-locked-default-out", AUGMENT, locked("gen/synthetic"), "synthetic is in use by another odmaug augment"),
    ("augment-locked-other-host", [*AUGMENT, "--out", "{tmp}/syn"], locked("syn", host="elsewhere"),
     ("on elsewhere", "if that process is gone, delete")),
]


@pytest.mark.parametrize("case_id,args,prepare,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_any_work(case_id, args, prepare, expected, tmp_path, monkeypatch):
    assert_refused(args, prepare, expected, tmp_path, monkeypatch, SMOKE)
