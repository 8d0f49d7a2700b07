"""The shared training step and training-state format: one unit and one format for both trainers."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from odmaug.device import resolve_device
from odmaug.distributed import Context, init_distributed
from odmaug.errors import OdmaugError
from odmaug.train_state import TrainingState, load_state_file, load_state_folder, save_state_file, save_state_folder
from odmaug.train_step import EMA, TrainStep, ema_decay_at


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))


def _trained_state() -> tuple[torch.nn.Module, torch.optim.Optimizer, TrainingState]:
    model = _net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    unit = TrainStep(model, optimizer, torch.device("cpu"), grad_clip=1.0, ema=EMA(model, 0.9))
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    for step in (1, 2):
        unit(lambda: model(x).pow(2).mean(), step)
    state = TrainingState(2, model.state_dict(), optimizer.state_dict(), unit.ema.module.state_dict(),
                          rng={"data": torch.Generator().manual_seed(5).get_state()},
                          extra={"best": {k: v * 2 for k, v in model.state_dict().items()}},
                          info={"key": "abc", "epoch": 2, "history": [{"loss": 0.5}]})
    return model, optimizer, state


def _assert_same(a: TrainingState, b: TrainingState) -> None:
    assert (a.step, a.info) == (b.step, b.info)
    for mine, theirs in ((a.model, b.model), (a.ema, b.ema), (a.rng, b.rng), (a.extra["best"], b.extra["best"])):
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    fresh = torch.optim.AdamW(_net().parameters(), lr=1e-2)
    fresh.load_state_dict(b.optimizer)  # loads into a new optimizer as it was saved
    for index, moments in a.optimizer["state"].items():
        assert all(torch.equal(v, fresh.state_dict()["state"][index][k]) for k, v in moments.items())
    # JSON keeps every value (a tuple comes back as a list, which torch's optimizers take alike)
    assert fresh.state_dict()["param_groups"] == json.loads(json.dumps(a.optimizer["param_groups"]))


def test_one_file_round_trip_and_refusals(tmp_path):
    _, _, state = _trained_state()
    path = tmp_path / "train_state.safetensors"
    save_state_file(path, state)
    _assert_same(state, load_state_file(path, expect={"key": "abc"}))
    assert load_state_file(path, expect={"key": "other"}) is None  # a state of other inputs
    assert load_state_file(tmp_path / "missing.safetensors") is None
    path.write_bytes(path.read_bytes()[:100])  # torn
    assert load_state_file(path) is None


def test_one_folder_round_trip_with_digests(tmp_path):
    _, _, state = _trained_state()
    written = []
    digests = save_state_folder(tmp_path, state, written.append)
    assert written == ["model.safetensors", "ema.safetensors", "state.safetensors"]
    assert set(digests) == {*written, "state.json"}
    # the weights files hold the weights alone, unprefixed: what sampling reads
    assert load_file(str(tmp_path / "model.safetensors")).keys() == state.model.keys()
    _assert_same(state, load_state_folder(tmp_path, digests))
    (tmp_path / "ema.safetensors").write_bytes(b"garbage")
    with pytest.raises(OdmaugError, match="corrupt checkpoint file"):
        load_state_folder(tmp_path, digests)


def test_weight_files_of_older_checkpoints_with_metadata_still_load(tmp_path):
    _, _, state = _trained_state()
    save_state_folder(tmp_path, state)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as fh:
        assert not fh.metadata()  # nothing is written that nothing reads
    # checkpoints written before carried num_classes, image_size, step and format in the weight files
    old = {"num_classes": "5", "image_size": "32", "step": "2", "format": "1"}
    for name, weights in (("model.safetensors", state.model), ("ema.safetensors", state.ema)):
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp_path / name), metadata=old)
    _assert_same(state, load_state_folder(tmp_path))


def test_reserved_names_are_refused(tmp_path):
    _, _, state = _trained_state()
    state.info["step"] = 3
    with pytest.raises(ValueError, match="reserved"):
        save_state_file(tmp_path / "s.safetensors", state)


def test_the_step_unit_is_a_plain_training_step():
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    reference = _net()
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    ema = copy.deepcopy(reference)
    for step in (1, 2, 3):
        loss = reference(x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        optimizer.step()
        decay = ema_decay_at(step, 0.99, 1)
        with torch.no_grad():
            for e, p in zip(ema.parameters(), reference.parameters()):
                e.copy_(p) if decay == 0 else e.lerp_(p, 1 - decay)
    model = _net()
    unit = TrainStep(model, torch.optim.Adam(model.parameters(), lr=1e-2), torch.device("cpu"), grad_clip=0.5,
                     ema=EMA(model, 0.99, warmup=1))
    for step in (1, 2, 3):
        out = unit(lambda: {"loss": model(x).pow(2).mean()}, step)
    assert set(out) == {"loss"}
    for a, b in ((reference, model), (ema, unit.ema.module)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not unit.ema.module.training and not any(p.requires_grad for p in unit.ema.module.parameters())


def test_the_device_is_resolved_once():
    cpu = resolve_device("cpu")
    assert resolve_device(cpu) is cpu
    with pytest.raises(OdmaugError, match="unknown device"):
        resolve_device("tpu")
    context = init_distributed(cpu)
    assert context == Context(device=cpu) and context.is_main and not context.enabled
