"""``classifier.pretrained: hub``: timm's own weights from a pre-filled Hugging Face cache, no network.

The cache is laid out as huggingface_hub keeps it (``models--timm--<id>/refs/main`` holding the
commit, ``snapshots/<commit>/model.safetensors``); ``$HF_HUB_OFFLINE`` and ``$ODMAUG_OFFLINE`` are set,
so a miss can only be the one-line error, never a download.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv, get_pretrained_cfg
from typer.testing import CliRunner

from helpers import assert_refused
from odmaug.classify import train as train_module
from odmaug.classify.hub import hub_weights, load_hub
from odmaug.classify.models import create_model
from odmaug.cli import app
from odmaug.errors import MissingDataError

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
MODEL = "test_resnet"  # the smoke recipe's classifier; timm's pretrained cfg names its hub id
REPO = get_pretrained_cfg(MODEL).hf_hub_id  # timm/test_resnet.r160_in1k
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HEAD = {"fc.weight", "fc.bias"}


def fill_cache(home: Path) -> dict[str, torch.Tensor]:
    """Random ImageNet-shaped (1000-class, RGB) weights saved where huggingface_hub looks offline."""
    torch.manual_seed(123)
    state = {k: v.contiguous() for k, v in timm.create_model(MODEL, pretrained=False).state_dict().items()}
    repo = home / "hub" / ("models--" + REPO.replace("/", "--"))
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    save_file(state, str(repo / "snapshots" / COMMIT / "model.safetensors"))
    return state


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ODMAUG_OFFLINE", "1")
    return home


@pytest.mark.parametrize("channels", [3, 1])
def test_hub_weights_come_from_the_cache(offline_home, capsys, channels):
    saved = fill_cache(offline_home)
    found = hub_weights(MODEL)
    assert (found.repo_id, found.revision, found.filename) == (REPO, COMMIT, "model.safetensors")
    torch.manual_seed(0)
    model = create_model(MODEL, 5, 16, channels)
    record = load_hub(model, MODEL, 5, 16, channels)
    assert record == {"pretrained": "hub", "pretrained_random": ["fc.weight", "fc.bias"],
                      "pretrained_hub": {"repo_id": REPO, "revision": COMMIT, "filename": "model.safetensors"}}
    loaded = model.state_dict()
    assert loaded["fc.weight"].shape == (5, saved["fc.weight"].shape[1])  # 5 grades: head random
    first = "conv1.0.weight" if "conv1.0.weight" in loaded else "conv1.weight"
    for name in set(loaded) - HEAD - {first}:
        assert torch.equal(loaded[name], saved[name]), name
    # the RGB stem summed to one channel for grey images, as timm adapts its own weights
    want = saved[first] if channels == 3 else adapt_input_conv(1, saved[first])
    assert torch.equal(loaded[first], want)
    said = capsys.readouterr().err
    assert f"pretrained hub {REPO}@{COMMIT[:12]} (model.safetensors)" in said and "left random: fc.weight, fc.bias" in said


def test_train_classifier_starts_from_the_hub_weights(offline_home, tmp_path, monkeypatch):
    saved = fill_cache(offline_home)
    started = {}
    build = train_module.Stepper.build

    def spy(model, *args, **kwargs):  # the network as training is about to start
        started.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return build(model, *args, **kwargs)

    monkeypatch.setattr(train_module.Stepper, "build", spy)
    out = tmp_path / "clf"
    result = CliRunner().invoke(app, ["train-classifier", "--recipe", str(SMOKE), "--out", str(out), "--device", "cpu",
                                      "--set", "classifier.pretrained=hub", "--set", "classifier.epochs=1"])
    assert result.exit_code == 0, result.output
    assert started and all(torch.equal(started[k], saved[k]) for k in set(started) - HEAD)
    extra = json.loads((out / "classifier.json").read_text())["extra"]
    assert extra["pretrained"] == "hub" and extra["pretrained_random"] == ["fc.weight", "fc.bias"]
    assert extra["pretrained_hub"] == {"repo_id": REPO, "revision": COMMIT, "filename": "model.safetensors"}


@pytest.mark.parametrize("offline_var", ["HF_HUB_OFFLINE", "ODMAUG_OFFLINE"])
def test_offline_miss_is_one_line_naming_what_to_fetch(offline_home, monkeypatch, offline_var):
    monkeypatch.delenv("HF_HUB_OFFLINE" if offline_var == "ODMAUG_OFFLINE" else "ODMAUG_OFFLINE")
    with pytest.raises(MissingDataError) as caught:
        hub_weights(MODEL)
    message = str(caught.value)
    assert REPO in message and str(offline_home / "hub") in message and "\n" not in message
    assert f"python -c \"import timm; timm.create_model('{MODEL}', pretrained=True)\"" in message
    assert "models--timm--test_resnet.r160_in1k" in message


def test_offline_miss_fails_before_a_run_folder(tmp_path, monkeypatch):
    home = tmp_path / "hf"

    def prepare(work):
        return {"HF_HOME": str(home), "HF_HUB_CACHE": None, "HF_HUB_OFFLINE": "1", "ODMAUG_OFFLINE": "1"}

    assert_refused(["train-classifier", "--recipe", "{smoke}", "--set", "classifier.pretrained=hub"], prepare,
                   ("classifier.pretrained=hub", REPO, str(home / "hub"), "timm.create_model('test_resnet', pretrained=True)"),
                   tmp_path, monkeypatch, SMOKE)


def test_a_model_without_hub_weights_is_named(offline_home):
    from odmaug.errors import OdmaugError

    with pytest.raises(OdmaugError, match="timm has no Hugging Face hub weights for 'botnet50ts_256'"):
        hub_weights("botnet50ts_256")
