"""Grade translation (SDEdit, Meng et al. 2022): noise a real image part way, then denoise it with
another grade.

A source x0 (float [B, 3, H, W] in [-1, 1]) is noised to the start timestep t0 with the forward
process, x_t0 = sqrt(abar_t0) x0 + sqrt(1 - abar_t0) eps (eps from the image's own CPU rng,
as in :func:`odmaug.diffusion.sampling.generate`), then denoised by
:func:`odmaug.diffusion.sampling.sample` (the one DDIM/DDPM loop) over the listed timesteps at or
below t0, guided towards the target grade. ``strength`` = t0 / T: 0 keeps the source, 1 starts from pure noise (the source
is dropped), which is exactly :func:`generate` for the same seed.

With ``invert`` the forward noise is not drawn but found: deterministic DDIM inversion (Song et al.
2021, run backwards as in diffusers' ``DDIMInverseScheduler``; the same loop walking up) takes
the source up the same timesteps with the unconditional eps, so the result no longer depends on the seed and a grade
change keeps more of the source's layout.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from odmaug.config import SampleConfig
from odmaug.diffusion.samplers import mid_chain_names, mid_chain_sampler
from odmaug.diffusion.sampling import per_image_noise, sample
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.errors import OdmaugError

"""Samplers with a single-step update that can start mid-chain (the multistep solvers keep history)."""


def start_timestep(strength: float, timesteps: int) -> int:
    """t0 = round(strength x T), capped at T - 1 (the last index of a T-step schedule); -1 for strength 0."""
    if not 0.0 <= strength <= 1.0:
        raise OdmaugError(f"strength must be in [0, 1] (got {strength})")
    return min(timesteps - 1, int(round(strength * timesteps))) if strength > 0 else -1


def translation_timesteps(schedule: NoiseSchedule, strength: float, steps: int, spacing: str = "trailing") -> list[int]:
    """The sampler's timesteps (``sampling_timesteps(steps, spacing)``) at or below t0, highest first.

    The chain starts at the first of them (the image is noised to that timestep, not to t0
    itself, so every step goes between two listed timesteps); when t0 is below every listed
    timestep the chain is the single step [t0]. Empty for strength 0.
    """
    listed = schedule.sampling_timesteps(steps, spacing)
    if strength >= 1.0:
        return listed  # pure noise: the whole chain, as generation
    t0 = start_timestep(strength, schedule.timesteps)
    if t0 < 0:
        return []
    return [t for t in listed if t <= t0] or [t0]


def effective_strength(schedule: NoiseSchedule, strength: float, steps: int, spacing: str = "trailing") -> float:
    """The strength a chain really runs: (its first timestep + 1) / T, 0 for an empty chain.

    A nominal strength is rounded down to the sampler's grid, so at T = 100 with 5 trailing steps
    (99, 79, 59, 39, 19) the nominal 0.5 and 0.55 both start at t = 39 and run the same chain
    (effective 0.4); strength 1 starts at t = T - 1 (effective 1.0).
    """
    chain = translation_timesteps(schedule, strength, steps, spacing)
    return (chain[0] + 1) / schedule.timesteps if chain else 0.0


def check_distinct_chains(schedule: NoiseSchedule, strengths: Sequence[float], steps: int, spacing: str,
                          what: str = "strengths") -> dict[float, float]:
    """Nominal -> effective strength of each candidate; raises when two run the same chain.

    Raises:
        OdmaugError: two nominal strengths start at the same timestep (they would give identical
            images and count as two candidates), naming both, the shared start and ``what``.
    """
    effective: dict[float, float] = {}
    for strength in sorted(strengths):
        value = effective_strength(schedule, strength, steps, spacing)
        twin = next((s for s, v in effective.items() if v == value), None)
        if twin is not None:
            raise OdmaugError(f"{what}: {twin:g} and {strength:g} run the same chain (both start at "
                              f"t = {round(value * schedule.timesteps) - 1} of T = {schedule.timesteps} with {steps} "
                              f"{spacing} steps, effective strength {value:g}); keep one")
        effective[strength] = value
    return effective


@torch.no_grad()
def translate(model: nn.Module, schedule: NoiseSchedule, source: torch.Tensor, labels: Sequence[int] | torch.Tensor,
              seeds: Sequence[int], strength: float, settings: Optional[SampleConfig] = None, *,
              device: str | torch.device = "cpu", invert: bool = False) -> torch.Tensor:
    """SDEdit: ``source`` [N, 3, H, W] in [-1, 1] (CPU) re-graded to ``labels`` [N]; float32 [N, 3, H, W] on CPU.

    ``settings`` is a recipe's ``sample`` section (None: ``SampleConfig()``, as in
    :func:`odmaug.diffusion.sampling.generate`); its sampler must be ddim or ddpm. ``strength`` is
    t0 / T in [0, 1] (0 returns the source; commands take it from ``augment.strength``, checked
    there; here only [0, 1] is enforced, by :func:`start_timestep`). Image ``i`` depends only on
    ``seeds[i]``, its source and the settings; its generator draws the forward noise first, then
    any noise of stochastic steps (``ddpm`` or ``eta > 0``). Strength 1 equals
    :func:`odmaug.diffusion.sampling.generate` with the same seed and settings (without ``invert``;
    with it, x_T comes from :func:`ddim_invert` and ``seeds`` only feed stochastic steps).
    """
    settings = settings or SampleConfig()
    if not mid_chain_sampler(settings.sampler):
        raise OdmaugError(f"translation needs --sampler {mid_chain_names()} (got {settings.sampler!r})")
    device = torch.device(device)
    labels_t = torch.as_tensor(labels, dtype=torch.long).view(-1).to(device)
    if len(seeds) != source.shape[0] or len(labels_t) != source.shape[0]:
        raise OdmaugError(f"need one seed and one grade per source image ({source.shape[0]})")
    timesteps = translation_timesteps(schedule, strength, settings.steps, settings.timestep_spacing)
    if not timesteps:
        return source.float().cpu().clone()
    rngs = [torch.Generator().manual_seed(int(s)) for s in seeds]
    # channels_last as in generate(), so that strength 1 rounds exactly as generation does
    eps = per_image_noise(rngs, tuple(source.shape[1:]), device).contiguous(memory_format=torch.channels_last)
    null_label = int(model.num_classes)
    if invert:
        x = ddim_invert(model, schedule, source.float().to(device), timesteps, null_label, settings.precision)
    elif strength >= 1.0:
        x = eps  # x_T is pure noise: the source has no weight left
    else:
        x = schedule.q_sample(source.float().to(device), torch.full((len(rngs),), timesteps[0], device=device), eps)
    x = sample(model, x, labels_t, schedule, settings, timesteps=timesteps, rngs=rngs, null_label=null_label)
    return x.float().cpu()


def ddim_invert(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, timesteps: Sequence[int],
                null_label: int, precision: str = "fp32") -> torch.Tensor:
    """Deterministic DDIM inversion (eta = 0, Song et al. 2021): x0 [B, 3, H, W] in [-1, 1] -> x at
    ``timesteps[0]`` (``timesteps`` descending, as the denoising chain will walk them).

    Each step from t_prev up to t reuses the unconditional eps at (x_{t_prev}, t) (the usual
    approximation: eps changes little between neighbouring timesteps), so no grade is needed; it
    is :func:`odmaug.diffusion.sampling.sample` walking up, unclipped, under ``precision``'s autocast.
    """
    labels = torch.full((x0.shape[0],), null_label, device=x0.device, dtype=torch.long)
    settings = SampleConfig(sampler="ddim", eta=0.0, guidance_scale=1.0, clip_x0=False, precision=precision)
    return sample(model, x0, labels, schedule, settings, timesteps=timesteps, invert=True, null_label=null_label)
