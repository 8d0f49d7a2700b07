"""Generator training: ODM (or DM with gamma = 0) from a recipe, into ``<run>/generator/``.

The whole training split lives on the device as one uint8 tensor; batches are drawn with a seeded
CPU ``torch.Generator`` (no DataLoader). One such RNG per rank (the trainer's ``rng``) draws
everything random in a step (batch indices, flips, t, noise, label dropout, triplets); dropout uses
torch's global RNG. Both states are in every checkpoint, so ``N steps + resume + N steps`` gives the
same weights as ``2N`` steps, also after Ctrl-C at any moment or a kill before the first checkpoint.
Checkpoint and resume are a :class:`~.train_state.Checkpointer` the trainer makes with exactly the
parts it saves (see :mod:`.train_state`); the trainer keeps the step and passes it.

Under torchrun the model is wrapped in DistributedDataParallel; ``train.batch_size`` is the GLOBAL
batch (each of K ranks takes batch_size / K images and its own random stream); only rank 0 writes.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from odmaug.config import Recipe, TrainConfig
from odmaug.console import progress, warn
from odmaug.data import ImageTable, load_table, load_uint8, to_model_range
from odmaug.device import resolve_device
from odmaug import distributed as ddp_utils
from odmaug.diffusion.losses import ClassPool, DiffusionLoss
from odmaug.precision import cpu_bf16_flags, precision_name, resolve_precision
from odmaug.diffusion.checkpoint import ema_stem
from odmaug.diffusion.grids import draw_sample_grid
from odmaug.diffusion.lr_schedule import learning_rate
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.diffusion.unet import build_generator, unreached_attention
from odmaug.diffusion.checkpointer import Checkpointer, InterruptGuard, TrainResult, peak_memory_mb
from odmaug.errors import OdmaugError
from odmaug.runs import Run
from odmaug.train_step import EMA, TrainStep, same_emas_note


def generator_train_step(model: nn.Module, cfg: TrainConfig, device: torch.device,
                         dtype: torch.dtype | None) -> TrainStep:
    """The generator's training step over ``model`` (already on ``device``): Adam with ``cfg``'s
    lr, betas and weight decay, ``cfg.grad_clip``, and an EMA of ``cfg.ema_decay`` after
    ``cfg.ema_warmup`` copying steps (plus one EMA per ``cfg.ema_decays`` entry, with the same
    warm-up). The trainer and the speed benchmarks time this unit."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                 weight_decay=cfg.weight_decay, foreach=True)
    return TrainStep(model, optimizer, device, dtype, grad_clip=cfg.grad_clip,
                     ema=EMA(model, cfg.ema_decay, cfg.ema_warmup),
                     extra_emas=[EMA(model, decay, cfg.ema_warmup) for decay in cfg.ema_decays])


def local_batch_size(batch_size: int, world: int) -> int:
    """Each of ``world`` processes' share of the global ``train.batch_size``.

    Raises:
        OdmaugError: the batch does not split evenly over the processes.
    """
    if batch_size % world:
        raise OdmaugError(f"train.batch_size={batch_size} must be divisible by the {world} processes")
    return batch_size // world


def check_training_recipe(recipe: Recipe, device: torch.device | None = None) -> None:
    """Fail fast (before a run folder is made) on settings that cannot train: device, precision,
    a network that does not fit the image size, a batch that does not split over the processes.

    ``device``: the command's resolved device (default: ``recipe.device``, resolved here)."""
    device = resolve_device(device or recipe.device)
    resolve_precision(recipe.train.precision, device)
    resolve_precision(recipe.sample.precision, device)
    with torch.random.fork_rng(devices=[]):  # a CPU build + one forward pass (odmaug.probe); RNG untouched
        build_generator(recipe.generator, recipe.data.num_classes, recipe.image_size("generator"))
    if note := unreached_attention(recipe.generator, recipe.image_size("generator")):
        warn(note)
    if note := same_emas_note(recipe.train):
        warn(note)
    local_batch_size(recipe.train.batch_size, ddp_utils.launch_env().world_size)
    if recipe.sample.steps > recipe.diffusion.timesteps:
        raise OdmaugError(f"sample.steps={recipe.sample.steps} exceeds diffusion.timesteps={recipe.diffusion.timesteps}")
    NoiseSchedule.from_config(recipe.diffusion).check_reaches_noise()


class _Trainer:
    """The state of one training call; see :func:`train_generator` (checkpoint and resume: ``checkpointer``)."""

    def __init__(self, run: Run, recipe: Recipe, resume: bool, show_progress: bool,
                 context: ddp_utils.Context, train: Optional[ImageTable] = None) -> None:
        self.run, self.recipe, self.cfg = run, recipe, recipe.train
        self.show_progress, self.context, self.device = show_progress, context, context.device
        self.gen_dir = run.root / "generator"
        self.local_batch = local_batch_size(self.cfg.batch_size, context.world_size)
        self.num_classes, self.size = recipe.data.num_classes, recipe.image_size("generator")
        self.dtype = resolve_precision(self.cfg.precision, self.device)
        self._load_data(train)
        # Initial weights from the recipe seed (identical on every rank; DDP also broadcasts them).
        torch.manual_seed(recipe.seed)
        self.model = build_generator(recipe.generator, self.num_classes, self.size, self.pixels.channels)
        self.model = self.model.to(device=self.device, memory_format=torch.channels_last)
        self.unit = generator_train_step(self.model, self.cfg, self.device, self.dtype)
        self.ema = self.unit.ema.module
        self.extra_emas = {ema_stem(e.decay): e.module for e in self.unit.extra_emas}  # checkpoint name -> network
        self.schedule = NoiseSchedule.from_config(recipe.diffusion)
        self.loss_fn = DiffusionLoss(recipe.diffusion, self.num_classes)
        self.pool = ClassPool(self.images, self.labels, self.num_classes) if recipe.diffusion.ordinal.mode == "cross-image" else None
        # One random stream per rank; dropout draws from torch's global RNG, seeded per rank too.
        self.rng = torch.Generator().manual_seed(recipe.seed * 1000 + context.rank + 1)
        torch.manual_seed(recipe.seed * 1000 + context.rank + 500)
        self.checkpointer = Checkpointer(
            model=self.model, ema=self.ema, extra_emas=self.extra_emas, unit=self.unit, rng=self.rng, context=context,
            dtype=self.dtype, gen_dir=self.gen_dir, cfg=self.cfg, num_classes=self.num_classes, pixels=self.pixels,
            log=self._log)
        self.step = self.checkpointer.restore() if resume else 0
        self.forward_model: nn.Module = self.model
        if context.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.cfg.compile:
            self.forward_model = torch.compile(self.forward_model)

    # ----------------------------------------------------------------- set-up
    def _load_data(self, train: Optional[ImageTable]) -> None:
        table = load_table(self.recipe.data) if train is None else train
        if table.num_classes != self.num_classes:
            raise OdmaugError(f"data has {table.num_classes} grades but data.num_classes is {self.num_classes}")
        train = table.split("train") if train is None else train
        if len(train) == 0:
            raise OdmaugError(f"{table.name}: no images in the train split")
        self.pixels = train.pixel_format()  # the network's channels; the checkpoint records both
        self.images = load_uint8(train, self.size, self.recipe.data.crop_box, progress=self.show_progress).to(self.device)
        self.labels = torch.tensor(train.labels, dtype=torch.long)  # [N] on CPU: no device syncs
        self.class_counts = torch.bincount(self.labels, minlength=self.num_classes).tolist()

    # ----------------------------------------------------------------- helpers
    def _log(self, event: str, **fields) -> None:
        if self.context.is_main:
            self.run.log(event, **fields)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch: images float [b, C, H, W] in [-1, 1] (channels_last), labels [b] on CPU."""
        g = self.rng
        index = torch.randint(len(self.labels), (self.local_batch,), generator=g)
        x = to_model_range(self.images[index.to(self.device)])
        for flip, dim in ((self.cfg.hflip, 3), (self.cfg.vflip, 2)):
            if flip:  # one coin per image, applied with where(): no loop over samples
                coin = (torch.rand(self.local_batch, generator=g) < 0.5).to(self.device)
                x = torch.where(coin[:, None, None, None], x.flip(dim), x)
        return x.contiguous(memory_format=torch.channels_last), self.labels[index]

    def sample_grid(self) -> Path | None:
        """EMA samples, one row per grade (seeds 0.., fixed), as ``samples/grid-<step>.png``."""
        if not self.context.is_main:
            return None
        s = self.recipe.sample
        # the run's sample section as it is, but never compiling the EMA mid-training
        settings = s.model_copy(update={"steps": min(s.steps, self.schedule.timesteps), "compile": False})
        path = self.gen_dir / "samples" / f"grid-{self.step:08d}.png"
        title = f"{self.recipe.name} step {self.step} (EMA, {s.sampler} {s.steps} steps, guidance {s.guidance_scale})"
        draw_sample_grid(self.ema, self.schedule, settings, self.cfg.grid_per_grade, path, title, self.device)
        self._log("sample_grid", step=self.step, path=str(path.relative_to(self.run.root)))
        return path

    # ----------------------------------------------------------------- the loop
    def _step(self, guard: InterruptGuard) -> tuple[dict[str, torch.Tensor], float]:
        """One optimizer step; the updates that make step k into step k + 1 run with Ctrl-C held back."""
        x, labels = self._batch()
        lr = learning_rate(self.step + 1, self.cfg)
        self.unit.set_lr(lr)
        out = self.unit.backward(
            lambda: self.loss_fn(self.forward_model, x, labels, self.schedule, self.rng, self.pool))
        with guard.hold():
            self.unit.apply(self.step + 1)  # optimizer and EMA
            self.step += 1
            self.checkpointer.snapshot_rng()
        return out, lr

    def _log_losses(self, sums: torch.Tensor, n_sum: int, lr: float, since: tuple[float, int]) -> str:
        """Log the mean losses since the last log point; returns the progress bar's text."""
        l_dm, l_ord, loss = (sums / n_sum).tolist()  # the only host sync, at log points
        it_s = (self.step - since[1]) / max(time.perf_counter() - since[0], 1e-9)
        self._log("train", step=self.step, l_dm=l_dm, l_ord=l_ord, loss=loss, lr=lr, it_s=round(it_s, 4),
                  img_s=round(it_s * self.cfg.batch_size, 2))
        return f"loss {loss:.4f} (dm {l_dm:.4f}, ord {l_ord:.4f})"

    def _loop(self, guard: InterruptGuard, bar) -> None:
        cfg, total = self.cfg, self.cfg.steps
        task = bar.add_task("training generator", total=total, completed=self.step, info="") if bar is not None else None
        sums = torch.zeros(3, device=self.device)  # running l_dm, l_ord, loss between log points
        n_sum, since = 0, (time.perf_counter(), self.step)
        while self.step < total:
            out, lr = self._step(guard)
            sums += torch.stack([out["l_dm"], out["l_ord"], out["loss"]]).detach()
            n_sum += 1
            if bar is not None:
                bar.update(task, advance=1)
            if self.step % cfg.log_every == 0 or self.step == total:
                info = self._log_losses(sums, n_sum, lr, since)
                if bar is not None:
                    bar.update(task, info=info)
                sums.zero_()
                n_sum, since = 0, (time.perf_counter(), self.step)
            if self.step % cfg.checkpoint_every == 0 or self.step == total:
                with guard.hold():  # Ctrl-C waits for the checkpoint rather than tearing it
                    self.checkpointer.save(self.step)
            if self.step % cfg.sample_every == 0 or self.step == total:
                self.sample_grid()
                ddp_utils.barrier(self.context)

    def train(self) -> TrainResult:
        cfg, start_step = self.cfg, self.step
        self.checkpointer.check_room()
        self._log(
            "train_start", step=start_step, steps=cfg.steps, device=str(self.device),
            precision=precision_name(self.dtype), precision_setting=cfg.precision, cpu_bf16_flags=list(cpu_bf16_flags()),
            world_size=self.context.world_size, backend=self.context.backend, global_batch=cfg.batch_size,
            per_rank_batch=self.local_batch, train_images=len(self.labels), class_counts=self.class_counts,
            parameters=sum(p.numel() for p in self.model.parameters()),
            channels=self.pixels.channels, bits=self.pixels.bits,
            ordinal=self.recipe.diffusion.ordinal.model_dump(), ordinal_active=self.loss_fn.active,
        )
        self.model.train()
        self.checkpointer.snapshot_rng()
        t0 = time.perf_counter()
        with ExitStack() as stack:
            bar = stack.enter_context(progress("step")) if (self.context.is_main and self.show_progress) else None
            guard = stack.enter_context(InterruptGuard())
            try:
                self._loop(guard, bar)
            except KeyboardInterrupt:
                self.checkpointer.save_on_interrupt(self.step, start_step)  # keep the steps done so far, then stop
                raise
        return self.checkpointer.finish(self.step, start_step, time.perf_counter() - t0)


def train_generator(
    run: Run, recipe: Recipe | None = None, *, resume: bool = False, show_progress: bool = True,
    on_ready: Callable[[], None] | None = None, context: ddp_utils.Context | None = None,
    train: Optional[ImageTable] = None,
) -> TrainResult:
    """Train the run's generator (ODM, or DM when ``diffusion.ordinal.gamma == 0``).

    Args:
        run: the run folder (made by :func:`odmaug.runs.create_run`); output goes to ``generator/``.
        recipe: settings (default: the run's ``config.yaml``).
        resume: continue from the run's latest checkpoint (weights, EMA, optimizer, RNG state), or
            from step 0 when the run has none yet.
        show_progress: rich progress bar on stderr (rank 0 only).
        on_ready: called on rank 0 once the data, the network and a resumed checkpoint are loaded
            and fit ``recipe``, before any step: the place to record a changed recipe, so that one
            the checkpoint refuses changes nothing in the run.
        context: the command's device and process group (:func:`odmaug.distributed.init_distributed`);
            default: made here from ``recipe.device`` and torchrun's environment.
        train: the images to train on (all rows are used, whatever their split), e.g. one
            cross-validation fold's training part; default: the ``train`` split of ``recipe.data``.

    Returns:
        A :class:`TrainResult` (steps done, wall time, images/s, peak memory, precision).
    """
    recipe = recipe or run.recipe()
    context = context or ddp_utils.init_distributed(recipe.device)
    trainer = _Trainer(run, recipe, resume, show_progress, context, train)
    if on_ready is not None and trainer.context.is_main:
        on_ready()
    if trainer.step >= recipe.train.steps:
        if trainer.context.is_main:
            run.log("train_skipped", step=trainer.step, steps=recipe.train.steps)
        return TrainResult(run.root, trainer.step, 0, 0.0, 0.0, peak_memory_mb(trainer.device),
                           precision_name(trainer.dtype), trainer.context.world_size)
    return trainer.train()
