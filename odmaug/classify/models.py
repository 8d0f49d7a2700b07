"""The one classifier factory (any timm model) and the classifier folder format.

A classifier folder holds everything needed to use the model again, and nothing to unpickle::

    <dir>/model.safetensors   weights (the state dict)
    <dir>/classifier.json     ClassifierMeta: timm name, num_classes, image_size, normalisation
    <dir>/config.yaml         the recipe it was trained with (informative)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn


from odmaug.data.images import CLASSIFIER_MEAN, CLASSIFIER_STD
from odmaug.classify.timm_build import build_timm_model, check_model_name
from odmaug.errors import OdmaugError

WEIGHTS_FILE = "model.safetensors"
META_FILE = "classifier.json"
FORMAT_VERSION = 1


@dataclass
class ClassifierMeta:
    """What a saved classifier needs besides its weights.

    Attributes:
        model: timm model name.
        num_classes: number of grades C the head predicts.
        image_size: side length the classifier was trained at (inputs are resized to it).
        mean: per-channel mean used to normalise [0, 1] inputs (one value per channel).
        std: per-channel standard deviation used to normalise [0, 1] inputs.
        crop_box: crop applied to source images before resizing (None: none).
        extra: free-form facts (training data name, seed, ...).
        channels: input channels (timm's ``in_chans``): 3 RGB, 1 grayscale.
        head: ``softmax`` (C logits) or ``corn`` (C - 1 ordinal logits, :mod:`odmaug.classify.corn`);
            absent from ``classifier.json`` for softmax (files written before heads existed).
    """

    model: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float] = CLASSIFIER_MEAN
    std: tuple[float, float, float] = CLASSIFIER_STD
    crop_box: Optional[tuple[int, int, int, int]] = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    channels: int = 3
    head: str = "softmax"

    @property
    def outputs(self) -> int:
        """Logits the network emits: C (softmax) or C - 1 (corn)."""
        from odmaug.classify.corn import head_outputs

        return head_outputs(self.head, self.num_classes)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.head == "softmax":
            del out["head"]
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any], origin: str) -> "ClassifierMeta":
        try:
            meta = cls(
                model=str(raw["model"]),
                num_classes=int(raw["num_classes"]),
                image_size=int(raw["image_size"]),
                mean=tuple(float(v) for v in raw.get("mean", CLASSIFIER_MEAN)),
                std=tuple(float(v) for v in raw.get("std", CLASSIFIER_STD)),
                crop_box=tuple(int(v) for v in raw["crop_box"]) if raw.get("crop_box") else None,
                extra=dict(raw.get("extra") or {}),
                format_version=int(raw.get("format_version", FORMAT_VERSION)),
                channels=int(raw.get("channels", 3)),
                head=str(raw.get("head", "softmax")),
            )
            meta.outputs  # an unknown head is a ValueError
        except (KeyError, TypeError, ValueError) as err:
            raise OdmaugError(f"{origin}: not a valid classifier description ({err!r})") from None
        if meta.channels not in (1, 3) or len(meta.mean) != meta.channels or len(meta.std) != meta.channels:
            raise OdmaugError(f"{origin}: channels must be 1 or 3, with as many mean and std values")
        return meta


def create_model(name: str, num_classes: int, image_size: int, channels: int = 3) -> nn.Module:
    """``timm.create_model(name, num_classes=C, in_chans=channels, pretrained=False)``, randomly
    initialised, that runs on [B, channels, image_size, image_size] inputs (logits [B, C]).

    Models with a fixed input size (ViTs) are built for ``image_size``; others accept any size
    their downsampling allows, which one batch-1 forward pass checks (see :mod:`odmaug.probe`).

    Raises:
        OdmaugError: unknown name, or a model that cannot be built for or run at ``image_size``
            (the message names the model, the size and the smallest larger size that works).
    """
    from odmaug.probe import require_runs, size_hint

    check_model_name(name)
    try:
        model = build_timm_model(name, num_classes, image_size, channels)
    except OdmaugError as err:  # fixed-size models refuse some sizes in their constructors
        hint = size_hint(lambda size: _runs_at(None, name, num_classes, size, channels), image_size,
                         "classifier.image_size or data.image_size")
        raise OdmaugError(f"{err}; {hint}") from None
    require_runs(("classifier", name, num_classes, image_size, channels), model, image_size, f"classifier {name}",
                 "classifier.image_size or data.image_size", lambda size: _zeros(size, channels),
                 lambda size: _runs_at(model, name, num_classes, size, channels))
    return model


def check_classifier(name: str, num_classes: int, image_size: int, pretrained: Optional[str] = None) -> None:
    """Raise :class:`OdmaugError` now, before any folder is made, when ``name`` is not a timm
    model, cannot run at ``image_size``, or runs but cannot learn there (pixels its patch grid never
    reads, a collapsed feature map: :mod:`odmaug.classify.learnable`), or when ``pretrained`` is
    ``hub`` and timm's weights are neither cached nor downloadable (:mod:`odmaug.classify.hub`).
    Builds the model once; the global RNG is untouched."""
    from odmaug.classify.hub import HUB, check_hub
    from odmaug.classify.learnable import require_learnable

    with torch.random.fork_rng(devices=[]):  # building draws initial weights from the global RNG
        model = create_model(name, num_classes, image_size)
        require_learnable(f"classifier {name}", model, image_size, "classifier.image_size or data.image_size",
                          lambda size: _built_at(model, name, num_classes, size))
    if pretrained == HUB:  # after the size checks: no download for a model that cannot run here
        check_hub(name)


def _built_at(model: nn.Module, name: str, num_classes: int, size: int) -> Optional[nn.Module]:
    """``model`` itself when it runs at ``size`` (fixed-size models: rebuilt for it), else None."""
    from timm.models import get_pretrained_cfg_value

    from odmaug.probe import forward_error

    if get_pretrained_cfg_value(name, "fixed_input_size"):
        try:
            model = build_timm_model(name, num_classes, size)
        except OdmaugError:
            return None
    return model if forward_error(model, _zeros(size)) is None else None


def _zeros(size: int, channels: int = 3) -> list[torch.Tensor]:
    return [torch.zeros(1, channels, size, size)]  # [1, C, S, S]: a batch of one is enough in eval mode


def _runs_at(model: Optional[nn.Module], name: str, num_classes: int, size: int, channels: int = 3) -> bool:
    """Whether ``model`` (rebuilt for ``size`` when None or when its input size is fixed) runs at ``size``."""
    from timm.models import get_pretrained_cfg_value

    from odmaug.probe import forward_error, rebuilt_runs_at

    if model is None or get_pretrained_cfg_value(name, "fixed_input_size"):
        return rebuilt_runs_at(lambda s: build_timm_model(name, num_classes, s, channels), lambda s: _zeros(s, channels))(size)
    return forward_error(model, _zeros(size, channels)) is None  # other models take any size: no rebuild


def save_classifier(model: nn.Module, meta: ClassifierMeta, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` and ``classifier.json`` into ``out_dir`` atomically."""
    from safetensors.torch import save_file

    from odmaug.atomic import atomic_path, atomic_write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(out_dir / META_FILE, meta.to_json())
    return out_dir


def resolve_classifier_dir(path: str | Path) -> Path:
    """The classifier folder itself, or ``<run>/classifier`` when given a run folder.

    A multi-seed run (``train-classifier --seeds``: ``<run>/classifiers/seed<k>/``, or that
    ``classifiers`` folder itself) stands for its lowest finished seed, with a one-line note, so
    every command that takes one classifier accepts it.
    """
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    if (path / "classifier" / META_FILE).is_file():
        return path / "classifier"
    for seeds_root in (path / "classifiers", path):
        seeds = sorted((int(p.name[4:]), p) for p in seeds_root.glob("seed*")
                       if p.name[4:].isdigit() and (p / META_FILE).is_file())
        if seeds:
            from odmaug.console import warn_once

            chosen = seeds[0][1]
            warn_once(f"{path} holds {len(seeds)} classifier(s), seeds {', '.join(str(k) for k, _ in seeds)}: "
                      f"using the first, {chosen}")
            return chosen
    if not path.exists():
        raise OdmaugError(f"classifier not found: {path}")
    raise OdmaugError(f"{path}: no trained classifier here (expected {META_FILE} and {WEIGHTS_FILE})")


def read_meta(classifier_dir: str | Path) -> ClassifierMeta:
    """The :class:`ClassifierMeta` of a classifier folder (or of a run folder holding one)."""
    folder = resolve_classifier_dir(classifier_dir)
    meta_path = folder / META_FILE
    try:
        raw = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OdmaugError(f"{meta_path}: not valid JSON ({err})") from None
    return ClassifierMeta.from_json(raw, str(meta_path))


def load_classifier(classifier_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ClassifierMeta]:
    """A saved classifier in eval mode on ``device``, with its metadata.

    Args:
        classifier_dir: a classifier folder or a run folder with a ``classifier/`` sub-folder.
        device: torch device (or name) to put the model on.

    Raises:
        OdmaugError: missing files, or weights that do not match the described architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_classifier_dir(classifier_dir)
    meta = read_meta(folder)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise OdmaugError(f"{folder}: {WEIGHTS_FILE} is missing")
    model = create_model(meta.model, meta.outputs, meta.image_size, meta.channels)
    try:
        state = load_file(str(weights_path))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError) as err:
        raise OdmaugError(f"{weights_path}: not a readable safetensors file ({err})") from None
    except RuntimeError as err:
        raise OdmaugError(f"{weights_path}: weights do not match {meta.model} ({str(err).splitlines()[0]})") from None
    return model.to(device).eval(), meta
