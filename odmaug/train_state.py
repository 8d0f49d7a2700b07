"""Training state that outlives the process, one format for every trainer: safetensors + JSON, atomic.

A :class:`TrainingState` is what resuming needs: the network, its EMA, the optimizer, the RNG
states and the step, plus a trainer's JSON bookkeeping (``info``) and named extra weights (the
classifier's best epoch so far). Learning-rate schedules are functions of the step in both
trainers, so the step is their state. One encoding names every tensor by its role::

    model.<name>  ema.<name>  <extra group>.<name>  optim.<param index>.<moment>  rng.<stream>
    emas/<ema name>/<name>   (more EMAs, e.g. ``ema-0.9995``: names may hold dots, never slashes)

and one JSON object holds ``step``, the optimizer's ``param_groups`` and non-tensor state, and
``info``. It is stored in one of two containers:

* a file (:func:`save_state_file`): one safetensors file whose metadata holds the JSON under
  ``"state"``, replaced atomically (the classifier's ``train_state.safetensors``);
* a folder (:func:`save_state_folder`): ``model.safetensors`` and ``ema.safetensors`` hold the
  weights alone (sampling reads them without the rest), as does ``<ema name>.safetensors`` for
  each further EMA (names start with ``ema-``), ``state.safetensors`` the optimizer, RNG
  and extra tensors, ``state.json`` the JSON; each file is replaced atomically and its sha256 is
  returned, so that a pointer written last can vouch for the set (the generator's checkpoints).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from odmaug.atomic import atomic_path, atomic_write_json
from odmaug.digest import bytes_digest, file_digest
from odmaug.errors import OdmaugError

WEIGHT_FILES = {"model": "model.safetensors", "ema": "ema.safetensors"}
TENSOR_FILE, JSON_FILE = "state.safetensors", "state.json"
_RESERVED = ("step", "optimizer")  # JSON keys of the format itself; ``info`` may not use them
_EMAS = "emas"  # prefix of further EMAs' tensors in the one-file encoding and while decoding
_EMA_NAME = re.compile(r"ema-[A-Za-z0-9_.+-]+")  # a further EMA's name: also its file's stem


@dataclass
class TrainingState:
    """Everything a trainer needs to continue exactly where it stopped.

    Attributes:
        step: optimizer steps done.
        model: the network's state dict.
        optimizer: ``optimizer.state_dict()``.
        ema: the EMA network's state dict, or None.
        rng: RNG states by stream name (uint8 tensors, e.g. ``generator.get_state()``).
        extra: more state dicts by group name (e.g. ``{"best": ...}``).
        emas: more EMA networks' state dicts by name, each starting with ``ema-`` (e.g. ``ema-0.9995``;
            the generator's ``train.ema_decays``); a folder keeps each in its own weights file.
        info: JSON-serialisable bookkeeping of the trainer (must not use ``step`` or ``optimizer``).
    """

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    ema: Optional[dict[str, torch.Tensor]] = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    emas: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share memory)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def _group(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _optimizer_to_flat(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors ``optim.<index>.<name>`` and plain JSON values."""
    tensors, plain = {}, {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                plain[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain_state": plain}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in _group("optim", tensors).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in info.get("plain_state", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": info["param_groups"]}


def _state_tensors(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer, RNG and extra tensors by their encoded names, and the JSON object."""
    clash = [k for k in _RESERVED if k in state.info] + [g for g in state.extra if g in (*WEIGHT_FILES, "optim", "rng")]
    clash += [name for name in state.emas if not _EMA_NAME.fullmatch(name)]
    if clash:
        raise ValueError(f"training-state info, extra group or EMA uses a reserved or malformed name: {clash[0]}")
    optim_tensors, optim_json = _optimizer_to_flat(state.optimizer)
    tensors = {**optim_tensors, **_prefixed("rng", state.rng)}
    for group, values in state.extra.items():
        tensors.update(_prefixed(group, values))
    return tensors, {"step": state.step, "optimizer": optim_json, **state.info}


def _from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> TrainingState:
    """Inverse of the encoding: a state from every tensor (weights prefixed) and the JSON object."""
    meta = dict(meta)
    step, optimizer = int(meta.pop("step")), _optimizer_from_flat(tensors, meta.pop("optimizer"))
    emas: dict[str, dict[str, torch.Tensor]] = {}
    for key in [k for k in tensors if k.startswith(_EMAS + "/")]:
        _, name, param = key.split("/", 2)
        emas.setdefault(name, {})[param] = tensors.pop(key)
    groups = {k.split(".", 1)[0] for k in tensors if "." in k} - {*WEIGHT_FILES, "optim", "rng"}
    ema = _group("ema", tensors)
    return TrainingState(step, _group("model", tensors), optimizer, ema or None, _group("rng", tensors),
                         {g: _group(g, tensors) for g in sorted(groups)}, meta, emas)


# ----------------------------------------------------------------------------- one file
def save_state_file(path: str | Path, state: TrainingState) -> None:
    """Write ``state`` as one safetensors file (the JSON in its metadata), replacing ``path`` atomically.

    Raises:
        WriteError: the file cannot be written (see :mod:`odmaug.atomic`).
    """
    tensors, meta = _state_tensors(state)
    tensors.update(_prefixed("model", state.model))
    if state.ema is not None:
        tensors.update(_prefixed("ema", state.ema))
    for name, values in state.emas.items():
        tensors.update({f"{_EMAS}/{name}/{k}": v for k, v in values.items()})
    with atomic_path(path) as tmp:
        save_file(_plain(tensors), str(tmp), metadata={"state": json.dumps(meta)})


def load_state_file(path: str | Path, expect: Optional[dict[str, Any]] = None) -> Optional[TrainingState]:
    """The state :func:`save_state_file` wrote, or None when there is none to resume from.

    None when the file is missing, torn or not one of these, or when its ``info`` differs from
    ``expect`` in any key (e.g. ``{"key": ...}``: a state of other inputs); the tensors are then
    not read.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("state", "{}"))
            if any(meta.get(k) != v for k, v in (expect or {}).items()) or "optimizer" not in meta:
                return None
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError):
        return None  # a torn or foreign file: start afresh
    return _from_tensors(tensors, meta)


# ----------------------------------------------------------------------------- one folder
def save_state_folder(folder: Path, state: TrainingState,
                      on_written: Optional[Callable[[str], None]] = None) -> dict[str, str]:
    """Write ``state`` as the four files of a folder (made if needed); returns {file name: sha256}.

    Args:
        folder: the folder; files already there are replaced.
        on_written: called with each file's name once it is complete (a test hook).

    Raises:
        WriteError: a file cannot be written.
    """
    files = {WEIGHT_FILES["model"]: state.model}
    if state.ema is not None:
        files[WEIGHT_FILES["ema"]] = state.ema
    tensors, meta = _state_tensors(state)
    files.update({f"{name}.safetensors": values for name, values in state.emas.items()})
    files[TENSOR_FILE] = tensors
    digests = {}
    for name, values in files.items():
        with atomic_path(folder / name) as tmp:
            save_file(_plain(values), str(tmp))
        digests[name] = file_digest(folder / name)
        if on_written is not None:
            on_written(name)
    atomic_write_json(folder / JSON_FILE, meta)
    digests[JSON_FILE] = file_digest(folder / JSON_FILE)
    return digests


def load_checked(path: Path, expected: Optional[str]) -> dict[str, torch.Tensor]:
    """A safetensors file whose sha256 must be ``expected`` (None: not checked).

    Raises:
        OdmaugError: the file is missing, does not match, or is not safetensors.
    """
    if not path.is_file():
        raise OdmaugError(f"checkpoint file missing: {path}")
    data = path.read_bytes()  # read once: the digest and the tensors come from the same bytes
    if expected is not None and bytes_digest(data) != expected:
        raise OdmaugError(f"{path}: corrupt checkpoint file (sha256 does not match its pointer)")
    try:
        return load_tensors(data)
    except (SafetensorError, OSError, ValueError) as err:
        raise OdmaugError(f"{path}: corrupt checkpoint file ({str(err).splitlines()[0]})") from None


def load_state_folder(folder: Path, digests: Optional[dict[str, str]] = None) -> TrainingState:
    """The state :func:`save_state_folder` wrote, each file checked against ``digests`` when given.

    Raises:
        OdmaugError: a file is missing or corrupt.
    """
    digests = digests or {}
    tensors = {}
    for role, name in WEIGHT_FILES.items():
        if role == "model" or (folder / name).is_file() or name in digests:
            tensors.update(_prefixed(role, load_checked(folder / name, digests.get(name))))
    # further EMAs: those the pointer vouches for, or (no digests given) those in the folder
    names = list(digests) if digests else [p.name for p in folder.glob("ema-*.safetensors")]
    for name in sorted(n for n in names if n.startswith("ema-") and n.endswith(".safetensors")):
        values = load_checked(folder / name, digests.get(name))
        tensors.update({f"{_EMAS}/{name.removesuffix('.safetensors')}/{k}": v for k, v in values.items()})
    tensors.update(load_checked(folder / TENSOR_FILE, digests.get(TENSOR_FILE)))
    json_path = folder / JSON_FILE
    if not json_path.is_file() or (JSON_FILE in digests and file_digest(json_path) != digests[JSON_FILE]):
        raise OdmaugError(f"{json_path}: missing or corrupt training state")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OdmaugError(f"{json_path}: corrupt training state (not JSON)") from None
    return _from_tensors(tensors, meta)
