"""Feature extractors: one contract test over every registered entry, Inception weights handling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from odmaug.config import MetricsConfig
from odmaug.data.sources import synthetic_table
from odmaug.config import DataConfig
from odmaug.errors import OdmaugError
from odmaug.metrics import inception
from odmaug.metrics.features import REGISTRY, adapt_images, build_extractor
from odmaug.metrics.generative import evaluate_generated


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every registered extractor, built once from its own tiny example."""
    out = {}
    for name, entry in zip(REGISTRY.names(), REGISTRY.values()):
        spec, cfg = entry.example(tmp_path_factory.mktemp(name))
        out[name] = (spec, cfg, build_extractor(spec, cfg))
    return out


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_extractor_contract(name, built):
    spec, cfg, extractor = built[name]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8, generator=gen)  # few: Inception is slow on CPU
    feats = extractor(images)
    assert feats.dtype == torch.float32 and feats.shape == (2, extractor.dim) and extractor.dim > 0
    assert torch.isfinite(feats).all()
    assert torch.equal(extractor(images), feats)  # deterministic
    # One image alone gives the same features as inside a batch (no batch-statistics leakage).
    assert torch.allclose(extractor(images[1:2])[0], feats[1], rtol=1e-4, atol=1e-6 * float(feats.abs().max()))
    # Grayscale and another resolution are accepted.
    assert extractor(images[:1, :1]).shape == (1, extractor.dim)
    assert extractor(torch.randint(0, 256, (1, 3, 37, 29), dtype=torch.uint8, generator=gen)).shape == (1, extractor.dim)
    assert extractor.name.startswith(name) and extractor.identity
    assert build_extractor(spec, cfg).identity == extractor.identity  # stable: usable as a cache key


def test_adapt_images_channels_and_resolution():
    gray = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    rgb = adapt_images(gray, None)
    assert rgb.shape == (1, 3, 4, 4) and torch.equal(rgb[:, 0], rgb[:, 2]) and torch.equal(rgb[:, 1], gray[:, 0])
    assert adapt_images(gray[:, 0], None).shape == (1, 3, 4, 4)  # [B, H, W]
    rgba = torch.randint(0, 256, (2, 4, 5, 5), dtype=torch.uint8)
    assert torch.equal(adapt_images(rgba, None), rgba[:, :3])
    flat = torch.full((1, 3, 9, 9), 77, dtype=torch.uint8)
    resized = adapt_images(flat, 32)
    assert resized.shape == (1, 3, 32, 32) and resized.dtype == torch.uint8 and (resized == 77).all()
    with pytest.raises(OdmaugError, match="uint8"):
        adapt_images(flat.float(), None)
    with pytest.raises(OdmaugError, match="C in 1..4"):
        adapt_images(torch.zeros(1, 5, 4, 4, dtype=torch.uint8), None)


def test_unknown_and_malformed_extractor_names():
    with pytest.raises(OdmaugError, match="unknown feature extractor 'clip'.*inception.*domain"):
        build_extractor("clip")
    with pytest.raises(OdmaugError, match="needs a classifier"):
        build_extractor("domain")
    with pytest.raises(OdmaugError, match="classifier not found"):
        build_extractor("domain:/nonexistent/run")


def test_missing_inception_weights_offline_is_one_clear_skip_line(monkeypatch):
    monkeypatch.setenv("ODMAUG_OFFLINE", "1")
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub")
    with pytest.raises(inception.InceptionUnavailable) as info:
        build_extractor("inception")
    message = str(info.value)
    assert "\n" not in message and message.startswith("Inception metrics skipped")
    for needed in (inception.WEIGHTS_URL, "--inception-weights", inception.WEIGHTS_ENV, str(inception.weights_cache_dir())):
        assert needed in message


def test_explicit_missing_weights_are_an_error_not_a_skip(tmp_path, monkeypatch):
    with pytest.raises(OdmaugError, match="Inception weights not found") as info:
        build_extractor("inception", MetricsConfig(inception_weights=str(tmp_path / "nope.pth")))
    assert not isinstance(info.value, inception.InceptionUnavailable)
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "also-nope.pth"))
    with pytest.raises(OdmaugError, match=f"\\${inception.WEIGHTS_ENV}"):
        inception.locate_inception_weights()


def test_weights_from_env_and_cache_folder(tmp_path, monkeypatch):
    file = tmp_path / "w.safetensors"
    file.write_bytes(b"x")
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(file))
    assert inception.locate_inception_weights() == file
    monkeypatch.delenv(inception.WEIGHTS_ENV)
    cached = inception.weights_cache_dir() / inception.WEIGHTS_FILENAME  # XDG_CACHE_HOME is per test
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert inception.locate_inception_weights(download=False) == cached


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['PWNED']).write_text('ran')",))


def test_weights_files_are_never_unpickled(tmp_path, monkeypatch):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": _Exploit()}))
    torch.save({"conv.weight": _Exploit()}, tmp_path / "evil2.pth")
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PWNED", str(marker))
    for path in (evil, tmp_path / "evil2.pth"):
        with pytest.raises(OdmaugError, match="not a readable weights file"):
            inception.read_weights(path)
    assert not marker.exists()


def test_weights_of_another_network_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(OdmaugError, match="do not match the FID Inception-V3"):
        inception.build_inception(tmp_path / "other.safetensors")


def test_pth_and_safetensors_weights_give_the_same_features(built, tmp_path):
    _, cfg, extractor = built["inception"]
    state = inception.read_weights(cfg.inception_weights)
    torch.save(state, tmp_path / "same.pth")  # a tensors-only .pth, like torch-fidelity's file
    from_pth = build_extractor("inception", MetricsConfig(inception_weights=str(tmp_path / "same.pth")))
    images = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(from_pth(images), extractor(images))
    assert from_pth.identity != extractor.identity  # different files, different cache keys


def test_inception_is_skipped_while_other_extractors_run(built, monkeypatch):
    monkeypatch.setenv("ODMAUG_OFFLINE", "1")
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub")
    domain_spec = built["domain"][0]
    table = synthetic_table(DataConfig(source="synthetic", image_size=16))
    cfg = MetricsConfig(min_per_grade=4, kid_subsets=3, cache=False)
    out = evaluate_generated(table.split("train"), table.split("test"), ["inception", domain_spec], cfg, image_size=16)
    assert [r["extractor"] for r in out["results"]] == [built["domain"][2].name]
    assert out["skipped"][0]["extractor"] == "inception" and "skipped" in out["skipped"][0]["reason"]
    assert np.isfinite(out["results"][0]["overall"]["fid"])
    with pytest.raises(OdmaugError, match="no generative metrics computed: Inception metrics skipped"):
        evaluate_generated(table.split("train"), table.split("test"), ["inception"], cfg, image_size=16)
