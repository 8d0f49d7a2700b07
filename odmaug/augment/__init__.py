"""Synthetic augmentation: new images of scarce grades from a trained generator, with manifests.

``run_synthesis`` writes ``<out>/<grade>/<seed>.png``, ``synthesis.json`` and
``manifest.csv``; it is reproducible image by image, resumable after any interruption, and
shards its work across ranks under ``torchrun``.
"""

from odmaug.augment.filter import GradeFilter
from odmaug.augment.plan import Item, images_per_grade, parse_target_classes, requested_items
from odmaug.augment.space import estimate_png_bytes
from odmaug.augment.synthesis_folder import MANIFEST_FILE, SYNTHESIS_FILE, SynthesisFolder
from odmaug.augment.synthesis import SynthesisRequest, SynthesisSummary, run_synthesis

__all__ = [
    "GradeFilter",
    "Item",
    "MANIFEST_FILE",
    "SYNTHESIS_FILE",
    "SynthesisFolder",
    "SynthesisRequest",
    "SynthesisSummary",
    "estimate_png_bytes",
    "images_per_grade",
    "parse_target_classes",
    "requested_items",
    "run_synthesis",
]
