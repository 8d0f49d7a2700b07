"""Colour sets behave exactly as before channels and depths existed (issue 29): bit for bit.

The reference digests were computed at the commit before (1b7b877) from a clean checkout, with
the same code as below, on this project's machine (torch 2.14.1, Pillow 13.0.0). Floating-point
training results and JPEG decoding may differ under other library versions, so each comparison
runs only where its libraries match the reference's and says so when skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from odmaug.config import DataConfig, SampleConfig, load_recipe
from odmaug.data import load_table, load_uint8, table_from_spec
from odmaug.digest import tensors_digest
from odmaug.runs import create_run

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
REFERENCE = {
    "losses": [0.9666457772254944, 0.9937607049942017, 1.0144065618515015],
    "weights": "85e9a00a3e21ddcc5bcc57aac89586a70ce0c7812368b09ac90d0bb48e2c0702",
    "ema": "d3c25155061b05f4e30a0f567a76a1e4b4cc10c315366666d11b91b1195aa8eb",
    "png_pixels": "1f9127abdfd744d33d0e3ed334c50170f083f7e1a689f7d1a3a4c7b25e49f1a2",
    "synthetic_pixels": "45b4670f54f5f8f2b107cff7917538ae523df7984d6178f169c0a0c54f4771f6",
    "folder_none": "deaff3abbbf7d83d6959b1d3a7031ef81375a87c5f235af0f0a6cd81bbb408ab",
    "folder_fundus": "d8ce6f35c35de94cf1038e3c07e070cabd63d35ffec46eac30db23d249622c65",
    "folder_centre": "95037f99be105ec374a044def1e6161f1458ccc48094a9a7edb0c706ab4e3903",
    "classifier": "c4f792d28a2ad60b7d5d20725174ed851912210a594142b1b1d05ef4a124f6cb",
}
SAME_TORCH = torch.__version__.split("+")[0] == "2.14.1"
SAME_PILLOW = PIL.__version__ == "13.0.0"
needs_torch = pytest.mark.skipif(not SAME_TORCH, reason=f"references from torch 2.14.1 (have {torch.__version__})")
needs_pillow = pytest.mark.skipif(not SAME_PILLOW, reason=f"references from Pillow 13.0.0 (have {PIL.__version__})")


def sha(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def smoke_generator(tmp_path_factory):
    """The smoke recipe's generator after 3 fp32 steps (the references' settings)."""
    from odmaug.diffusion import train_generator

    recipe = load_recipe(SMOKE, ["train.sample_every=1000", "train.log_every=1", "train.steps=3",
                                 "train.checkpoint_every=3", "train.precision=fp32"])
    run = create_run(recipe, tmp_path_factory.mktemp("colour"))
    train_generator(run, recipe, show_progress=False)
    return run


@needs_torch
def test_the_smoke_generator_trains_to_the_same_losses_and_weights(smoke_generator):
    run = smoke_generator
    assert [r["loss"] for r in run.read_log("train")] == REFERENCE["losses"]
    gen = Path(run.root) / "generator"
    folder = gen / json.loads((gen / "checkpoint.json").read_text())["folder"]
    assert tensors_digest(load_file(str(folder / "model.safetensors"))) == REFERENCE["weights"]
    assert tensors_digest(load_file(str(folder / "ema.safetensors"))) == REFERENCE["ema"]
    assert json.loads((gen / "checkpoint.json").read_text())["pixels"] == {"channels": 3, "bits": 8}


@needs_torch
def test_its_synthetic_pngs_are_the_same_rgb_pixels(smoke_generator, tmp_path):
    from odmaug.augment.synthesis import SynthesisRequest, run_synthesis

    run_synthesis(SynthesisRequest(smoke_generator.root, tmp_path / "s", "3,4", 3,
                                   settings=SampleConfig(sampler="ddim", steps=2, eta=0.0, guidance_scale=2.0)),
                  device="cpu", show_progress=False)
    files = sorted((tmp_path / "s").glob("*/*.png"))
    assert len(files) == 6 and {Image.open(f).mode for f in files} == {"RGB"}
    assert hashlib.sha256(b"".join(np.asarray(Image.open(f)).tobytes() for f in files)).hexdigest() \
        == REFERENCE["png_pixels"]


def test_the_synthetic_fundus_set_prepares_the_same_pixels():
    table = load_table(load_recipe(SMOKE).data)
    images = load_uint8(table, 16)
    assert images.dtype == torch.uint8 and images.shape[1] == 3
    assert sha(images.numpy()) == REFERENCE["synthetic_pixels"]


@needs_pillow
@pytest.mark.parametrize("crop", ["none", "fundus", "centre"])
def test_a_colour_folder_decodes_to_the_same_pixels(tmp_path, crop):
    rng = np.random.default_rng(7)  # the reference's folder: RGB PNG, RGB JPEG and one 8-bit gray PNG
    for g in range(2):
        (tmp_path / str(g)).mkdir()
        for i in range(3):
            yy, xx = np.mgrid[0:40, 0:52]
            disc = ((yy - 20) ** 2 + (xx - 26) ** 2 < 18 ** 2)[..., None]
            img = (rng.integers(0, 256, (40, 52, 3)) * disc).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / str(g) / f"c{i}.png")
            Image.fromarray(img).save(tmp_path / str(g) / f"j{i}.jpg", quality=90)
        Image.fromarray(img[..., 0]).save(tmp_path / str(g) / "grey.png")
    cfg = DataConfig(source="folder", path=str(tmp_path), num_classes=2, crop=crop, cache=False)
    images = load_uint8(table_from_spec(str(tmp_path), cfg), 24)
    assert sha(images.numpy()) == REFERENCE[f"folder_{crop}"]


@needs_torch
def test_the_smoke_classifier_trains_to_the_same_weights(tmp_path):
    from odmaug.classify.train import train_classifier

    recipe = load_recipe(SMOKE, ["classifier.epochs=2"])
    table = load_table(recipe.data)
    train_classifier(recipe, table.split("train"), table.split("val"), table.split("test"), tmp_path / "c", seed=0,
                     device="cpu", show_progress=False)
    assert tensors_digest(load_file(str(tmp_path / "c" / "model.safetensors"))) == REFERENCE["classifier"]
    assert json.loads((tmp_path / "c" / "classifier.json").read_text())["channels"] == 3
