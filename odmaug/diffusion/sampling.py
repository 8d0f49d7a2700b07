"""Samplers (DDPM, DDIM, DPM-Solver++ (2M), UniPC) with classifier-free guidance, and per-seed generation.

Every sampler has the same signature (``sample``) and takes its settings as one
:class:`~odmaug.config.SampleConfig`: a recipe's ``sample`` section, into which a command has
merged its command-line options once (:func:`sample_settings`); a call without one uses
``SampleConfig()``, the recipe defaults (guidance 2, precision auto). The multistep ODE solvers are
diffusers' schedulers (:mod:`odmaug.diffusion.solvers`). Reproducibility follows EDM's
``generate.py`` and diffusers PR #1924: image ``i`` gets its own CPU ``torch.Generator`` seeded with
``seeds[i]``, which draws its initial noise and every noise of the stochastic updates, so an image
depends only on its seed, not on the batch it was generated in. The network may predict eps or v
(``NoiseSchedule.prediction``, recorded with the run): every sampler converts its output in
:mod:`odmaug.diffusion.parameterization`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Callable, Literal, Optional, Sequence, Union

import torch
from torch import nn

from odmaug.config import SampleConfig, merge_options
from odmaug.console import progress
from odmaug.diffusion.ddim import per_image_noise, walk
from odmaug.diffusion.samplers import SAMPLERS, Walk
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.errors import OdmaugError
from odmaug.precision import autocast, resolve_precision

CompileSetting = Union[bool, Literal["auto"]]
COMPILE_MIN_IMAGE_STEPS = 20_000
"""``compile: auto`` compiles when a call denoises at least this many image-steps (e.g. 400 images
of 50 steps). On a 2-core AVX2 CPU (studies/generator_speed.py) the 8.95 M network compiles in
36 s and then samples 1.05x faster: 20,000 image-steps (~15 min eager) is about where that breaks
even; where compiling gains more (GPUs), it pays sooner."""


def sample_settings(settings: SampleConfig, **options: Any) -> SampleConfig:
    """A command's sample settings: its run's ``sample`` section with the command-line ``options``
    that are not None merged in (:func:`odmaug.config.merge_options`), once, before any work.

    Raises:
        OdmaugError: a value the section refuses, or a sampler that is not registered
            (:data:`~odmaug.diffusion.samplers.SAMPLERS`).
    """
    merged = merge_options(settings, **options)
    SAMPLERS.check(merged.sampler)
    return merged


def can_compile(device: torch.device) -> bool:
    """True where torch.compile's default backend can build kernels: CUDA, or a CPU with a C++ compiler."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("c++") is not None


def compile_for_sampling(model: nn.Module, setting: CompileSetting, image_steps: int, device: torch.device) -> bool:
    """Compile ``model`` in place (``nn.Module.compile``) for sampling when ``setting`` asks for it.

    ``True`` always compiles (an error where no compiler backend is available), ``False`` never,
    ``"auto"`` when the work (``image_steps`` = images x denoising steps) is large enough for the
    compile time to pay off (:data:`COMPILE_MIN_IMAGE_STEPS`) and the device can compile. The
    weights and ``state_dict`` are unchanged; kernels are built on the first call of each batch
    shape (static shapes) and cached on disk by inductor. Returns whether ``model`` is compiled.
    Compiled kernels round differently from eager ones (relative eps difference ~1e-6 in fp32).
    """
    if getattr(model, "_compiled_call_impl", None) is not None:
        return True
    if setting is False or (setting == "auto" and image_steps < COMPILE_MIN_IMAGE_STEPS):
        return False
    if not can_compile(device):
        if setting is True:
            raise OdmaugError(
                f"sample.compile is on but torch.compile cannot build kernels on {device} "
                "(a CPU needs a C++ compiler such as g++ on PATH); use compile: false"
            )
        return False
    model.compile(dynamic=False)
    return True


def guided_eps(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance_scale: float, null_label: int
) -> torch.Tensor:
    """Classifier-free guided output = out_u + s (out_c - out_u), float32 [B, 3, H, W] (Ho & Salimans 2022).

    The output is the network's eps or v. Guiding v is guiding eps: eps = alpha v + sigma x is affine
    in v and the weights 1 - s and s sum to 1, so eps(v_guided) = eps_u + s (eps_c - eps_u). The
    conditional and unconditional passes go through the network as ONE batch of 2B; with s = 1 the
    guided estimate is the conditional one, so only the conditional pass is run.
    """
    if guidance_scale == 1.0:
        return model(x, t, labels).float()
    null = torch.full_like(labels, null_label)
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).float().chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def sample(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    schedule: NoiseSchedule,
    settings: Optional[SampleConfig] = None,
    *,
    timesteps: Optional[Sequence[int]] = None,
    invert: bool = False,
    rngs: Optional[Sequence[torch.Generator]] = None,
    null_label: Optional[int] = None,
    on_step: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """Denoise ``x`` (by default x_T, pure noise) into images with grades ``labels``.

    Args:
        model: network ``model(x, t, labels)`` predicting ``schedule.prediction``, run under ``settings.precision``.
        x: x_T [B, 3, H, W] on the model's device (an image at ``timesteps[0]``: SDEdit; clean: ``invert``).
        labels: grades [B] on the same device.
        schedule: the noise schedule the model was trained with (and its ``prediction``).
        settings: a recipe's ``sample`` section (None: ``SampleConfig()``); its fields are described
            in :class:`~odmaug.config.SampleConfig`. ddim, ddpm: :mod:`odmaug.diffusion.ddim` (eps
            re-derived from the clipped x0, as diffusers does); the solvers: :mod:`odmaug.diffusion.solvers`.
        timesteps: the descending timesteps to visit, starting at ``x``'s own (default: the
            settings' whole list from x_T); the last step goes to the clean image.
        invert: DDIM inversion (Song et al. 2021; diffusers' ``DDIMInverseScheduler``): ``x`` is
            clean and goes up through ``timesteps`` (ascending) to ``timesteps[0]``; ddim, eta 0.
        rngs: per-image CPU rngs for the noise of stochastic updates (ddpm, eta > 0).
        null_label: the null class (default: the model's ``num_classes``).
        on_step: called after every step (progress bars).

    Returns:
        float32 images [B, 3, H, W] in [-1, 1] (when clipped); with ``invert``, x at ``timesteps[0]``.
    """
    settings = settings or SampleConfig()
    sampler = SAMPLERS.get(settings.sampler)
    if null_label is None:
        null_label = int(getattr(model, "num_classes", getattr(getattr(model, "module", None), "num_classes", -1)))
    if timesteps is None:
        timesteps = schedule.sampling_timesteps(settings.steps, settings.timestep_spacing)
    s = settings.guidance_scale

    def denoiser(x_t: torch.Tensor, t: int) -> torch.Tensor:
        t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        return guided_eps(model, x_t, t_batch, labels, s, null_label)

    with autocast(x.device, resolve_precision(settings.precision, x.device)):
        if invert:
            if settings.sampler != "ddim" or settings.eta != 0:
                raise OdmaugError("DDIM inversion needs the deterministic ddim sampler (eta 0)")
            return walk(schedule, x, [-1, *reversed(timesteps)], denoiser, settings, None, on_step)
        return sampler.run(Walk(schedule, x, list(timesteps), denoiser, settings, rngs, on_step))


def generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    labels: Sequence[int] | torch.Tensor,
    seeds: Sequence[int] | torch.Tensor,
    settings: Optional[SampleConfig] = None,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    show_progress: bool = False,
) -> torch.Tensor:
    """Images for ``labels`` [N] with per-image ``seeds`` [N]: float32 [N, 3, H, W] in [-1, 1], on CPU.

    Image ``i`` depends only on ``seeds[i]`` (and the model and settings), whatever the batch size:
    its initial noise and every stochastic draw come from ``torch.Generator().manual_seed(seeds[i])``.

    Args:
        model: network with ``num_classes``, ``image_size`` and ``in_channels`` attributes, predicting
            ``schedule.prediction``.
        settings: a recipe's ``sample`` section (None: ``SampleConfig()``), as in :func:`sample`;
            its ``batch_size`` (images per network batch), ``precision`` (autocast) and
            ``compile`` (torch.compile in place first; ``auto`` when ``len(labels) * steps`` pays,
            see :func:`compile_for_sampling`) apply here too.
        device: where the network runs.
        channels_last: run the network on channels_last tensors (fast on CPUs and GPUs).
        show_progress: show a progress bar of denoising steps (on stderr).

    Raises:
        OdmaugError: a seed count unlike the label count, grades outside 0..C-1, bad settings.
    """
    settings = settings or SampleConfig()
    SAMPLERS.check(settings.sampler)
    device = torch.device(device)
    labels_t, seeds_t = _check_request(model, labels, seeds)
    schedule.sampling_timesteps(settings.steps, settings.timestep_spacing)  # a bad step count fails before any work
    compile_for_sampling(model, settings.compile, len(labels_t) * settings.steps, device)
    size, channels = int(model.image_size), int(getattr(model, "in_channels", 3))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((len(labels_t), channels, size, size), dtype=torch.float32)
    batch = settings.batch_size
    with _step_bar(show_progress, len(labels_t), -(-len(labels_t) // batch) * settings.steps) as on_step:
        for start in range(0, len(labels_t), batch):
            chunk = slice(start, start + batch)
            rngs = [torch.Generator().manual_seed(s) for s in seeds_t[chunk]]
            noise = per_image_noise(rngs, (channels, size, size), device).contiguous(memory_format=memory_format)
            images = sample(model, noise, labels_t[chunk].to(device), schedule, settings, rngs=rngs,
                            null_label=int(model.num_classes), on_step=on_step)
            out[chunk] = images.float().cpu()
    return out


def _check_request(model: nn.Module, labels, seeds) -> tuple[torch.Tensor, list[int]]:
    """``labels`` as a long tensor [N] and ``seeds`` as N ints, checked against each other and the model."""
    labels_t = torch.as_tensor(labels, dtype=torch.long).view(-1)
    seeds_t = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
    if len(seeds_t) != len(labels_t):
        raise OdmaugError(f"need one seed per image: {len(labels_t)} labels but {len(seeds_t)} seeds")
    num_classes = int(model.num_classes)
    if len(labels_t) and (int(labels_t.min()) < 0 or int(labels_t.max()) >= num_classes):
        raise OdmaugError(f"grades must be in 0..{num_classes - 1} (got {labels_t.min().item()}..{labels_t.max().item()})")
    return labels_t, seeds_t


@contextlib.contextmanager
def _step_bar(show: bool, images: int, total_steps: int):
    """A progress bar of denoising steps on stderr; yields its ``on_step`` callback (None: no bar)."""
    if not show or not images:
        yield None
        return
    with progress("step") as bar:
        task = bar.add_task(f"sampling {images} images", total=total_steps, info="")
        yield lambda: bar.update(task, advance=1)
