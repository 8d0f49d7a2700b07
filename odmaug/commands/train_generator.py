"""``odmaug train-generator`` as one library call: the run folder (new, or resumed) set up under
DDP, then :func:`odmaug.diffusion.trainer.train_generator`.

Rank 0 makes a new run folder and hands its path to the other ranks; a new run that fails (or is
interrupted) before its first checkpoint leaves no folder behind; a resumed run's ``config.yaml``
takes the new recipe only once the checkpoint has accepted it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from odmaug.config import Recipe
from odmaug.runs import Run


@dataclass(frozen=True)
class GeneratorTraining:
    """What :func:`train_generator_run` did: the run folder, the trainer's result, and whether this
    process is rank 0 (the one that reports)."""

    run: Run
    result: object
    """A :class:`odmaug.diffusion.trainer.TrainResult`."""
    is_main: bool

    @property
    def last_grid(self) -> Optional[Path]:
        """The newest training sample grid, if any."""
        grids = sorted((self.run.root / "generator" / "samples").glob("grid-*.png"))
        return grids[-1] if grids else None


def train_generator_run(cfg: Recipe, resume: Optional[Run] = None, runs_dir: Optional[Path] = None,
                        name: Optional[str] = None, overrides: Sequence[str] = (),
                        on_run: Optional[Callable[[Run], None]] = None) -> GeneratorTraining:
    """Train the generator of ``cfg`` into a new run folder under ``runs_dir`` (labelled ``name``),
    or continue ``resume`` with ``cfg`` (its own recipe plus ``overrides``, recorded in its log).

    ``on_run`` is called on rank 0 with the run folder before training starts. Every check that
    needs no data (the recipe, the name) runs on every rank before the process group forms, so a
    bad input cannot strand the other ranks.

    Raises:
        OdmaugError: a recipe that cannot train, a bad ``name``, an unusable device, bad data (a
            missing or unreadable image in any split).
    """
    from odmaug import distributed as ddp
    from odmaug.atomic import atomic_write_text
    from odmaug.config import dump_recipe
    from odmaug.data import load_table
    from odmaug.device import resolve_device
    from odmaug.diffusion.trainer import check_training_recipe, train_generator
    from odmaug.runs import check_run_name, create_run, open_run, removed_if_it_fails_empty

    device = resolve_device(cfg.device)  # once, here: everything below takes this torch.device
    check_training_recipe(cfg, device)  # before any folder is made
    if name is not None:
        check_run_name(name)
    # Every image of every split, checked before the run folder exists (a missing test image once
    # surfaced only in a later stage); the trainer then takes the checked training split.
    train = load_table(cfg.data).split("train")
    context = ddp.init_distributed(device)
    try:
        run = resume
        if run is None:
            path = create_run(cfg, runs_dir, name).root if context.is_main else None
            run = open_run(ddp.broadcast_object(path, context))
        if context.is_main and on_run is not None:
            on_run(run)

        def record_resume() -> None:
            # Only once the checkpoint has taken the new recipe: one it refuses (another network
            # shape) must leave config.yaml as it was, or `sample` and a plain --resume fail too.
            atomic_write_text(run.config_path, dump_recipe(cfg))
            run.log("resume", overrides=list(overrides))

        fresh = resume is None and context.is_main
        with removed_if_it_fails_empty(run) if fresh else contextlib.nullcontext():
            result = train_generator(run, cfg, resume=resume is not None, context=context,
                                     on_ready=None if resume is None else record_resume, train=train)
        return GeneratorTraining(run, result, context.is_main)
    finally:
        ddp.shutdown(context)
