"""``train-classifier --out``: finished work is replaced only on request.

A finished classifier of the same inputs is reused and an interrupted one resumes (its key, see
:mod:`odmaug.classify.state`), but one of other settings used to be retrained over without a word:
an 8-epoch classifier silently became a 1-epoch one. Now that is refused without ``--force``, as
``augment`` refuses a folder of other images, and the error names the first setting that differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from odmaug.classify.state import fingerprint
from odmaug.config import Recipe
from odmaug.console import warn
from odmaug.errors import OdmaugError


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _first_difference(folder: Path, recipe: Recipe, seed: int) -> str:
    """``classifier.epochs=8 (now 1)``: the first setting the folder's config.yaml has otherwise."""
    try:
        old = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        old = None
    if isinstance(old, dict):
        before, now = _flat({k: old.get(k) for k in ("classifier", "data")}), _flat(
            {k: v for k, v in recipe.to_dict().items() if k in ("classifier", "data")})
        for key in sorted(set(before) | set(now), key=lambda k: (not k.startswith("classifier"), k)):
            if key in now and before.get(key) != now[key]:
                return f"{key}={before.get(key)!r} (now {now[key]!r})"
    return f"other images or seed (now seed {seed})"


def finished_key(folder: Path) -> Optional[str]:
    """The key of the finished classifier in ``folder`` (its metrics.json beside its weights), or None."""
    metrics = folder / "metrics.json"
    if not (metrics.is_file() and (folder / "model.safetensors").is_file()):
        return None
    try:
        return str(json.loads(metrics.read_text()).get("key"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return ""  # unreadable: finished work of unknown settings, so not ours to replace silently


def check_replacing(out: Path, recipe: Recipe, splits: tuple, seeds: Optional[Sequence[int]], force: bool) -> None:
    """Refuse (unless ``force``: warn) to train over a finished classifier of other inputs in ``out``
    (or ``out/seed<k>/`` with ``seeds``).

    Raises:
        OdmaugError: names the folder, the first differing setting, and ``--force``.
    """
    train, val, test = splits
    for seed in seeds or [recipe.seed]:
        folder = out / f"seed{seed}" if seeds else out
        key = finished_key(folder)
        if key is None or key == fingerprint(recipe, train, val, test, seed):
            continue
        what = _first_difference(folder, recipe, seed)
        if not force:
            raise OdmaugError(f"{folder} holds a finished classifier made with {what}; use another --out, "
                              "or --force to replace it")
        warn(f"--force: replacing the finished classifier in {folder} (made with {what})")
