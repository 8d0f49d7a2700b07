"""What the network predicts, and the one place where its output becomes eps and x0.

Notation (docs/method.md): x_t = alpha_t x0 + sigma_t eps with alpha_t = sqrt(abar_t) and
sigma_t = sqrt(1 - abar_t), so alpha_t^2 + sigma_t^2 = 1.

* ``eps`` (Ho et al. 2020): the network predicts the noise; x0 = (x_t - sigma_t eps) / alpha_t.
* ``v`` (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models",
  section 4): the network predicts v = alpha_t eps - sigma_t x0; then
  eps = alpha_t v + sigma_t x_t and x0 = alpha_t x_t - sigma_t v, with no division, so x0 stays
  defined where abar_t = 0 (a zero-terminal-SNR schedule, Lin et al. 2024). These are the formulas of
  diffusers' schedulers for ``prediction_type="v_prediction"`` (``DDIMScheduler.step``) and of
  ``DDPMScheduler.get_velocity`` for the training target.

A new objective is one ``OBJECTIVES.add`` with its four maps. Every sampler (DDIM, DDPM, the diffusers solvers, SDEdit, DDIM inversion) and the ordinal term of the
loss call :func:`to_eps` / :func:`to_x0` here, so a v-network behaves everywhere as the eps-network
``eps(x, t) = alpha_t v(x, t) + sigma_t x``. Both conversions are affine in the output with
coefficients that do not depend on it, so classifier-free guidance applied to v equals guidance
applied to the eps estimates (the guided combination's weights 1 - s and s sum to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from odmaug.registry import Registry

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
"""``output = denoiser(x_t, t)``: the (guided) network output [B, C, H, W] for ``x_t`` at timestep
``t``, in the schedule's parameterization (``NoiseSchedule.prediction``); samplers convert it here."""

Coefficient = Union[float, torch.Tensor]
"""alpha_t or sigma_t: a Python float (one timestep) or a tensor broadcasting against x ([B, 1, 1, 1])."""

Conversion = Callable[[torch.Tensor, torch.Tensor, Coefficient, Coefficient], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """What a network trained under one ``diffusion.prediction`` outputs, as the four maps every
    sampler and the loss need (arguments in the order of :func:`to_eps`, :func:`to_x0`,
    :func:`training_target`; ``snr_weight(min(SNR, gamma), SNR)`` for :func:`min_snr_weight`)."""

    to_eps: Conversion
    to_x0: Conversion
    target: Conversion  # (x0, noise, alpha, sigma) -> the training target
    snr_weight: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


OBJECTIVES: Registry[Objective] = Registry("objective")
"""The network parameterizations by name (``diffusion.prediction``): ``eps`` and ``v``."""

OBJECTIVES.add("eps", Objective(to_eps=lambda out, x, a, s: out, to_x0=lambda out, x, a, s: (x - s * out) / a,
                                target=lambda x0, noise, a, s: noise, snr_weight=lambda clipped, snr: clipped / snr),
               "the noise eps (Ho et al. 2020)")
OBJECTIVES.add("v", Objective(to_eps=lambda out, x, a, s: a * out + s * x, to_x0=lambda out, x, a, s: a * x - s * out,
                              target=lambda x0, noise, a, s: a * noise - s * x0,
                              snr_weight=lambda clipped, snr: clipped / (snr + 1)),
               "the velocity v = alpha eps - sigma x0 (Salimans & Ho 2022)")


def to_eps(output: torch.Tensor, x: torch.Tensor, alpha: Coefficient, sigma: Coefficient,
           prediction: str) -> torch.Tensor:
    """The eps estimate [B, C, H, W] of a network ``output`` [B, C, H, W] for input ``x`` at a noise
    level with ``alpha`` = sqrt(abar_t), ``sigma`` = sqrt(1 - abar_t).

    ``eps``: the output itself (the same tensor, no arithmetic). ``v``: alpha v + sigma x
    (Salimans & Ho 2022, section 4; diffusers' ``DDIMScheduler.step``, ``pred_epsilon``).
    Raises OdmaugError for an unregistered ``prediction``.
    """
    return OBJECTIVES.get(prediction).to_eps(output, x, alpha, sigma)


def to_x0(output: torch.Tensor, x: torch.Tensor, alpha: Coefficient, sigma: Coefficient,
          prediction: str) -> torch.Tensor:
    """The x0 estimate [B, C, H, W] of a network ``output`` for input ``x`` (``alpha``, ``sigma`` as in
    :func:`to_eps`).

    ``eps``: (x - sigma eps) / alpha, undefined where alpha = 0 (abar_t = 0); ``v``: alpha x - sigma v
    (diffusers' ``pred_original_sample`` for ``v_prediction``), defined at every noise level.
    """
    return OBJECTIVES.get(prediction).to_x0(output, x, alpha, sigma)


def training_target(x0: torch.Tensor, noise: torch.Tensor, alpha: Coefficient, sigma: Coefficient,
                    prediction: str) -> torch.Tensor:
    """What the network should output for x_t = alpha x0 + sigma noise, [B, C, H, W].

    ``eps``: ``noise`` itself; ``v``: alpha noise - sigma x0 (diffusers' ``DDPMScheduler.get_velocity``).
    """
    return OBJECTIVES.get(prediction).target(x0, noise, alpha, sigma)


def min_snr_weight(abar: torch.Tensor, snr_gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-gamma weights [B] of the per-sample MSE for cumulative alphas ``abar`` [B].

    SNR_t = abar_t / (1 - abar_t); the weight is min(SNR_t, gamma) / SNR_t on the eps-MSE and
    min(SNR_t, gamma) / (SNR_t + 1) on the v-MSE (Hang et al., ICCV 2023, "Efficient Diffusion
    Training via Min-SNR Weighting Strategy", section 3.4; diffusers' ``training_utils.compute_snr``
    and the ``--snr_gamma`` weighting of ``examples/text_to_image/train_text_to_image.py``). Both
    weight the implied x0-MSE by min(SNR_t, gamma). Where SNR_t = 0 (a zero-terminal-SNR schedule)
    the v weight is 0; the eps weight would be 0 / 0, which the recipe check rules out.
    """
    alpha, sigma = abar.sqrt(), (1.0 - abar).sqrt()
    snr = (alpha / sigma) ** 2  # compute_snr's own arithmetic
    return OBJECTIVES.get(prediction).snr_weight(snr.clamp(max=snr_gamma), snr)
