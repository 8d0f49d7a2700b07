"""Pretrained classifier weights: ViT position embeddings resampled, only the head may stay random."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from odmaug.classify.models import create_model
from odmaug.classify.pretrained import load_pretrained
from odmaug.errors import OdmaugError


def _vit(img_size: int, num_classes: int, seed: int) -> torch.nn.Module:
    """A 2-block vit_tiny (patch 16, width 192), randomly initialised from ``seed``."""
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size, num_classes=num_classes,
                             depth=2)


def _save(model: torch.nn.Module, path, **replace: torch.Tensor):
    state = {k: v.contiguous() for k, v in model.state_dict().items()} | replace
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("grades", [10, 5])
def test_vit_saved_at_224_loads_at_64_with_resampled_positions(tmp_path, capsys, grades):
    source = _vit(224, 10, seed=0)
    path = _save(source, tmp_path / "vit224.safetensors")
    target = _vit(64, grades, seed=1)
    initial = {k: v.clone() for k, v in target.state_dict().items()}
    left = load_pretrained(target, path)

    saved, loaded = source.state_dict(), target.state_dict()
    assert saved["pos_embed"].shape == (1, 1 + 14 * 14, 192) and loaded["pos_embed"].shape == (1, 1 + 4 * 4, 192)
    expected = resample_abs_pos_embed(saved["pos_embed"], new_size=[4, 4], num_prefix_tokens=1)
    assert torch.equal(loaded["pos_embed"], expected)
    head = {"head.weight", "head.bias"}
    for name in set(loaded) - head - {"pos_embed"}:
        assert torch.equal(loaded[name], saved[name]), name
    said = capsys.readouterr().err
    assert f"pretrained {path}: loaded" in said and "resampled pos_embed (14x14 -> 4x4 patches)" in said
    if grades == 10:  # same head shape: every tensor comes from the file
        assert left == [] and all(torch.equal(loaded[k], saved[k]) for k in head) and "nothing left random" in said
    else:
        assert sorted(left) == sorted(head) and all(torch.equal(loaded[k], initial[k]) for k in head)
        assert f"loaded {len(loaded) - 2} of {len(loaded)} tensors" in said and "left random: head.weight, head.bias" in said
    assert target(torch.zeros(1, 3, 64, 64)).shape == (1, grades)


def test_resnet_with_another_conv1_is_an_error_naming_it(tmp_path, capsys):
    torch.manual_seed(0)
    source = create_model("resnet18", 5, 32)
    path = _save(source, tmp_path / "r18.safetensors", **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(OdmaugError) as caught:
        load_pretrained(create_model("resnet18", 5, 32), path)
    message = str(caught.value)
    assert "1 tensor(s) of ResNet cannot be loaded" in message and "conv1.weight: file [64, 3, 3, 3], model [64, 3, 7, 7]" in message
    assert "only the head (fc) may differ" in message and "\n" not in message
    assert "loaded" not in capsys.readouterr().err  # nothing claimed as loaded


def test_missing_tensors_are_counted_and_the_first_named(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet18", 5, 32)
    dropped = [k for k in source.state_dict() if k.startswith("layer4.1.")]
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items() if k not in dropped}, str(path))
    with pytest.raises(OdmaugError, match=rf"{len(dropped) - 2} tensor\(s\) of ResNet cannot be loaded "
                                          r"\(layer4\.1\.conv1\.weight missing from the file; .*; \.\.\.\)"):
        load_pretrained(create_model("resnet18", 5, 32), path)  # (two BatchNorm counters are not weights)


def test_a_file_without_head_or_batchnorm_counters_loads(tmp_path, capsys):
    torch.manual_seed(0)
    source = create_model("resnet18", 7, 32)
    kept = {k: v.contiguous() for k, v in source.state_dict().items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    save_file(kept | {"extra.weight": torch.ones(2)}, str(tmp_path / "backbone.safetensors"))
    target = create_model("resnet18", 5, 32)
    assert load_pretrained(target, tmp_path / "backbone.safetensors") == ["fc.weight", "fc.bias"]
    assert torch.equal(target.state_dict()["layer4.1.bn2.running_var"], source.state_dict()["layer4.1.bn2.running_var"])
    said = capsys.readouterr().err
    assert "left random: fc.weight, fc.bias" in said and "1 tensor(s) of the file not in the model ignored" in said


def test_training_records_the_file_and_what_stayed_random(tmp_path, capsys):
    from test_classify_train import make_recipe, write_squares

    from odmaug.classify.models import read_meta
    from odmaug.classify.datasets import training_splits
    from odmaug.classify.train import train_classifier

    torch.manual_seed(0)
    path = _save(create_model("test_resnet", 3, 16), tmp_path / "three-grades.safetensors")
    recipe = make_recipe(write_squares(tmp_path), pretrained=str(path), epochs=1)
    train_classifier(recipe, *training_splits(recipe), tmp_path / "out", seed=0, device="cpu", show_progress=False)
    extra = read_meta(tmp_path / "out").extra
    head = create_model("test_resnet", 5, 16).default_cfg["classifier"]
    assert extra["pretrained"] == str(path) and extra["pretrained_random"] == [f"{head}.weight", f"{head}.bias"]
    assert f"left random: {head}.weight, {head}.bias" in capsys.readouterr().err
