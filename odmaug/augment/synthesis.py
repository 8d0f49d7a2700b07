"""Synthesis: new images of chosen grades from a trained generator, one PNG per (grade, seed).

The image of (checkpoint, grade, seed, settings) is the same on every run, so a run can stop at any
moment (Ctrl-C, kill -9, a lost machine) and the next run only makes what is missing. Under
``torchrun`` the missing images are sharded across ranks; rank 0 writes the merged manifest.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from odmaug.distributed import DistInfo, barrier, broadcast_object, init_distributed, rank_device, shutdown
from odmaug.augment.filter import GradeFilter, apply_filter
from odmaug.augment.plan import (
    Item,
    check_amounts,
    images_per_grade,
    needs_real_counts,
    parse_target_classes,
    requested_items,
    shard,
)
from odmaug.augment.store import SynthesisFolder, check_disk_space, is_valid_png, rank_manifest_name
from odmaug.config import Recipe, SampleConfig
from odmaug.console import progress
from odmaug.data import load_table, to_uint8
from odmaug.device import resolve_device
from odmaug.errors import OdmaugError
from odmaug.runs import Run, open_run


@dataclass(frozen=True)
class SamplingSettings:
    """The sampler settings that decide an image's pixels (recorded in ``synthesis.json``)."""

    sampler: str = "ddim"
    steps: int = 100
    eta: float = 0.0
    guidance_scale: float = 2.0
    clip_x0: bool = True
    precision: str = "auto"

    @classmethod
    def from_config(cls, cfg: SampleConfig, **overrides: Any) -> "SamplingSettings":
        """The recipe's ``sample`` section, with any non-None ``overrides`` applied."""
        values = {
            "sampler": cfg.sampler, "steps": cfg.steps, "eta": cfg.eta,
            "guidance_scale": cfg.guidance_scale, "clip_x0": cfg.clip_x0,
            "precision": getattr(cfg, "precision", "auto"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """One-line errors for impossible values."""
        if self.sampler not in ("ddim", "ddpm"):
            raise OdmaugError(f"--sampler must be ddim or ddpm (got {self.sampler!r})")
        if self.steps < 1:
            raise OdmaugError(f"--steps must be at least 1 (got {self.steps})")
        if not 0.0 <= self.eta <= 1.0:
            raise OdmaugError(f"--eta must be in [0, 1] (got {self.eta})")
        if self.guidance_scale < 0:
            raise OdmaugError(f"--guidance must be 0 or more (got {self.guidance_scale})")


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


BATCH_ALIGN = 8
"""Network batches always hold a multiple of this many images (the tail is padded with copies).

CPU kernels (oneDNN, vectorised reductions) take other code paths for batch remainders, which
changes float rounding by ~1e-7 (fp32) to ~1e-2 (bf16) and can flip a uint8 pixel: measured here,
batches of 1, 3 or 5 rows differ from batches of 64, while every multiple of 8 rows agrees bit for
bit. Aligned batches make an image independent of ``--batch-size`` and of its neighbours.
"""


def aligned(n: int, align: int = BATCH_ALIGN) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return -(-n // align) * align


def _generate_batches(loaded, folder: SynthesisFolder, items: list[Item], settings: SamplingSettings,
                      batch_size: int, device: torch.device, bar_label: str, show_progress: bool,
                      compiled: bool = False) -> None:
    """Generate ``items`` batch by batch and write each PNG as soon as its batch is done.

    A compiled network builds kernels for each batch shape (about a minute on a 2-core CPU), so
    with ``compiled`` a short last batch is padded to the full batch size instead: on average
    cheaper than a second compile.
    """
    from odmaug.diffusion import generate

    batch_size = aligned(batch_size)
    one_shape = compiled and len(items) > batch_size
    bar = progress("img") if show_progress else contextlib.nullcontext()
    with bar:
        task = bar.add_task(bar_label, total=len(items), info="") if show_progress else None
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            rows = batch_size if one_shape else aligned(len(chunk))
            padded = chunk + [chunk[-1]] * (rows - len(chunk))  # only the last batch pads
            labels = torch.tensor([i.grade for i in padded], dtype=torch.long)
            images = generate(
                loaded.model, loaded.schedule, labels, [i.seed for i in padded],
                sampler=settings.sampler, steps=settings.steps, eta=settings.eta,
                guidance_scale=settings.guidance_scale, clip_x0=settings.clip_x0,
                batch_size=len(padded), device=device, precision=settings.precision,
            )  # [B, 3, H, W] in [-1, 1]
            pixels = to_uint8(images[: len(chunk)].detach().cpu()).permute(0, 2, 3, 1).numpy()  # [B, H, W, 3]
            for item, image in zip(chunk, pixels):
                folder.write_png(item, np.ascontiguousarray(image))
            if task is not None:
                bar.update(task, advance=len(chunk), info=f"grade {chunk[-1].grade} seed {chunk[-1].seed}")


def run_synthesis(
    run: str | Path,
    out_dir: str | Path | None = None,
    target_classes: str | int | Sequence[int] = "auto",
    n_per_grade: Optional[int] = None,
    to_count: Optional[int] = None,
    seed_start: int = 0,
    settings: Optional[SamplingSettings] = None,
    use_ema: bool = True,
    batch_size: Optional[int] = None,
    force: bool = False,
    device: str = "auto",
    data_dir: Optional[str] = None,
    grade_filter: Optional[GradeFilter] = None,
    show_progress: bool = True,
    compile: Optional[bool | str] = None,
) -> SynthesisSummary:
    """Synthesize images of chosen grades into ``out_dir`` and (re)build its manifest.

    Args:
        run: generator run folder (``odmaug train-generator``).
        out_dir: output folder (default ``<run>/synthetic``).
        target_classes: ``auto`` (every grade below the target count), a grade, ``"3,4"`` or a list.
        n_per_grade: images per chosen grade; exclusive with ``to_count``.
        to_count: fill each chosen grade up to this many images counting the real training ones.
            With neither, grades are filled up to the largest real grade count.
        seed_start: first seed of every grade.
        settings: sampler settings (default: the run's ``sample`` section).
        use_ema: EMA weights (default) or the raw weights.
        batch_size: images per forward batch (default: the run's ``sample.batch_size``), rounded up
            to a multiple of :data:`BATCH_ALIGN`; it does not change the images.
        force: replace a folder's images made with another checkpoint or settings.
        device: ``auto``, ``cpu``, ``cuda``...; under torchrun each rank takes ``cuda:<LOCAL_RANK>``.
        data_dir: folder of ``retinamnist.npz`` if the run's recipe needs one for the real counts.
        grade_filter: keep only images a real-data classifier grades within ``k`` of their grade.
        show_progress: draw a progress bar on stderr.
        compile: torch.compile the network (True, False, ``"auto"``; default: the run's
            ``sample.compile``); auto compiles when this rank's images x steps pay for it.

    Returns:
        A :class:`SynthesisSummary`; ``summary.manifest`` is ``<out_dir>/manifest.csv``.

    Raises:
        OdmaugError: bad grades or amounts, a run without a generator checkpoint, a grade-count
            mismatch, a folder of another checkpoint/settings without ``force``, too little disk.
    """
    ranks = init_distributed(resolve_device(device))
    try:
        return _synthesize(ranks, run, out_dir, target_classes, n_per_grade, to_count, seed_start, settings,
                           use_ema, batch_size, force, device, data_dir, grade_filter, show_progress, compile)
    finally:
        shutdown(ranks)


def _synthesize(ranks: DistInfo, run, out_dir, target_classes, n_per_grade, to_count, seed_start, settings,
                use_ema, batch_size, force, device, data_dir, grade_filter, show_progress,
                compile) -> SynthesisSummary:
    from odmaug.diffusion import load_generator
    from odmaug.diffusion.sampling import compile_for_sampling
    from odmaug.precision import precision_name, resolve_precision

    # Checks that need no model come first, identically on every rank.
    gen_run: Run = open_run(run)
    recipe = gen_run.recipe()
    check_amounts(n_per_grade, to_count)
    settings = settings or SamplingSettings.from_config(recipe.sample)
    settings.check()
    batch_size = int(batch_size or recipe.sample.batch_size)
    if batch_size < 1:
        raise OdmaugError(f"--batch-size must be at least 1 (got {batch_size})")
    dev = rank_device(resolve_device(device), ranks)
    loaded = load_generator(gen_run.root, use_ema=use_ema, device=dev)
    num_classes = loaded.num_classes
    if num_classes != recipe.data.num_classes:
        raise OdmaugError(
            f"the generator checkpoint has {num_classes} grades but its recipe's data has {recipe.data.num_classes}"
        )
    grades = parse_target_classes(target_classes, num_classes)
    counts = real_train_counts(recipe, data_dir, num_classes) if needs_real_counts(grades, n_per_grade) else None
    requested = images_per_grade(grades, num_classes, n_per_grade, to_count, counts)
    items = requested_items(requested, seed_start)

    out = Path(out_dir) if out_dir is not None else gen_run.root / "synthetic"
    folder = SynthesisFolder(out, loaded.image_size, num_classes)
    record = {
        "format": 1,
        "generator_run": gen_run.root.resolve().name,
        "generator_path": str(gen_run.root.resolve()),
        "weights": loaded.weights_path.name,
        "step": loaded.step,
        "identity": {
            "checkpoint_id": loaded.checkpoint_id, "num_classes": num_classes, "image_size": loaded.image_size,
            **asdict(settings),
            # The dtype actually used ("auto" means bf16 on some devices, fp32 on others).
            "precision": precision_name(resolve_precision(settings.precision, dev)),
        },
    }

    # Rank 0 alone touches the folder's existing files, then tells every rank what is missing.
    state: dict[str, Any] = {"error": None}
    if ranks.is_main:
        try:
            # Decide everything before writing anything: a refusal leaves the folder untouched.
            replace = folder.needs_replacing(record, force)
            scan = folder.scan()
            valid = set() if replace else folder.valid_items(scan)
            state["pending"] = [i for i in items if i not in valid]
            state["present"] = len(items) - len(state["pending"])
            check_disk_space(out, len(state["pending"]), loaded.image_size)
            state["removed"] = folder.prepare(record, force)
            if not replace:
                folder.remove_temporary(scan)  # left by a killed run
                folder.remove_invalid(scan, valid)  # damaged files: remade if requested, else dropped
        except OdmaugError as err:
            state = {"error": str(err)}
        except OSError as err:  # e.g. an unwritable --out: one line, and the other ranks stop too
            state = {"error": f"cannot use {out}: {err.strerror or err}"}
    state = broadcast_object(state, ranks)
    if state["error"]:
        raise OdmaugError(state["error"])
    pending: list[Item] = state["pending"]

    mine = shard(pending, ranks.rank, ranks.world_size)
    label = "synthesize" if not ranks.enabled else f"synthesize (rank 0 of {ranks.world_size})"
    started = time.perf_counter()
    # Compiling is an execution detail, not part of the identity: it changes no setting of the
    # images (only float rounding, ~1e-6 relative in fp32). Kernels build on the first batch.
    compiled = compile_for_sampling(loaded.model, recipe.sample.compile if compile is None else compile,
                                    len(mine) * settings.steps, dev)
    _generate_batches(loaded, folder, mine, settings, batch_size, dev, label, show_progress and ranks.is_main, compiled)
    seconds = time.perf_counter() - started
    if ranks.enabled:
        folder.write_manifest(folder.manifest_frame(mine, record), rank_manifest_name(ranks.rank))
    barrier(ranks)  # every rank's images and manifest part are on disk

    summary_state: dict[str, Any] = {"error": None}
    if ranks.is_main:
        try:
            summary_state = _finish(folder, record, set(valid) | set(pending), grade_filter, dev, ranks)
        except OdmaugError as err:
            summary_state = {"error": str(err)}
    summary_state = broadcast_object(summary_state, ranks)
    if summary_state["error"]:
        raise OdmaugError(summary_state["error"])
    summary = SynthesisSummary(
        manifest=folder.manifest_path, out_dir=out, requested=requested, present=state["present"],
        generated=len(pending), removed=state["removed"], seconds=seconds,
        generated_per_grade={g: sum(1 for i in pending if i.grade == g) for g in requested},
        checkpoint_id=loaded.checkpoint_id, world_size=ranks.world_size, compiled=compiled, **summary_state["fields"],
        real_counts=None if counts is None else {g: int(c) for g, c in enumerate(counts)},
    )
    if ranks.is_main:
        gen_run.log(
            "synthesis", out=str(out), requested=requested, present=summary.present, generated=summary.generated,
            seconds=round(seconds, 3), checkpoint_id=loaded.checkpoint_id, world_size=ranks.world_size,
            manifest_rows=summary.manifest_rows, compiled=compiled, **asdict(settings),
        )
    return summary


def _finish(folder: SynthesisFolder, record: dict, known: set[Item], grade_filter: Optional[GradeFilter],
            device: torch.device, ranks: DistInfo) -> dict[str, Any]:
    """Rank 0: rebuild the manifest from one listing of the folder (and apply the filter)."""
    scan = folder.scan()
    missing = sorted(known - set(scan.images))
    if missing:
        raise OdmaugError(f"{len(missing)} images vanished while writing, e.g. {folder.path(missing[0])}; re-run")
    # Files neither validated at the start nor written now (another process?) are checked here.
    on_disk = [i for i, p in scan.images.items() if i in known or is_valid_png(p, folder.image_size)]
    extra: dict[str, dict[Item, Any]] = {}
    filtered_out: dict[int, int] = {}
    if grade_filter is not None:
        on_disk, predicted, filtered_out = apply_filter(grade_filter, folder, on_disk, device)
        extra["predicted_grade"] = predicted
    frame = folder.manifest_frame(on_disk, record, extra)
    folder.write_manifest(frame)
    for rank in range(ranks.world_size if ranks.enabled else 0):
        (folder.root / rank_manifest_name(rank)).unlink(missing_ok=True)
    per_grade = frame["label"].value_counts().sort_index()
    return {
        "error": None,
        "fields": {
            "manifest_rows": len(frame),
            "manifest_counts": {int(g): int(c) for g, c in per_grade.items()},
            "filtered_out": filtered_out,
        },
    }


def synthesize(
    run: str | Path,
    out_dir: str | Path | None = None,
    grades: str | int | Sequence[int] = "auto",
    n_per_grade: Optional[int] = None,
    to_count: Optional[int] = None,
    seed_start: int = 0,
    sampler: Optional[str] = None,
    steps: Optional[int] = None,
    guidance_scale: Optional[float] = None,
    eta: Optional[float] = None,
    use_ema: bool = True,
    batch_size: Optional[int] = None,
    force: bool = False,
    device: str = "auto",
    show_progress: bool = False,
) -> Path:
    """Synthesize images and return the manifest path (settings default to the run's recipe).

    The short form of :func:`run_synthesis` for library callers such as the benchmark.
    """
    recipe = open_run(run).recipe()
    settings = SamplingSettings.from_config(
        recipe.sample, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta
    )
    return run_synthesis(
        run, out_dir, grades, n_per_grade, to_count, seed_start, settings, use_ema, batch_size, force, device,
        show_progress=show_progress,
    ).manifest
