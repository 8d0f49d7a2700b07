"""Where the benchmark's stages keep their results: folders under ``<runs_dir>/store/`` named by stage keys.

A stage whose inputs are unchanged finds its folder again and is reused; an interrupted one
resumes there. Every key is an :mod:`odmaug.digest` digest:

* ``generator-<name>-<key>``: the key hashes every generator input except ``train.steps``, which
  says where training stops, not what a step does: a checkpoint holds the whole training state,
  so ``N`` steps then a resume to ``M`` gives the weights of ``M`` steps, bit for bit
  (:mod:`odmaug.diffusion.checkpointer`). A larger ``train.steps`` therefore continues a stored
  shorter run. A stored run already past ``train.steps`` is never cut back: its weights are not
  those of the shorter run, and the checkpoint at that step is usually gone
  (``train.keep_checkpoints``). A shorter request then trains from zero in a branch folder
  ``generator-<name>-<key>-b2`` (``-b3``... when that one is past it too).
* ``<generator folder>/synthetic-step<N>-<key>``: images of the generator at step ``N`` with one
  ``sample`` section, so a continued generator or changed sampler never meets the images of
  another (synthesis would refuse that folder).
* ``<generator folder>/translated-step<N>-<key>``: beside them, real training images translated by
  that generator; the key adds the translation settings (strength, source grades) to the sample
  section (with the sampler translation runs with, :func:`odmaug.augment.from_real.translation_sample`).
* ``classifier-<arm>-seed<S>-<key>``: the classifier settings, the three tables and the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from odmaug.atomic import atomic_write_json, atomic_write_text
from odmaug.config import Recipe, dump_recipe
from odmaug.benchmark.stage import Splits
from odmaug.data import ImageTable
from odmaug.digest import json_digest, rows_digest, stage_key
from odmaug.errors import OdmaugError
from odmaug.runs import Run, environment_record

if TYPE_CHECKING:
    from odmaug.augment.from_real import FromReal


LATER_DIFFUSION_OPTIONS = {"prediction": "eps", "snr_gamma": None, "zero_terminal_snr": False}
"""Diffusion options added after generators were stored, with the defaults they trained under."""


def generator_key(recipe: Recipe, train: Optional[ImageTable] = None) -> str:
    """Identity of a generator's training, without ``train.steps`` (see the module docstring);
    with ``train`` (a cross-validation fold's training part), its rows count too."""
    settings = recipe.to_dict()
    parts = {k: settings[k] for k in ("data", "generator", "diffusion", "train", "seed")}
    parts["data"].pop("data_dir", None)  # where the file lies does not change the images
    parts["train"].pop("steps", None)
    for option, default in LATER_DIFFUSION_OPTIONS.items():  # at their defaults: stored generators still found
        if parts["diffusion"].get(option) == default:
            parts["diffusion"].pop(option)
    if train is not None:  # holdout keys stay as they were: stored generators are still found
        parts["train_rows"] = rows_digest(train.frame, ["path", "label"])
    return json_digest(parts, 12)


def generator_status(root: Path, steps: int) -> tuple[str, int]:
    """``new`` / ``resume`` / ``reuse`` for a generator folder asked for ``steps``, and its stored step."""
    from odmaug.diffusion.checkpoint import read_pointer

    try:
        step = int(read_pointer(root / "generator").get("step", 0))
    except (OdmaugError, OSError, ValueError):
        return "new", 0
    return ("reuse" if step >= steps else "resume"), step


def generator_folder(store: Path, name: str, recipe: Recipe, splits: Optional[Splits] = None) -> Path:
    """The folder generator ``name`` of ``recipe`` trains in: of the folders of its setting, the one
    furthest along without being past ``train.steps``; a new branch when all are past it. A
    cross-validation fold's generator (``splits.fold`` set) is keyed by its training part too."""
    fold = splits is not None and splits.fold is not None
    key = generator_key(recipe, splits.train if fold else None)
    base = f"generator-{name}-{splits.prefix if fold else ''}{key}"
    branches = sorted((p for p in store.glob(f"{base}-b*") if p.name[len(base) + 2:].isdigit()),
                      key=lambda p: int(p.name[len(base) + 2:]))
    best: Optional[tuple[Path, int]] = None
    for folder in [store / base, *branches]:
        if folder.is_dir():
            step = generator_status(folder, recipe.train.steps)[1]
            if step <= recipe.train.steps and (best is None or step > best[1]):
                best = (folder, step)
    if best is not None:
        return best[0]
    if not (store / base).exists():
        return store / base
    n = 2
    while (store / f"{base}-b{n}").exists():
        n += 1
    return store / f"{base}-b{n}"


def synthesis_folder(generator_root: Path, recipe: Recipe, from_real: Optional[FromReal] = None) -> Path:
    """Where the benchmark's images of a generator at ``train.steps`` with ``recipe.sample`` go:
    from noise, or (``from_real``) translated with that strength and those source grades."""
    from odmaug.augment.from_real import translation_sample

    if from_real is None:
        key = json_digest(recipe.sample.model_dump(mode="json"), 8)
        return generator_root / f"synthetic-step{recipe.train.steps}-{key}"
    settings = {"sample": translation_sample(recipe.sample).model_dump(mode="json"),
                "strength": from_real.strength, "source_grades": from_real.source_grades}
    return generator_root / f"translated-step{recipe.train.steps}-{json_digest(settings, 8)}"


def classifier_folder(store: Path, file_label: str, recipe: Recipe, tables: tuple, seed: int) -> Path:
    """Where the classifier of one arm and seed trains: keyed by its settings, its
    (train, val, test) tables and its seed."""
    from odmaug.classify.levers import keyed_settings

    # the synthetic-image levers count only where they act (not for the real arm's table)
    settings = {"classifier": keyed_settings(recipe.classifier, tables[0]), "image_size": recipe.image_size("data"),
                "crop_box": recipe.data.crop_box}
    return store / f"classifier-{file_label}-seed{seed}-{stage_key(settings, tables, seed)}"


def store_run(folder: Path, recipe: Recipe) -> Run:
    """A run folder at a fixed place in the store, with its recipe and environment (made on first use)."""
    run = Run(folder)
    if not run.config_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_path, dump_recipe(recipe))
        atomic_write_json(run.env_path, environment_record(recipe.seed, recipe.device))
    return run
