"""The classifier folder format and the features contract used by the generative metrics."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from odmaug.classify import ClassifierMeta, create_model, load_classifier, load_classifier_features, save_classifier
from odmaug.classify.pretrained import load_pretrained
from odmaug.errors import OdmaugError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run") / "classifier"
    model = create_model("test_resnet", 5, 16)
    save_classifier(model, ClassifierMeta("test_resnet", 5, 16), folder)
    return folder, model


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_features_shape_dtype_and_name(saved):
    folder, _ = saved
    extractor = load_classifier_features(folder)
    assert extractor.image_size == 16
    assert extractor.dim == 96
    assert extractor.name == f"domain:{folder.parent.name}"
    out = extractor(images(7, 16))
    assert out.shape == (7, 96) and out.dtype == torch.float32
    # A run folder resolves to its classifier/ sub-folder.
    assert load_classifier_features(folder.parent).dim == 96


def test_features_deterministic_and_batch_independent(saved):
    folder, _ = saved
    extractor = load_classifier_features(folder)
    x = images(10, 16, seed=1)
    full = extractor(x)
    assert torch.equal(full, extractor(x))
    extractor.batch_size = 3  # chunking must not change the answer (eval-mode BatchNorm)
    torch.testing.assert_close(extractor(x), full, rtol=1e-5, atol=1e-5)


def test_features_resize_any_input_size(saved):
    folder, _ = saved
    extractor = load_classifier_features(folder)
    small = images(4, 16, seed=2)
    big = torch.nn.functional.interpolate(small.float(), scale_factor=2, mode="nearest").to(torch.uint8)  # [4,3,32,32]
    assert extractor(big).shape == (4, 96)
    # A 2x nearest upsampling resized back gives close (not identical) features.
    cos = torch.nn.functional.cosine_similarity(extractor(big), extractor(small)).min()
    assert cos > 0.9
    assert extractor(torch.zeros(0, 3, 16, 16, dtype=torch.uint8)).shape == (0, 96)


def test_features_equal_penultimate_of_the_model(saved):
    folder, model = saved
    model.eval()
    extractor = load_classifier_features(folder)
    x = images(3, 16, seed=3)
    norm = (x.float() / 255 - torch.tensor(extractor.meta.mean).view(1, 3, 1, 1)) / torch.tensor(extractor.meta.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(norm), pre_logits=True)
    torch.testing.assert_close(extractor(x), expected)


def test_features_reject_non_uint8(saved):
    folder, _ = saved
    extractor = load_classifier_features(folder)
    with pytest.raises(OdmaugError, match="uint8"):
        extractor(torch.zeros(2, 3, 16, 16))
    with pytest.raises(OdmaugError, match="uint8"):
        extractor(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))


def test_load_errors(tmp_path, saved):
    folder, _ = saved
    with pytest.raises(OdmaugError, match="not found"):
        load_classifier(tmp_path / "nope")
    with pytest.raises(OdmaugError, match="no trained classifier"):
        load_classifier(tmp_path)
    # Metadata describing another architecture than the weights.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (bad / "classifier.json").write_text(json.dumps({"model": "resnet10t", "num_classes": 5, "image_size": 16}))
    with pytest.raises(OdmaugError, match="do not match"):
        load_classifier(bad)


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(OdmaugError, match="unknown timm model 'resnet_18'.*resnet18"):
        create_model("resnet_18", 5, 32)


def test_pretrained_skips_head_and_rejects_other_architectures(tmp_path):
    torch.manual_seed(1)
    source = create_model("test_resnet", 10, 16)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = create_model("test_resnet", 5, 16)
    skipped = load_pretrained(target, path)
    assert skipped and all(k.startswith(source.default_cfg["classifier"]) for k in skipped)
    first = next(k for k in source.state_dict() if k.endswith("weight"))
    assert torch.equal(target.state_dict()[first], source.state_dict()[first])
    with pytest.raises(OdmaugError, match="do not fit"):
        load_pretrained(create_model("resnet10t", 5, 16), path)
    with pytest.raises(OdmaugError, match="not found"):
        load_pretrained(target, tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(OdmaugError, match="not a readable"):
        load_pretrained(target, tmp_path / "junk.safetensors")
