"""Multistep ODE solvers of the probability-flow ODE: DPM-Solver++ (2M) and UniPC, via diffusers.

Both are deterministic, higher-order solvers that reach DDIM's quality in fewer network calls:

* ``dpmpp-2m``: DPM-Solver++ (2M), the multistep second-order solver of the data-prediction ODE
  (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
  Models", algorithm 2), as diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
  solver_order=2, solver_type="midpoint")``.
* ``unipc``: UniPC, a second-order predictor (UniP) with a corrector (UniC) that reuses the next
  network call, so it costs nothing extra (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector
  Framework for Fast Sampling of Diffusion Models"), as diffusers' ``UniPCMultistepScheduler(
  solver_type="bh2", solver_order=2, predict_x0=True)``.

The update rules are diffusers' own (a library beats a copy of its arithmetic); odmaug supplies the
schedule (``trained_betas``: exactly the run's betas), the timestep list (odmaug's spacings, also
where diffusers spaces them differently) and the data prediction x0 (from the guided eps or v
output, :mod:`odmaug.diffusion.parameterization`, clipped to [-1, 1] as in DDIM when asked). A
zero-terminal-SNR schedule is handed over with ``rescale_betas_zero_snr=True``, so diffusers applies
its own guard: abar_{T-1} = 2^-24 instead of 0 (a finite first sigma; its x0 for v is then
2^-12 x_T - v, not -v). A fresh scheduler is built for every call, so no multistep
history leaks between batches. Neither solver draws random numbers: an image depends on its seed
only through x_T.

Final steps: ``final_sigmas_type="zero"``, so the last step goes to sigma = 0 and, being first order
there (``lower_order_final``), returns the last x0 prediction, as DDIM's last step does. The first
step is first order too (no history yet). UniPC's corrector needs the next network call, so the last
step is predictor-only.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch

from odmaug.diffusion.parameterization import Denoiser, to_x0
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.errors import OdmaugError
from odmaug.registry import Registry

SOLVERS: Registry[Callable[[dict], object]] = Registry("solver")
"""Multistep solvers by name: ``factory(common)`` -> a diffusers scheduler built with the keyword
arguments ``common`` (schedule, prediction type, order; :func:`build_scheduler`). Each is also a
sampler (:mod:`odmaug.diffusion.samplers`)."""


@SOLVERS.register("dpmpp-2m", "DPM-Solver++ (2M) (Lu et al. 2022), deterministic, via diffusers")
def _dpmpp_2m(common: dict):
    import diffusers

    return diffusers.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_type="midpoint",
                                                 euler_at_final=False)


@SOLVERS.register("unipc", "UniPC (Zhao et al. 2023), deterministic, via diffusers")
def _unipc(common: dict):
    import diffusers

    return diffusers.UniPCMultistepScheduler(**common, solver_type="bh2", predict_x0=True)


def build_scheduler(name: str, schedule: NoiseSchedule, timesteps: list[int]):
    """A fresh diffusers scheduler for solver ``name`` on ``schedule``, set to visit ``timesteps``.

    Args:
        name: a registered solver (:data:`SOLVERS`: ``dpmpp-2m``, ``unipc``); another name raises ``OdmaugError``.
        schedule: the run's noise schedule; its betas become the scheduler's ``trained_betas``
            (diffusers keeps them in float32: abar differs from odmaug's float64 by < 3e-7 relative);
            a zero-terminal-SNR one also sets ``rescale_betas_zero_snr`` (see the module docstring).
        timesteps: descending 0-based timesteps (``NoiseSchedule.sampling_timesteps``).

    Returns:
        ``DPMSolverMultistepScheduler`` or ``UniPCMultistepScheduler`` whose ``timesteps`` equal
        ``timesteps`` and whose ``sigmas`` [len + 1] are sqrt((1 - abar) / abar) there, then 0.

    The model output it expects is the data prediction x0 (``prediction_type="sample"``), so that
    :func:`solve` can clip x0 itself; diffusers' thresholding stays off (its dynamic threshold is a
    ``torch.quantile`` per step, which refuses inputs over 2^24 values).
    """
    factory = SOLVERS.get(name)
    try:
        import diffusers  # noqa: F401  only the multistep solvers need it; importing takes seconds
    except ImportError as err:
        raise OdmaugError(f"the {name} sampler needs diffusers: pip install 'diffusers>=0.28' ({err})") from err

    common = dict(num_train_timesteps=schedule.timesteps, trained_betas=schedule.betas.numpy(),
                  prediction_type="sample", thresholding=False, solver_order=2, lower_order_final=True,
                  final_sigmas_type="zero", rescale_betas_zero_snr=schedule.zero_terminal_snr)
    scheduler = factory(common)
    _set_timesteps(scheduler, timesteps)
    return scheduler


def _set_timesteps(scheduler, timesteps: list[int]) -> None:
    """Point ``scheduler`` at odmaug's list (its own spacings differ for leading and linspace)."""
    if "timesteps" in inspect.signature(scheduler.set_timesteps).parameters:
        scheduler.set_timesteps(timesteps=timesteps)
    else:
        # UniPC (diffusers 0.42) only spaces timesteps itself, and its leading/linspace lists have
        # steps + 1 points: reset its state for this many steps, then set the list and sigmas the
        # way its own set_timesteps computes them (sigma at each listed t, then a final 0).
        scheduler.set_timesteps(len(timesteps))
        abar = scheduler.alphas_cumprod
        sigmas = ((1 - abar) / abar) ** 0.5
        index = torch.tensor(timesteps, dtype=torch.int64)
        scheduler.timesteps = index
        scheduler.sigmas = torch.cat([sigmas[index], torch.zeros(1)]).float()
        scheduler.num_inference_steps = len(timesteps)
    if scheduler.timesteps.tolist() != list(timesteps) or len(scheduler.sigmas) != len(timesteps) + 1:
        raise OdmaugError(f"this diffusers' {type(scheduler).__name__} did not take the timestep list {timesteps}: "
                          "install a diffusers release that odmaug supports (pyproject.toml)")


@torch.no_grad()
def solve(
    name: str,
    x: torch.Tensor,
    timesteps: list[int],
    schedule: NoiseSchedule,
    denoiser: Denoiser,
    clip_x0: bool = True,
    on_step: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """Integrate the probability-flow ODE from ``x`` = x_T [B, C, H, W] over ``timesteps``.

    One network call (``denoiser``, its output in ``schedule.prediction``) per timestep, turned into
    x0 (:func:`~odmaug.diffusion.parameterization.to_x0` with the scheduler's own alpha_t, sigma_t)
    and clipped to [-1, 1] with ``clip_x0``. Returns float32 x_0 [B, C, H, W] (the last step's x0
    prediction). ``on_step`` is called after every step. Sources: the module docstring (Lu et al.
    2022; Zhao et al. 2023; diffusers' schedulers).
    """
    scheduler = build_scheduler(name, schedule, timesteps)
    # alpha_t and sigma_t from the scheduler's own float32 sigma = sqrt((1 - abar) / abar), with its
    # arithmetic (VP: alpha = 1 / sqrt(1 + sigma^2)), so x0 is bit for bit what it would compute itself;
    # as Python floats (exact float32 values), so no CPU tensor meets a CUDA one
    alphas = 1 / (scheduler.sigmas**2 + 1) ** 0.5
    alphas, sigmas = alphas.tolist(), (scheduler.sigmas * alphas).tolist()
    x = x.float()
    for i, t in enumerate(timesteps):
        x0 = to_x0(denoiser(x, t).float(), x, alphas[i], sigmas[i], schedule.prediction)
        x = scheduler.step(x0.clamp(-1.0, 1.0) if clip_x0 else x0, t, x).prev_sample
        if on_step is not None:
            on_step()
    return x
