"""``odmaug train-classifier`` and ``odmaug evaluate`` as library calls: the checks, the data, the
run folder, then training or evaluation; the CLI only parses and prints."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from odmaug.config import Recipe
from odmaug.device import resolve_device
from odmaug.errors import OdmaugError

if TYPE_CHECKING:
    import torch


MAX_SEEDS = 1000
"""Seeds one ``--seeds`` may ask for (one classifier each)."""


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` (or a mix) -> sorted unique seeds."""
    seeds: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise OdmaugError(f"--seeds expects e.g. 0,1,2 or 0-4, got '{text}'")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise OdmaugError(f"--seeds: empty range '{part}'")
        if high - low >= MAX_SEEDS or high >= 2**63:  # one classifier per seed: a typo must not mean years
            raise OdmaugError(f"--seeds: '{part}' asks for {high - low + 1} seeds (at most {MAX_SEEDS}, each below 2^63)")
        seeds.update(range(low, high + 1))
    if not seeds:
        raise OdmaugError(f"--seeds expects e.g. 0,1,2 or 0-4, got '{text}'")
    return sorted(seeds)


@dataclass
class ClassifierJob:
    """A checked classifier training, ready to :meth:`run`: its data, seeds and output folder."""

    cfg: Recipe
    device: "torch.device"
    """The command's device, resolved once from ``cfg.device``."""
    train: Any
    val: Any
    test: Any
    target: Path
    """Where the classifier goes: ``<run>/classifier`` (``classifiers`` with seeds) or ``--out``."""
    seeds: Optional[list[int]]
    run_folder: Any = None
    """The new run folder (None with ``--out``)."""

    def run(self):
        """Train: a ``ClassifierResult``, or with seeds the :func:`odmaug.classify.seeds.train_seeds` summary.
        A new run folder that fails (or is interrupted) before its first epoch is saved is removed."""
        from odmaug.classify.seeds import train_seeds
        from odmaug.classify.train import train_classifier
        from odmaug.runs import removed_if_it_fails_empty

        cfg, log = self.cfg, None if self.run_folder is None else self.run_folder.log
        new = removed_if_it_fails_empty(self.run_folder) if self.run_folder is not None else contextlib.nullcontext()
        with new:
            if self.seeds:
                return train_seeds(cfg, self.train, self.val, self.test, self.target, self.seeds, self.device, log)
            return train_classifier(cfg, self.train, self.val, self.test, self.target, cfg.seed, self.device, log)


def classifier_job(cfg: Recipe, manifest: Optional[Path] = None, seeds: Optional[str] = None,
                   out: Optional[Path] = None, runs_dir: Optional[Path] = None, force: bool = False) -> ClassifierJob:
    """Check everything that needs no training (the model at its size, the seeds, ``out``), load the
    splits (``manifest``'s training rows, else the recipe's data, every image checked) and make the
    run folder.

    Raises:
        OdmaugError: an unknown model or one that cannot run or learn at ``cfg.image_size("classifier")``,
            bad seeds (an empty ``--seeds`` too), an unwritable ``out`` or one holding a finished
            classifier of other settings (without ``force``), bad data, an unusable device.
    """
    from odmaug.classify.models import check_classifier
    from odmaug.classify.overwrite import check_replacing
    from odmaug.atomic import check_writable
    from odmaug.classify.datasets import training_splits
    from odmaug.runs import create_run

    device = resolve_device(cfg.device)  # once, here: the job passes this torch.device down
    # fail before any data is loaded or folder made: unknown model, one that cannot run at this size,
    # or classifier.pretrained=hub weights that are not cached (offline) or cannot be downloaded
    check_classifier(cfg.classifier.model, cfg.data.num_classes, cfg.image_size("classifier"), cfg.classifier.pretrained)
    seed_list = parse_seeds(seeds) if seeds is not None else None  # '' is an error, not "no seeds"
    if out is not None:
        check_writable(out, folder=True)  # before the data is loaded and the epochs run
    train, val, test = training_splits(cfg, manifest)
    if out is not None:
        check_replacing(out, cfg, (train, val, test), seed_list, force)
        return ClassifierJob(cfg, device, train, val, test, out, seed_list)
    run = create_run(cfg, runs_dir)
    target = run.root / ("classifiers" if seed_list else "classifier")
    return ClassifierJob(cfg, device, train, val, test, target, seed_list, run)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "data"


def default_evaluation_dir(folder: Path, data: str, table_name: str) -> Path:
    """``<classifier>/evaluations/<data name>``, plus a digest of the spec's path where the spec
    names a file or folder: two manifests both called ``manifest.csv`` get two folders, and no
    evaluation overwrites another one's."""
    from odmaug.data.sources import split_spec
    from odmaug.digest import bytes_digest

    path = Path(split_spec(data)[0])
    if not path.exists():  # a named source (retinamnist:test, synthetic): its name is unique
        return folder / "evaluations" / _slug(table_name)
    where = bytes_digest(str(path.resolve()).encode(), 8)
    return folder / "evaluations" / f"{_slug(table_name)}-{where}"


def evaluate_spec(classifier: Path, data: str, recipe_for: Callable[[Optional[Path]], Recipe],
                  out: Optional[Path] = None) -> dict[str, Any]:
    """Evaluate a classifier (folder, or run with ``classifier/``) on ``data`` (a spec as
    :func:`odmaug.data.table_from_spec` reads it) into ``out`` (default: :func:`default_evaluation_dir`).

    ``recipe_for`` gives the recipe whose data settings read ``data``; it is called with the recipe
    the classifier was trained with (its ``config.yaml``; None when it kept none).

    Returns:
        :func:`odmaug.classify.evaluate.evaluate_classifier`'s result plus ``folder``, ``meta``,
        ``table_name`` and ``target``.
    """
    from odmaug.classify.evaluate import evaluate_classifier
    from odmaug.classify.models import read_meta, resolve_classifier_dir
    from odmaug.data import table_from_spec

    folder = resolve_classifier_dir(classifier)
    meta = read_meta(folder)
    trained = folder / "config.yaml"
    cfg = recipe_for(trained if trained.is_file() else None)
    device = resolve_device(cfg.device)  # once, before the data is read
    if cfg.data.num_classes != meta.num_classes and cfg.data.source != "synthetic":
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"num_classes": meta.num_classes})})
    try:
        table = table_from_spec(data, cfg.data)
    except OdmaugError as err:
        # a grade the classifier has no output for: say what it was trained for (the data layer's text)
        if "outside 0.." in str(err):
            raise OdmaugError(f"{err} (the classifier was trained for grades 0..{meta.num_classes - 1})") from None
        raise
    target = out or default_evaluation_dir(folder, data, table.name)
    result = evaluate_classifier(folder, table, target, device, cfg.classifier.precision)
    return {**result, "folder": folder, "meta": meta, "table_name": table.name, "target": target}
