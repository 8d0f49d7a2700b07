"""Synthesis: new images of chosen grades from a trained generator, one PNG per (grade, seed).

The image of (checkpoint, grade, seed, settings) is the same on every run, so a run can stop at any
moment (Ctrl-C, kill -9, a lost machine) and the next run only makes what is missing. Under
``torchrun`` the missing images are sharded across ranks; rank 0 writes the merged manifest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from odmaug.distributed import Context, barrier, broadcast_object, init_distributed, shutdown
from odmaug.augment.filter import GradeFilter
from odmaug.augment.from_real import FromReal, SourcePools, source_pools
from odmaug.augment.lock import FolderLock
from odmaug.augment.plan import Amounts, Item, Request, iter_shard, shard_size
from odmaug.augment.resume import finish_folder, prepare_folder
from odmaug.augment.sampler import generate_batches
from odmaug.augment.synthesis_folder import SynthesisFolder, rank_manifest_name
from odmaug.config import Recipe, SampleConfig
from odmaug.data import load_table
from odmaug.data.pixels import png_mode
from odmaug.errors import OdmaugError
from odmaug.runs import Run, open_run


@dataclass
class SynthesisSummary:
    """What a synthesis run did."""

    manifest: Path
    out_dir: Path
    requested: dict[int, int]
    """Images asked for per grade."""
    present: int
    """Requested images already on disk and valid (skipped)."""
    generated: int
    """Images generated now, over all ranks."""
    generated_per_grade: dict[int, int]
    removed: int
    """Files of another checkpoint/settings removed because of ``force``."""
    manifest_rows: int
    manifest_counts: dict[int, int]
    """Images per grade in the manifest (the whole folder, after any filter)."""
    seconds: float
    checkpoint_id: str
    world_size: int = 1
    compiled: bool = False
    """Whether the network ran under torch.compile (``seconds`` then includes the compile)."""
    filtered_out: dict[int, int] = field(default_factory=dict)
    real_counts: Optional[dict[int, int]] = None
    """Real training images per grade, when the plan needed them (``auto``, fill-up)."""

    @property
    def images_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else float("nan")


def real_train_counts(recipe: Recipe, data_dir: Optional[str], num_classes: int) -> np.ndarray:
    """Real training images per grade of the generator run's data [C]."""
    cfg = recipe.data if data_dir is None else recipe.data.model_copy(update={"data_dir": str(data_dir)})
    table = load_table(cfg)
    if table.num_classes != num_classes:
        raise OdmaugError(
            f"the generator checkpoint has {num_classes} grades but the data ({table.name}) has {table.num_classes}"
        )
    return table.split("train").counts()


@dataclass(frozen=True)
class SynthesisRequest:
    """One synthesis job, built by a command from its merged recipe sections
    (:func:`odmaug.commands.augment.run_synthesis_with_options`, the benchmark's synthesis stage).

    Attributes:
        run: generator run folder (``odmaug train-generator``).
        out_dir: output folder (default ``<run>/synthetic``).
        target_classes, n_per_grade, to_count: the grades (``auto``: every grade below the target
            count, a grade, ``"3,4"`` or a list) and either images per grade or a count to fill
            each up to, real training images included (neither: the largest real grade count).
        seed_start: first seed of every grade.
        settings: the sampler settings, a ``sample`` section with the command's options merged in
            (None: the run's recipe's, unchanged). Its batch size is rounded up to a multiple of
            :data:`BATCH_ALIGN` and does not change the images; compile ``auto`` compiles when
            this rank's images x steps pay for it.
        force: replace a folder's images made with another checkpoint or settings.
        data_dir: folder of ``retinamnist.npz`` if the run's recipe needs one for the real counts.
        grade_filter: keep only images a real-data classifier grades within ``k`` of their grade.
        from_real: translate real TRAINING images of other grades (SDEdit, Meng et al. 2022) instead
            of sampling from pure noise (see :mod:`odmaug.augment.from_real`); None: from noise.
        counts: ``{grade: images}`` instead of the three amounts: every amount in one call, one load.
    """

    run: str | Path
    out_dir: str | Path | None = None
    target_classes: str | int | Sequence[int] = "auto"
    n_per_grade: Optional[int] = None
    to_count: Optional[int] = None
    seed_start: int = 0
    settings: Optional[SampleConfig] = None
    force: bool = False
    data_dir: Optional[str] = None
    grade_filter: Optional[GradeFilter] = None
    from_real: Optional[FromReal] = None
    counts: Optional[Mapping[int, int]] = None

    def amounts(self) -> Amounts:
        """The amounts asked for (checked by :meth:`Amounts.check`)."""
        counts = None if self.counts is None else dict(self.counts)
        return Amounts(self.target_classes, self.n_per_grade, self.to_count, counts)


def run_synthesis(request: SynthesisRequest, device: str = "auto", context: Optional[Context] = None,
                  show_progress: bool = True) -> SynthesisSummary:
    """Synthesize the images of ``request`` into its folder and (re)build its manifest.

    Args:
        request: what to make, how and where (:class:`SynthesisRequest`).
        device: ``auto``, ``cpu``, ``cuda``... (under torchrun ``cuda:<LOCAL_RANK>``); not with ``context``.
        context: the caller's device and process group (:func:`odmaug.distributed.init_distributed`);
            default: joined here from ``device`` and torchrun's environment, and left at the end.
        show_progress: draw a progress bar on stderr.

    Returns:
        A :class:`SynthesisSummary`; ``summary.manifest`` is ``<out_dir>/manifest.csv``.

    Raises:
        OdmaugError: bad grades or amounts, a run without a generator checkpoint, a grade-count
            mismatch, a folder of another checkpoint/settings without ``force``, too little disk.
    """
    own = context is None  # started here, so shut down here
    context = context or init_distributed(device)
    try:
        return _synthesize(context, request, show_progress)
    finally:
        if own:
            shutdown(context)


def _synthesize(context: Context, job: SynthesisRequest, show_progress: bool) -> SynthesisSummary:
    from odmaug.diffusion import load_generator

    # Checks that need no model come first, identically on every rank.
    gen_run: Run = open_run(job.run)
    recipe = gen_run.recipe()
    amounts = job.amounts()
    amounts.check()
    Request({}, job.seed_start)  # checks --seed-start
    settings = job.settings or recipe.sample
    dev = context.device
    loaded = load_generator(gen_run.root, use_ema=settings.use_ema, device=dev, ema=settings.loaded_ema_decay)
    real, request = _plan(loaded, recipe, settings, amounts, job.seed_start, job.data_dir)
    pools = _pools(job.from_real, recipe, job.data_dir, request, settings, loaded.image_size)
    out = Path(job.out_dir) if job.out_dir is not None else gen_run.root / "synthetic"
    folder = SynthesisFolder(out, loaded.image_size, loaded.num_classes, png_mode(loaded.pixels)[0])
    record = _record(gen_run, loaded, settings, dev, pools)
    lock = FolderLock(out) if context.is_main else None  # one writer per folder: a second run stops at once
    try:
        state, valid = prepare_folder(folder, record, request, job.force, context, lock)
        return _fill(context, gen_run, folder, loaded, settings, record, request, state, valid, job.grade_filter,
                     show_progress, pools, real)
    finally:
        if lock is not None:
            lock.release()


def _fill(context: Context, gen_run: Run, folder: SynthesisFolder, loaded, settings: SampleConfig, record, request,
          state, valid, grade_filter, show_progress: bool, pools, real) -> SynthesisSummary:
    """Generate the missing images of a prepared (and locked) folder, then write its manifest."""
    from odmaug.diffusion.sampling import compile_for_sampling

    dev, out = context.device, folder.root
    present: set[Item] = state["present"]

    # The missing pairs are walked lazily, never listed: memory does not grow with --n.
    mine = shard_size(request.total - len(present), context.rank, context.world_size)
    started = time.perf_counter()
    # Compiling is an execution detail, not part of the identity: it changes no setting of the
    # images (only float rounding, ~1e-6 relative in fp32). Kernels build on the first batch.
    compiled = compile_for_sampling(loaded.model, settings.compile, mine * settings.steps, dev)
    label = "synthesize" if not context.enabled else f"synthesize (rank 0 of {context.world_size})"
    generate_batches(loaded, folder, iter_shard(request.missing(present), context.rank, context.world_size), mine,
                     settings, dev, label, show_progress and context.is_main, compiled, pools)
    seconds = time.perf_counter() - started
    if context.enabled:
        _write_rank_manifest(folder, record, request, present, context, pools)
    barrier(context)  # every rank's images and manifest part are on disk
    fields = _finish(folder, record, request, valid, grade_filter, dev, context, pools)
    summary = _summary_of(folder, request, present, state["removed"], seconds, loaded.checkpoint_id, context,
                          compiled, fields, real)
    if context.is_main:
        gen_run.log(
            "synthesis", out=str(out), requested=request.counts, present=summary.present, generated=summary.generated,
            seconds=round(seconds, 3), checkpoint_id=loaded.checkpoint_id, world_size=context.world_size,
            manifest_rows=summary.manifest_rows, compiled=compiled, **settings.pixel_settings(),
            **({} if pools is None else pools.identity()),
        )
    return summary


def _finish(folder: SynthesisFolder, record: dict[str, Any], request: Request, valid, grade_filter, dev,
            context: Context, pools) -> dict[str, Any]:
    """Rank 0 filters and writes the manifest; every rank gets its summary fields, or its error."""
    state: dict[str, Any] = {"error": None}
    if context.is_main:
        try:
            state = finish_folder(folder, record, request, valid, grade_filter, dev, context, pools)
        except OdmaugError as err:
            state = {"error": str(err)}
    state = broadcast_object(state, context)
    if state["error"]:
        raise OdmaugError(state["error"])
    return state["fields"]


def _pools(from_real: Optional[FromReal], recipe: Recipe, data_dir: Optional[str], request: Request,
           settings: SampleConfig, image_size: int) -> Optional[SourcePools]:
    """The training images ``--from-real`` translates, per requested grade (None: from noise)."""
    if from_real is None:
        return None
    return source_pools(recipe, data_dir, sorted(request.counts), from_real, settings, image_size)


def _write_rank_manifest(folder: SynthesisFolder, record: dict[str, Any], request: Request, present: set[Item],
                         context: Context, pools: Optional[SourcePools]) -> None:
    """This rank's part of the manifest (under torchrun): the images it generated now."""
    mine_items = list(iter_shard(request.missing(present), context.rank, context.world_size))
    extra = None if pools is None else pools.manifest_columns(mine_items)
    folder.write_manifest(folder.manifest_frame(mine_items, record, extra), rank_manifest_name(context.rank))


def _summary_of(folder: SynthesisFolder, request: Request, present: set[Item], removed: int, seconds: float,
             checkpoint_id: str, context: Context, compiled: bool, fields: dict[str, Any],
             counts: Optional[np.ndarray]) -> SynthesisSummary:
    there = request.per_grade(present)
    return SynthesisSummary(
        manifest=folder.manifest_path, out_dir=folder.root, requested=request.counts, present=len(present),
        generated=request.total - len(present), removed=removed, seconds=seconds,
        generated_per_grade={g: request.counts[g] - there[g] for g in request.counts},
        checkpoint_id=checkpoint_id, world_size=context.world_size, compiled=compiled, **fields,
        real_counts=None if counts is None else {g: int(c) for g, c in enumerate(counts)},
    )


def _plan(loaded, recipe: Recipe, settings: SampleConfig, amounts: Amounts, seed_start: int,
          data_dir: Optional[str]) -> tuple[Optional[np.ndarray], Request]:
    """The real training counts (when the plan needs them) and the request: numbers only, no list."""
    num_classes = loaded.num_classes
    if num_classes != recipe.data.num_classes:
        raise OdmaugError(
            f"the generator checkpoint has {num_classes} grades but its recipe's data has {recipe.data.num_classes}"
        )
    loaded.schedule.sampling_timesteps(settings.steps, settings.timestep_spacing)  # steps <= T, before any write
    real = real_train_counts(recipe, data_dir, num_classes) if amounts.needs_real_counts(num_classes) else None
    return real, Request(amounts.per_grade(num_classes, real), seed_start)


def _record(gen_run: Run, loaded, settings: SampleConfig, device: torch.device,
            pools: Optional[SourcePools] = None) -> dict[str, Any]:
    """``synthesis.json``: the checkpoint and the settings that decide the pixels (and, with
    ``--from-real``, the strength and the source pool: images from noise keep the old identity)."""
    from odmaug.precision import precision_name, resolve_precision

    return {
        "format": 1,
        "generator_run": gen_run.root.resolve().name,
        "generator_path": str(gen_run.root.resolve()),
        "weights": loaded.weights_path.name,
        "step": loaded.step,
        "identity": {
            "checkpoint_id": loaded.checkpoint_id, "num_classes": loaded.num_classes, "image_size": loaded.image_size,
            **settings.pixel_settings(),
            # The dtype actually used ("auto" means bf16 on some devices, fp32 on others).
            "precision": precision_name(resolve_precision(settings.precision, device)),
            **({} if pools is None else pools.identity()),
        },
    }
