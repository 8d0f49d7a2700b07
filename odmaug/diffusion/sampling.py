"""Samplers (DDPM, DDIM, DPM-Solver++ (2M), UniPC) with classifier-free guidance, and per-seed generation.

Every sampler has the same signature (``sample``); the multistep ODE solvers are diffusers'
schedulers (:mod:`odmaug.diffusion.solvers`). Reproducibility follows EDM's ``generate.py`` and
diffusers PR #1924: image ``i`` gets its own CPU ``torch.Generator`` seeded with ``seeds[i]``,
which draws its initial noise and every noise of the stochastic updates, so an image depends only
on its seed, not on the batch it was generated in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Callable, Literal, Optional, Sequence, Union

import torch
from torch import nn

from odmaug.console import progress
from odmaug.precision import autocast, resolve_precision
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.diffusion.solvers import SOLVERS, solve
from odmaug.errors import OdmaugError

SAMPLERS = ("ddim", "ddpm") + SOLVERS

CompileSetting = Union[bool, Literal["auto"]]
COMPILE_MIN_IMAGE_STEPS = 20_000
"""``compile: auto`` compiles when a call denoises at least this many image-steps (e.g. 400 images
of 50 steps). On a 2-core AVX2 CPU (benchmarks/generator_speed.py) the 8.95 M network compiles in
36 s and then samples 1.05x faster: 20,000 image-steps (~15 min eager) is about where that breaks
even; where compiling gains more (GPUs), it pays sooner."""


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
    """Classifier-free guided eps = eps_u + s (eps_c - eps_u), float32 [B, 3, H, W].

    The conditional and unconditional passes go through the network as ONE batch of 2B; with
    s = 1 the guided estimate is the conditional one, so only the conditional pass is run.
    """
    if guidance_scale == 1.0:
        return model(x, t, labels).float()
    null = torch.full_like(labels, null_label)
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).float().chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


def _per_image_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One draw [len(generators), *shape] where row i comes from generators[i] (CPU draws, then moved)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


@torch.no_grad()
def sample(
    model: nn.Module,
    noise: torch.Tensor,
    labels: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    sampler: str = "ddim",
    steps: int = 100,
    eta: float = 0.0,
    guidance_scale: float = 1.0,
    clip_x0: bool = True,
    timestep_spacing: str = "trailing",
    generators: Optional[Sequence[torch.Generator]] = None,
    null_label: Optional[int] = None,
    on_step: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """Denoise ``noise`` (x_T) into images with grades ``labels``.

    Args:
        model: eps network ``model(x, t, labels)`` (call inside autocast for low precision).
        noise: x_T [B, 3, H, W] on the model's device.
        labels: grades [B] on the same device.
        schedule: the noise schedule the model was trained with.
        sampler: ``ddim`` (generalised update with ``eta``) or ``ddpm`` (ancestral: posterior
            mean and posterior variance; with ``steps < T`` the respaced process), or a
            deterministic multistep ODE solver: ``dpmpp-2m`` (DPM-Solver++ (2M), Lu et al. 2022)
            or ``unipc`` (UniPC bh2, Zhao et al. 2023), see :mod:`odmaug.diffusion.solvers`.
        steps: number of denoising steps (``T`` for the full DDPM chain).
        timestep_spacing: ``trailing`` (from t = T - 1 for every step count), ``linspace`` or
            ``leading``, as diffusers' ``timestep_spacing`` (see ``NoiseSchedule.sampling_timesteps``).
            Each step goes to the next listed timestep (diffusers' DDIM goes to t - T // steps,
            which differs from the list when the spacing is not uniform).
        eta: DDIM stochasticity (0 deterministic, 1 = DDPM posterior variance); ignored by ddpm,
            dpmpp-2m and unipc.
        guidance_scale: s of classifier-free guidance (1 = conditional model).
        clip_x0: clip each predicted x0 to [-1, 1] (ddim and ddpm re-derive the eps of the update
            from the clipped x0, as in diffusers; dpmpp-2m and unipc integrate the clipped x0).
        generators: per-image CPU generators for the noise of stochastic updates (needed when
            ``sampler == "ddpm"`` or ``eta > 0``).
        null_label: the null class (default: the model's ``num_classes``).
        on_step: called after every denoising step (progress bars).

    Returns:
        float32 images [B, 3, H, W] in [-1, 1] (when clipped).
    """
    if sampler not in SAMPLERS:
        raise OdmaugError(f"unknown sampler '{sampler}' (use {', '.join(SAMPLERS)})")
    stochastic = sampler == "ddpm" or (sampler == "ddim" and eta > 0)
    if stochastic and (generators is None or len(generators) != noise.shape[0]):
        raise OdmaugError("stochastic sampling (ddpm or eta > 0) needs one generator per image")
    if null_label is None:
        null_label = int(getattr(model, "num_classes", getattr(getattr(model, "module", None), "num_classes", -1)))
    timesteps = schedule.sampling_timesteps(steps, timestep_spacing)
    if sampler in SOLVERS:

        def eps_model(x_t: torch.Tensor, t: int) -> torch.Tensor:
            t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
            return guided_eps(model, x_t, t_batch, labels, guidance_scale, null_label)

        return solve(sampler, noise, timesteps, schedule, eps_model, clip_x0, on_step)
    x = noise.float()
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(model, x, t_batch, labels, guidance_scale, null_label)
        x = _ancestral_step(schedule, x, eps, t, t_prev, sampler, eta, clip_x0, generators if stochastic else None)
        if on_step is not None:
            on_step()
    return x


def _ancestral_step(schedule: NoiseSchedule, x: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, sampler: str,
                    eta: float, clip_x0: bool, generators: Optional[Sequence[torch.Generator]]) -> torch.Tensor:
    """One DDIM (generalised, with ``eta``) or DDPM (posterior) step from x_t [B, C, H, W] to x_{t_prev}.

    ``generators`` (one per image) draw the step's noise; None for a deterministic step.
    """
    coef = schedule.step_coefficients(t, t_prev, 1.0 if sampler == "ddpm" else eta)
    abar_t, abar_prev = coef["abar_t"], coef["abar_prev"]
    x0 = (x - (1 - abar_t) ** 0.5 * eps) / abar_t**0.5
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x - abar_t**0.5 * x0) / (1 - abar_t) ** 0.5
    if sampler == "ddpm":
        # posterior q(x_prev | x_t, x0): mean c0 x0 + ct x_t, variance beta_tilde
        beta = 1.0 - abar_t / abar_prev
        x = (abar_prev**0.5 * beta / (1 - abar_t)) * x0 + ((1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar_t)) * x
    else:
        x = abar_prev**0.5 * x0 + coef["dir_coef"] * eps
    if generators is not None and coef["sigma"] > 0:
        x = x + coef["sigma"] * _per_image_noise(generators, tuple(x.shape[1:]), x.device)
    return x


def generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    labels: Sequence[int] | torch.Tensor,
    seeds: Sequence[int] | torch.Tensor,
    *,
    sampler: str = "ddim",
    steps: int = 100,
    eta: float = 0.0,
    guidance_scale: float = 1.0,
    clip_x0: bool = True,
    timestep_spacing: str = "trailing",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = True,
    compile: CompileSetting = False,
    show_progress: bool = False,
) -> torch.Tensor:
    """Images for ``labels`` [N] with per-image ``seeds`` [N]: float32 [N, 3, H, W] in [-1, 1], on CPU.

    Image ``i`` depends only on ``seeds[i]`` (and the model and settings), whatever ``batch_size``:
    its initial noise and every stochastic draw come from ``torch.Generator().manual_seed(seeds[i])``.

    Args:
        model: eps network with ``num_classes``, ``image_size`` and ``in_channels`` attributes.
        precision: ``auto``, ``bf16``, ``fp16`` or ``fp32`` (autocast of the network).
        channels_last: run the network on channels_last tensors (fast on CPUs and GPUs).
        compile: torch.compile the network in place first (``True``, ``False`` or ``"auto"``: when
            ``len(labels) * steps`` is large enough to pay; see :func:`compile_for_sampling`).
        show_progress: show a progress bar of denoising steps (on stderr).
        Other arguments: as in :func:`sample`.
    """
    device = torch.device(device)
    labels_t = torch.as_tensor(labels, dtype=torch.long).view(-1)
    seeds_t = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
    if len(seeds_t) != len(labels_t):
        raise OdmaugError(f"need one seed per image: {len(labels_t)} labels but {len(seeds_t)} seeds")
    num_classes = int(model.num_classes)
    if len(labels_t) and (int(labels_t.min()) < 0 or int(labels_t.max()) >= num_classes):
        raise OdmaugError(f"grades must be in 0..{num_classes - 1} (got {labels_t.min().item()}..{labels_t.max().item()})")
    if batch_size < 1:
        raise OdmaugError("batch_size must be at least 1")
    schedule.sampling_timesteps(steps, timestep_spacing)  # a bad step count or spacing fails before any work
    dtype = resolve_precision(precision, device)
    compile_for_sampling(model, compile, len(labels_t) * steps, device)
    size, channels = int(model.image_size), int(getattr(model, "in_channels", 3))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((len(labels_t), channels, size, size), dtype=torch.float32)
    n_batches = -(-len(labels_t) // batch_size)
    with contextlib.ExitStack() as stack:
        on_step = None
        if show_progress and len(labels_t):
            bar = stack.enter_context(progress("step"))
            task = bar.add_task(f"sampling {len(labels_t)} images", total=n_batches * steps, info="")
            on_step = lambda: bar.update(task, advance=1)  # noqa: E731
        for start in range(0, len(labels_t), batch_size):
            chunk = slice(start, start + batch_size)
            gens = [torch.Generator().manual_seed(s) for s in seeds_t[chunk]]
            noise = _per_image_noise(gens, (channels, size, size), device).contiguous(memory_format=memory_format)
            with autocast(device, dtype):
                images = sample(
                    model, noise, labels_t[chunk].to(device), schedule,
                    sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale, clip_x0=clip_x0,
                    timestep_spacing=timestep_spacing, generators=gens, null_label=num_classes, on_step=on_step,
                )
            out[chunk] = images.float().cpu()
    return out
