"""``odmaug metrics`` as one library call: two image sets named by spec, compared by every
extractor, the figures optionally written as JSON; the CLI only parses and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from odmaug.config import Recipe


def compare_specs(real: str, generated: str, cfg: Recipe, extractors: Optional[Sequence[str]] = None,
                  out: Optional[Path] = None) -> dict[str, Any]:
    """FID, KID and precision/recall of ``generated`` against ``real`` (specs as
    :func:`odmaug.data.table_from_spec` reads them), overall and per grade, at
    ``cfg.image_size("metrics")``; ``extractors`` default to ``cfg.metrics.extractors``.

    Returns:
        :func:`odmaug.metrics.generative.evaluate_generated`'s ``{"results", "skipped"}``, also
        written to ``out`` (atomically, with both specs) when given.

    Raises:
        OdmaugError: an unwritable ``out`` (checked before any feature is computed), bad specs or
            extractors, no extractor that could run.
    """
    from odmaug.atomic import atomic_write_json, check_writable
    from odmaug.data import table_from_spec
    from odmaug.device import resolve_device
    from odmaug.metrics.generative import evaluate_generated

    if out is not None:
        check_writable(out)
    device = resolve_device(cfg.device)
    real_table = table_from_spec(real, cfg.data)
    generated_table = table_from_spec(generated, cfg.data)
    outcome = evaluate_generated(
        real_table, generated_table, list(extractors or cfg.metrics.extractors), cfg.metrics,
        device=device, image_size=cfg.image_size("metrics"), crop_box=cfg.data.crop_box, seed=cfg.seed,
    )
    if out is not None:
        atomic_write_json(out, {"real_spec": real, "generated_spec": generated, **outcome})
    return outcome
