"""Penultimate features of a trained severity classifier: a domain feature extractor for FID/KID/PR.

It needs no download (the classifier was trained here on the real training split), so generators
can be compared on any machine. The contract used by ``odmaug.metrics``::

    extractor = load_classifier_features("runs/00003-quickstart")   # or .../classifier
    feats = extractor(images_uint8)     # uint8 [B, 3, H, W] -> float32 [B, extractor.dim]

Importing this module registers it as the ``domain:<classifier run or folder>`` extractor of
:mod:`odmaug.metrics.features` (whose registry imports this module by name on its first lookup).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from odmaug.classify.models import (
    META_FILE,
    WEIGHTS_FILE,
    ClassifierMeta,
    create_model,
    load_classifier,
    resolve_classifier_dir,
    save_classifier,
)
from odmaug.config import MetricsConfig
from odmaug.data.pixels import peak
from odmaug.device import resolve_device
from odmaug.digest import files_digest
from odmaug.errors import OdmaugError
from odmaug.metrics.features import register_extractor

__all__ = ["ClassifierFeatures", "load_classifier", "load_classifier_features", "prepare_batch"]


def prepare_batch(images_uint8: torch.Tensor, meta: ClassifierMeta, device: torch.device) -> torch.Tensor:
    """uint8 or uint16 [B, C, H, W] (C = ``meta.channels``) -> float32 [B, C, S, S] on ``device``,
    resized to the classifier's size and normalised with its mean and std (the exact input the
    classifier was trained on; 16-bit levels are scaled by 65535, 8-bit by 255)."""
    c = meta.channels
    if images_uint8.dtype not in (torch.uint8, torch.uint16) or images_uint8.ndim != 4 or images_uint8.shape[1] != c:
        raise OdmaugError(
            f"classifier inputs must be uint8 [B, {c}, H, W]; got {str(images_uint8.dtype).removeprefix('torch.')} "
            f"{list(images_uint8.shape)}"
        )
    x = images_uint8.to(device, non_blocking=True).float().div_(peak(images_uint8.dtype))  # [B, C, H, W] in [0, 1]
    size = meta.image_size
    if x.shape[-2:] != (size, size):
        # Antialiased bicubic, like the PIL resize that prepared the training images.
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp_(0.0, 1.0)
    mean = torch.tensor(meta.mean, device=device).view(1, c, 1, 1)
    std = torch.tensor(meta.std, device=device).view(1, c, 1, 1)
    return (x - mean) / std


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm penultimate features: ``forward_head(forward_features(x), pre_logits=True)`` -> [B, D]."""
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    return feats.flatten(1)


class ClassifierFeatures:
    """Callable feature extractor over a saved classifier (eval mode, no gradients, fp32).

    Attributes:
        name: ``domain:<classifier folder name>`` (the run folder's name when given a run).
        image_size: the side length the classifier was trained at; inputs are resized to it.
        dim: feature dimension D.
        meta: the classifier's :class:`ClassifierMeta`.
    """

    def __init__(self, model: nn.Module, meta: ClassifierMeta, name: str, device: torch.device | str = "cpu",
                 batch_size: int = 256) -> None:
        self.model = model.eval()
        self.meta = meta
        self.name = name
        self.image_size = meta.image_size
        self.channels = meta.channels  # what odmaug.metrics.features.adapt_images brings images to
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dim = int(getattr(model, "num_features", 0)) or self._probe_dim()

    def _probe_dim(self) -> int:
        with torch.no_grad():
            probe = torch.zeros(1, self.channels, self.image_size, self.image_size, dtype=torch.uint8)
            return int(self(probe).shape[1])

    @torch.no_grad()
    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] (any H, W; C = ``channels``) -> float32 [B, dim] on the CPU, in chunks of ``batch_size``."""
        chunks = []
        for start in range(0, images_uint8.shape[0], self.batch_size):
            x = prepare_batch(images_uint8[start : start + self.batch_size], self.meta, self.device)
            chunks.append(penultimate(self.model, x).float().cpu())
        if not chunks:
            return torch.empty(0, self.dim)
        return torch.cat(chunks)


def load_classifier_features(classifier_dir: str | Path, device: torch.device | str = "cpu") -> ClassifierFeatures:
    """A :class:`ClassifierFeatures` for a classifier folder (or a run folder with ``classifier/``)
    on ``device`` (the command's torch.device, or a name; ``auto`` allowed).

    Raises:
        OdmaugError: no classifier there, or its files do not match.
    """
    device = resolve_device(device)  # a torch.device passes through as it is
    folder = resolve_classifier_dir(classifier_dir)
    model, meta = load_classifier(folder, device)
    label = folder.parent.name if folder.name == "classifier" else folder.name
    return ClassifierFeatures(model, meta, f"domain:{label}", device)


def _domain_example(folder: Path) -> tuple[str, MetricsConfig]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("test_resnet", num_classes=5, image_size=16)
    save_classifier(model, ClassifierMeta(model="test_resnet", num_classes=5, image_size=16), folder / "classifier")
    return f"domain:{folder / 'classifier'}", MetricsConfig()


@register_extractor("domain", "penultimate features of a classifier: domain:<classifier run or folder>", _domain_example)
def _build_domain(argument: str | None, cfg: MetricsConfig, device: torch.device) -> ClassifierFeatures:
    if not argument:
        raise OdmaugError("the domain extractor needs a classifier: use domain:<classifier run or folder>")
    folder = resolve_classifier_dir(Path(argument).expanduser().resolve())  # resolved: a relative path still names its run
    features = load_classifier_features(folder, device)
    # The weights and the description (model, size, normalisation) decide the features.
    features.identity = f"{features.name}/sha256:{files_digest([folder / WEIGHTS_FILE, folder / META_FILE])}"
    return features
