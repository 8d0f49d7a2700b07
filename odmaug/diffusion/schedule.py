"""The noise schedule: betas, cumulative alphas and every quantity the samplers and losses need.

Timesteps are 0-based indices ``t = 0 .. T-1`` (index ``t`` is the paper's step ``t + 1``), as in
diffusers. All tables are computed in float64 once and cached per device in float32, so looking up
a coefficient for a batch is one on-device ``gather`` with no host synchronisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from odmaug.config import DiffusionConfig
from odmaug.diffusion.parameterization import OBJECTIVES
from odmaug.errors import OdmaugError


TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")
"""diffusers' ``timestep_spacing`` choices (Lin et al. 2024, "Common Diffusion Noise Schedules and
Sample Steps are Flawed", table 2). Only ``trailing`` and ``linspace`` start at t = T - 1 for every
step count; ``leading`` (diffusers' DDIM default) starts at ``(steps - 1) * (T // steps)``."""

TERMINAL_SIGNAL_LIMIT = 0.01
"""Largest sqrt(abar_{T-1}) (the share of x0 left at the last training step) a trainable schedule
may keep: sampling starts from pure noise, so signal left at t = T - 1 biases every sample."""

MAX_BETA = 0.999
"""Betas are clipped here (as for the cosine schedule) so that a short, scaled schedule stays valid."""


def linear_betas(timesteps: int, beta_start: float, beta_end: float, scale: bool = True) -> torch.Tensor:
    """Ho et al.'s linear schedule: float64 [T] from ``beta_start`` to ``beta_end``.

    Ho et al. define 1e-4 .. 0.02 for T = 1000. With ``scale`` both ends are multiplied by 1000 / T,
    as improved-diffusion's ``get_named_beta_schedule("linear", T)`` does (Nichol & Dhariwal 2021),
    so every T reaches noise at its last step (sqrt(abar_{T-1}) ~ 0.005 at T = 100, not 0.60); at
    T = 1000 the scale is 1. Betas are clipped at :data:`MAX_BETA` (needed for T <= 20).
    """
    factor = 1000.0 / timesteps if scale else 1.0
    betas = torch.linspace(beta_start * factor, beta_end * factor, timesteps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: float64 [T], betas clipped at ``max_beta``."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """``betas`` [T] rescaled so that abar_{T-1} = 0 exactly (zero terminal SNR), float64 [T].

    Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", algorithm 1, as
    diffusers' ``rescale_zero_terminal_snr`` (scheduling_ddim.py): shift sqrt(abar) so its last value
    is 0, scale it so its first value is kept, and turn it back into betas; the last beta becomes 1.
    Computed in float64 (diffusers: float32).
    """
    sqrt_abar = torch.cumprod(1.0 - betas.to(torch.float64), dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


class NoiseSchedule:
    """A discrete DDPM noise schedule of ``T`` steps, and what the network trained on it predicts.

    Args:
        betas: [T], each in (0, 1); the last may be 1 (zero terminal SNR, abar_{T-1} = 0).
        kind: a name for messages (``linear``, ``cosine``).
        prediction: the network's output, ``eps`` or ``v`` (:mod:`odmaug.diffusion.parameterization`);
            the samplers read it here, so a generator loaded from a run samples as it was trained.

    Attributes:
        timesteps: T.
        betas, alphas, alphas_cumprod: float64 [T] (abar_t = prod of alphas up to t).
        alphas_cumprod_prev: float64 [T], abar_{t-1} with abar_{-1} = 1.
        posterior_variance: float64 [T], beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t).

    Raises:
        OdmaugError: betas out of range, an unknown ``prediction``, or ``eps`` with abar_{T-1} = 0
            (x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) is undefined there).
    """

    def __init__(self, betas: torch.Tensor, kind: str = "custom", prediction: str = "eps") -> None:
        betas = betas.to(torch.float64)
        # a last beta of 1 is zero terminal SNR (abar_{T-1} = 0); any other beta of 1 would zero abar early
        if betas.ndim != 1 or len(betas) < 2 or not (
                bool(((betas[:-1] > 0) & (betas[:-1] < 1)).all()) and 0 < float(betas[-1]) <= 1):
            raise OdmaugError("a noise schedule needs at least 2 betas, each in (0, 1) (the last may be 1)")
        OBJECTIVES.check(prediction)
        self.kind, self.prediction = kind, prediction
        self.timesteps = len(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}
        if self.zero_terminal_snr and prediction == "eps":
            raise OdmaugError("a zero-terminal-SNR schedule (abar_T = 0) needs v-prediction: eps gives no x0 "
                              "there (Lin et al. 2024); use diffusion.prediction=v")

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "NoiseSchedule":
        """The schedule a recipe's ``diffusion`` section describes (betas, ``zero_terminal_snr``
        rescaling and ``prediction``)."""
        if cfg.schedule == "cosine":
            betas, kind = cosine_betas(cfg.timesteps), "cosine"
        elif cfg.beta_end <= cfg.beta_start:
            raise OdmaugError("diffusion.beta_end must be larger than diffusion.beta_start")
        else:
            betas, kind = linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end, cfg.scale_betas), "linear"
        if cfg.zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        return cls(betas, kind, cfg.prediction)

    @property
    def zero_terminal_snr(self) -> bool:
        """True when abar_{T-1} = 0: the last training step sees pure noise (Lin et al. 2024)."""
        return bool(self.alphas_cumprod[-1] == 0)

    @property
    def terminal_signal(self) -> float:
        """sqrt(abar_{T-1}): how much of x0 the last training step keeps (0 = pure noise)."""
        return float(self.alphas_cumprod[-1].sqrt())

    def check_reaches_noise(self) -> None:
        """Raise when the last step keeps more than :data:`TERMINAL_SIGNAL_LIMIT` of x0 (before training)."""
        if self.terminal_signal >= TERMINAL_SIGNAL_LIMIT:
            raise OdmaugError(
                f"the {self.kind} noise schedule of T = {self.timesteps} keeps {self.terminal_signal:.3f} of the "
                f"image at its last step (x_T = {self.terminal_signal:.2f} x0 + ...), while sampling starts "
                "from pure noise: use diffusion.scale_betas=true, diffusion.schedule=cosine or larger betas"
            )

    def table(self, name: str, device: torch.device | str) -> torch.Tensor:
        """A float32 copy of table ``name`` (e.g. ``"alphas_cumprod"``) on ``device``, cached."""
        key = (name, str(torch.device(device)))
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device=device, dtype=torch.float32)
        return self._cache[key]

    def gather(self, name: str, t: torch.Tensor, ndim: int = 4) -> torch.Tensor:
        """Table ``name`` at timesteps ``t`` [B], shaped [B, 1, 1, 1] for broadcasting."""
        values = self.table(name, t.device)[t]
        return values.view(-1, *([1] * (ndim - 1)))

    def alpha_sigma(self, t: torch.Tensor, ndim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) at timesteps ``t`` [B], each float32
        [B, 1, 1, 1] (from the float32 abar table, as diffusers' ``add_noise`` and ``get_velocity``)."""
        abar = self.gather("alphas_cumprod", t, ndim)
        return abar.sqrt(), (1.0 - abar).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; all [B, C, H, W]."""
        alpha, sigma = self.alpha_sigma(t, x0.ndim)
        return alpha * x0 + sigma * noise

    def lambda_t(self, t: torch.Tensor) -> torch.Tensor:
        """The ordinal weight lambda_t = t / T with the paper's 1-based t: (index + 1) / T, [B]."""
        return (t.float() + 1.0) / self.timesteps

    def sampling_timesteps(self, steps: int, spacing: str = "trailing") -> list[int]:
        """Descending timesteps [steps] for a sampler of ``steps`` steps, as diffusers' ``set_timesteps``.

        ``trailing``: ``round(arange(T, 0, -T / steps)) - 1``; ``linspace``: ``round(linspace(0, T - 1,
        steps))`` reversed; ``leading``: ``arange(steps) * (T // steps)`` reversed. ``steps == T``
        gives every timestep for each spacing; ``linspace`` with one step gives ``[0]``.

        Raises:
            OdmaugError: ``steps`` outside 1..T, or an unknown ``spacing``.
        """
        T = self.timesteps
        if not 1 <= steps <= T:
            raise OdmaugError(f"sampling steps must be between 1 and T = {T}, the run's diffusion.timesteps (got {steps})")
        if spacing == "trailing":
            # diffusers' formula, so the lists agree; its float arange can yield one entry too many
            # (a final -1, e.g. T = 100, steps = 29), which is cut off here
            timesteps = (np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1)[:steps]
        elif spacing == "linspace":
            timesteps = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
        elif spacing == "leading":
            timesteps = (np.arange(steps) * (T // steps))[::-1]
        else:
            raise OdmaugError(f"unknown timestep spacing '{spacing}' (use {', '.join(TIMESTEP_SPACINGS)})")
        return [int(t) for t in timesteps]

    def step_coefficients(self, t: int, t_prev: int, eta: float) -> dict[str, float]:
        """Scalars of one reverse step from ``t`` to ``t_prev`` (``-1`` means "to x0").

        The generalised (DDIM) update is
        ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z`` with
        ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``;
        eta = 1 with consecutive timesteps is ancestral DDPM (sigma^2 = posterior variance).
        """
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        # eta = 0 needs no variance; skipping it lets inversion step up to abar_prev = 0 (zero terminal SNR)
        variance = (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev) if eta > 0 else 0.0
        sigma = eta * math.sqrt(max(variance, 0.0))
        return {
            "abar_t": abar_t,
            "abar_prev": abar_prev,
            "sigma": sigma,
            "dir_coef": math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)),
        }
