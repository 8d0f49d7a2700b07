"""Feature extractors for generative metrics, by name: one contract, one registry.

The contract (:class:`FeatureExtractor`): ``extractor(images)`` maps uint8 [B, 3, H, W] to float32
[B, dim] on the CPU, and the object carries ``name`` (shown beside every figure), ``identity`` (all
that changes the features, e.g. a weights hash: part of the cache key), ``image_size`` (the side it
wants, or None) and ``dim``.

Registered names::

    inception                      the standard FID Inception-V3 (local weights file or download)
    domain:<classifier run/dir>    penultimate features of a severity classifier (no download;
                                   registered by :mod:`odmaug.classify.features`)

:func:`build_extractor` returns every extractor wrapped in :class:`AdaptedExtractor`, which turns
grayscale or RGBA batches into RGB and resizes to the extractor's input size, so any image set can
be compared with any extractor. Each registry entry also knows how to build a tiny working example
of itself (``example``), so one contract test covers every entry with no new test code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from odmaug.config import MetricsConfig
from odmaug.device import resolve_device
from odmaug.errors import OdmaugError
from odmaug.registry import Registry


@runtime_checkable
class FeatureExtractor(Protocol):
    """What every feature extractor provides (see the module docstring)."""

    name: str
    identity: str
    image_size: Optional[int]
    dim: int

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor: ...


def adapt_images(images: torch.Tensor, size: Optional[int], channels: int = 3) -> torch.Tensor:
    """Any uint8 or uint16 image batch -> uint8 [B, channels, S, S] (S = ``size``, or unchanged when None).

    Accepts [B, H, W] and [B, 1, H, W] grayscale (repeated to 3 channels, as torch-fidelity feeds
    grayscale to Inception), [B, 2, H, W] grayscale+alpha and [B, 4, H, W] RGBA (alpha dropped).
    For a 1-channel extractor (a grayscale classifier) RGB becomes its ITU-R 601 luma. 16-bit
    levels are rounded to 8 bits (v / 257): every extractor takes uint8, as torch-fidelity's
    Inception does. Resizing is antialiased bicubic, like the PIL resize that prepares training images.

    Raises:
        OdmaugError: not uint8 or uint16, or a layout that is not one of the above.
    """
    if images.dtype == torch.uint16:
        images = images.float().div(257.0).round().clamp(0, 255).to(torch.uint8)
    if images.dtype != torch.uint8:
        raise OdmaugError(f"feature extractors take uint8 images; got {str(images.dtype).removeprefix('torch.')}")
    if images.ndim == 3:
        images = images.unsqueeze(1)  # [B, H, W] -> [B, 1, H, W]
    if images.ndim != 4 or images.shape[1] not in (1, 2, 3, 4):
        raise OdmaugError(f"feature extractors take images [B, C, H, W] with C in 1..4; got {list(images.shape)}")
    given = images.shape[1]
    if given in (1, 2):
        images = images[:, :1].expand(-1, channels, -1, -1)  # grayscale (+alpha) -> RGB, or kept gray
    elif given == 4:
        images = images[:, :3]  # RGBA -> RGB
    if channels == 1 and images.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images.float() * luma).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        x = images.float()  # [B, C, H, W] in 0..255
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        images = x.round_().clamp_(0, 255).to(torch.uint8)
    return images.contiguous()


class AdaptedExtractor:
    """Wraps an extractor: adapts channels/resolution, batches, and checks the output contract."""

    def __init__(self, base: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 64) -> None:
        self.base = base
        self.batch_size = batch_size
        self.name: str = str(getattr(base, "name", type(base).__name__))
        # No identity, no caching: a cache key without the extractor's weights would be unsafe.
        self.identity: Optional[str] = getattr(base, "identity", None)
        self.image_size: Optional[int] = getattr(base, "image_size", None)
        self.channels: int = int(getattr(base, "channels", 3))  # 1: a grayscale domain classifier
        self.dim: int = int(base.dim)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float32 [B, dim] on the CPU."""
        images = adapt_images(images, self.image_size, self.channels)
        chunks = [torch.empty(0, self.dim)]
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size]
            out = self.base(batch)
            if out.ndim != 2 or out.shape != (batch.shape[0], self.dim):
                raise OdmaugError(f"extractor {self.name} returned {list(out.shape)}, expected [{batch.shape[0]}, {self.dim}]")
            chunks.append(out.detach().float().cpu())
        return torch.cat(chunks)


def as_extractor(extractor, batch_size: int = 64) -> AdaptedExtractor:
    """An :class:`AdaptedExtractor` for any object with ``name``, ``dim`` and ``__call__``."""
    return extractor if isinstance(extractor, AdaptedExtractor) else AdaptedExtractor(extractor, batch_size)


# --- registry ----------------------------------------------------------------------------------

Builder = Callable[[Optional[str], MetricsConfig, torch.device], object]


@dataclass(frozen=True)
class ExtractorEntry:
    """One registered extractor.

    Attributes:
        name: the part before ``:`` in a spec (``inception``, ``domain``).
        build: ``build(argument, cfg, device)`` -> a raw extractor (argument: text after ``:``; device: a torch.device).
        example: ``example(folder)`` -> (spec, cfg) building a tiny working instance (contract tests).
        summary: one line for ``--help`` and error messages.
    """

    name: str
    build: Builder
    example: Callable[[Path], tuple[str, MetricsConfig]]
    summary: str


PLUGINS = ("odmaug.classify.features",)
"""Modules that register more extractors when imported (``domain`` lives with the classifiers,
which sit above metrics). They are imported by name on the first lookup, so this package never
imports them at load time and the dependency runs one way: classify -> metrics."""


REGISTRY: Registry[ExtractorEntry] = Registry("feature extractor", plugins=PLUGINS)


def register_extractor(name: str, summary: str, example: Callable[[Path], tuple[str, MetricsConfig]]):
    """Decorator registering ``build(argument, cfg, device)`` under ``name``."""

    def wrap(build: Builder) -> Builder:
        REGISTRY.add(name, ExtractorEntry(name, build, example, summary), summary)
        return build

    return wrap


def parse_spec(spec: str) -> tuple[str, Optional[str]]:
    """``"domain:runs/x"`` -> ("domain", "runs/x"); ``"inception"`` -> ("inception", None)."""
    name, sep, argument = spec.strip().partition(":")
    if name not in REGISTRY:
        known = ", ".join(f"{e.name} ({e.summary})" for e in REGISTRY.values())
        raise OdmaugError(f"unknown feature extractor '{spec}'; known: {known}")
    return name, (argument.strip() or None) if sep else None


def build_extractor(spec: str, cfg: Optional[MetricsConfig] = None,
                    device: str | torch.device = "cpu") -> AdaptedExtractor:
    """A ready extractor from its name, e.g. ``inception`` or ``domain:runs/00003-clf``, on
    ``device`` (the command's torch.device, or a name: ``auto`` picks CUDA, then MPS, then the CPU).
    Builders receive the resolved torch.device.

    Raises:
        OdmaugError: unknown name or bad argument.
        odmaug.metrics.inception.InceptionUnavailable: Inception weights missing and offline
            (callers skip that extractor and keep the others).
    """
    cfg = cfg or MetricsConfig()
    name, argument = parse_spec(spec)
    device = resolve_device(device)
    return as_extractor(REGISTRY.get(name).build(argument, cfg, device), cfg.batch_size)


# --- the registered extractors ------------------------------------------------------------------


def _inception_example(folder: Path) -> tuple[str, MetricsConfig]:
    from odmaug.metrics.inception import save_random_inception_weights

    path = save_random_inception_weights(folder / "inception-random.safetensors", seed=0)
    return "inception", MetricsConfig(inception_weights=str(path), batch_size=4)


@register_extractor("inception", "standard FID Inception-V3, local weights file or download", _inception_example)
def _build_inception(argument: Optional[str], cfg: MetricsConfig, device: torch.device):
    from odmaug.metrics.inception import InceptionFeatures, locate_inception_weights

    if argument:
        raise OdmaugError(f"the inception extractor takes no argument (got 'inception:{argument}'); "
                          "give the weights with --inception-weights")
    return InceptionFeatures(locate_inception_weights(cfg.inception_weights), device)
