"""The single-step samplers, DDIM and ancestral DDPM, and DDIM inversion: one loop, :func:`walk`.

* DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12), with ``eta``:
  ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z``, the update of
  diffusers' ``DDIMScheduler.step`` (``use_clipped_model_output=True`` when x0 is clipped).
* DDPM (Ho et al. 2020, eqs. 6-7): the posterior q(x_prev | x_t, x0) with variance beta_tilde, as
  diffusers' ``DDPMScheduler.step`` (``variance_type="fixed_small"``), also over a respaced chain.
* Inversion: the DDIM update walked upwards (diffusers' ``DDIMInverseScheduler``).

The network's output (eps or v, ``NoiseSchedule.prediction``) becomes eps and x0 in
:mod:`odmaug.diffusion.parameterization`; for v, x0 = sqrt(abar) x_t - sqrt(1 - abar) v needs no
division, so a zero-terminal-SNR schedule (abar_{T-1} = 0) starts at x0 = -v.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from odmaug.config import SampleConfig
from odmaug.diffusion.parameterization import Denoiser, to_eps, to_x0
from odmaug.diffusion.schedule import NoiseSchedule


def per_image_noise(rngs: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One draw [len(rngs), *shape] where row i comes from rngs[i] (CPU draws, then moved)."""
    return torch.stack([torch.randn(shape, generator=g) for g in rngs]).to(device)


def walk(schedule: NoiseSchedule, x: torch.Tensor, path: Sequence[int], denoiser: Denoiser, settings: SampleConfig,
         rngs: Optional[Sequence[torch.Generator]] = None,
         on_step: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """The one DDIM/DDPM loop: ``x`` [B, C, H, W] at timestep ``path[0]`` taken to ``path[-1]``
    (-1: the clean image) one single-step update per neighbouring pair.

    The network of a step is evaluated at the noisier of its two timesteps: the start when denoising
    (a descending path), the destination when inverting (an ascending path from -1), as DDIM
    inversion reuses eps(x_{t_prev}, t). Returns float32 x at ``path[-1]``.
    """
    x = x.float()
    for t_from, t_to in zip(path, path[1:]):
        t_eval = max(t_from, t_to)
        eps, x0 = estimates(schedule, denoiser(x, t_eval), x, t_eval, t_from)
        x = _single_step(schedule, x, eps, x0, t_from, t_to, settings, rngs)
        if on_step is not None:
            on_step()
    return x


def level(schedule: NoiseSchedule, t: int) -> tuple[float, float]:
    """alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) as Python floats; t = -1 is the clean image (1, 0)."""
    abar = float(schedule.alphas_cumprod[t]) if t >= 0 else 1.0
    return abar**0.5, (1 - abar) ** 0.5


def estimates(schedule: NoiseSchedule, output: torch.Tensor, x: torch.Tensor, t_eval: int,
              t_from: int) -> tuple[torch.Tensor, torch.Tensor]:
    """eps and x0 [B, C, H, W] for ``x`` at ``t_from`` from the network ``output`` for ``x`` at ``t_eval``.

    Denoising (``t_eval == t_from``): both from the output. Inversion (``t_eval > t_from``): eps is the
    output converted at ``t_eval``, where the network was asked (so a v-network inverts exactly as the
    eps-network alpha v + sigma x would; diffusers' ``DDIMInverseScheduler`` converts v with t_from's
    coefficients instead), and x0 follows from that eps at ``t_from`` (abar > 0 below the top).
    """
    alpha, sigma = level(schedule, t_eval)
    eps = to_eps(output, x, alpha, sigma, schedule.prediction)
    if t_eval == t_from:
        return eps, to_x0(output, x, alpha, sigma, schedule.prediction)
    return eps, to_x0(eps, x, *level(schedule, t_from), "eps")


def _single_step(schedule: NoiseSchedule, x: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int,
                 settings: SampleConfig, rngs: Optional[Sequence[torch.Generator]]) -> torch.Tensor:
    """One DDIM (generalised, with ``eta``) or DDPM (posterior) step from x_t [B, C, H, W] to x_{t_prev},
    given the step's eps and x0 estimates (upwards when ``t_prev > t``: deterministic DDIM only).
    ``rngs`` (one per image) draw the step's noise; None for a deterministic step."""
    ddpm = settings.sampler == "ddpm"
    if t >= 0:
        coef = schedule.step_coefficients(t, t_prev, 1.0 if ddpm else settings.eta)
    else:  # from the clean image up (inversion's first step): abar = 1 there, no noise
        abar = float(schedule.alphas_cumprod[t_prev])
        coef = {"abar_t": 1.0, "abar_prev": abar, "sigma": 0.0, "dir_coef": math.sqrt(1.0 - abar)}
    abar_t, abar_prev = coef["abar_t"], coef["abar_prev"]
    if settings.clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        # 1 - abar_t >= beta_0 > 0 at every t >= 0, also where abar_t = 0
        eps = (x - abar_t**0.5 * x0) / (1 - abar_t) ** 0.5
    if ddpm:
        # posterior q(x_prev | x_t, x0): mean c0 x0 + ct x_t, variance beta_tilde
        beta = 1.0 - abar_t / abar_prev
        x = (abar_prev**0.5 * beta / (1 - abar_t)) * x0 + ((1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar_t)) * x
    else:
        x = abar_prev**0.5 * x0 + coef["dir_coef"] * eps
    if rngs is not None and coef["sigma"] > 0:
        x = x + coef["sigma"] * per_image_noise(rngs, tuple(x.shape[1:]), x.device)
    return x
