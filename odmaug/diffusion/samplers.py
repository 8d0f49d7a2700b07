"""The sampler registry: every way to walk from x_T (or a mid-chain x_t) to a clean image, by name.

A sampler is a :class:`Sampler` in :data:`SAMPLERS`; ``sample.sampler`` in a recipe and
``--sampler`` on the command line name one. Registered:

* ``ddim``: DDIM's generalised update with ``eta`` (Song et al. 2021, eq. 12), :mod:`odmaug.diffusion.ddim`;
* ``ddpm``: the ancestral posterior step (Ho et al. 2020, eqs. 6-7), same module;
* one per multistep ODE solver of :data:`odmaug.diffusion.solvers.SOLVERS` (``dpmpp-2m``, ``unipc``:
  diffusers' schedulers).

A new sampler is a module with its step rule plus one ``SAMPLERS.add`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence

import torch

from odmaug.config import SampleConfig
from odmaug.diffusion.ddim import walk
from odmaug.diffusion.parameterization import Denoiser
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.diffusion.solvers import SOLVERS, solve
from odmaug.errors import OdmaugError
from odmaug.registry import Registry


@dataclass(frozen=True)
class Walk:
    """One call's request: ``x`` [B, C, H, W] at ``timesteps[0]`` walked down ``timesteps``
    (descending) to the clean image; ``rngs`` (one CPU generator per image) draw any noise."""

    schedule: NoiseSchedule
    x: torch.Tensor
    timesteps: Sequence[int]
    denoiser: Denoiser
    settings: SampleConfig
    rngs: Optional[Sequence[torch.Generator]]
    on_step: Optional[Callable[[], None]]


@dataclass(frozen=True)
class Sampler:
    """One registered sampler.

    Attributes:
        run: ``run(walk)`` -> float32 x_0 [B, C, H, W].
        mid_chain: it can start at any timestep of DDIM's chain (SDEdit translation starts there).
    """

    run: Callable[[Walk], torch.Tensor]
    mid_chain: bool


SAMPLERS: Registry[Sampler] = Registry("sampler")


def _chain(w: Walk, stochastic: bool) -> torch.Tensor:
    """DDIM/DDPM down ``w.timesteps`` then to the clean image (-1); noise only for stochastic steps."""
    if stochastic and (w.rngs is None or len(w.rngs) != w.x.shape[0]):
        raise OdmaugError("stochastic sampling (ddpm or eta > 0) needs one generator per image")
    return walk(w.schedule, w.x, [*w.timesteps, -1], w.denoiser, w.settings,
                w.rngs if stochastic else None, w.on_step)


def _solver(name: str, w: Walk) -> torch.Tensor:
    return solve(name, w.x, list(w.timesteps), w.schedule, w.denoiser, w.settings.clip_x0, w.on_step)


SAMPLERS.add("ddim", Sampler(lambda w: _chain(w, w.settings.eta > 0), mid_chain=True),
             "DDIM (Song et al. 2021) with eta: 0 deterministic, 1 the DDPM posterior variance")
SAMPLERS.add("ddpm", Sampler(lambda w: _chain(w, True), mid_chain=True),
             "ancestral DDPM (Ho et al. 2020): posterior mean and variance")
for _name in SOLVERS:
    SAMPLERS.add(_name, Sampler(partial(_solver, _name), mid_chain=False), SOLVERS.entry(_name).summary)


def mid_chain_sampler(name: str) -> bool:
    """True for a registered sampler that can start mid-chain (translation); raises for an unknown name."""
    return SAMPLERS.get(name).mid_chain


def mid_chain_names() -> str:
    """``ddim or ddpm``: the samplers translation can use, for error lines."""
    return " or ".join(n for n in SAMPLERS if SAMPLERS.get(n).mid_chain)
