"""The noise schedule: betas, cumulative alphas and every quantity the samplers and losses need.

Timesteps are 0-based indices ``t = 0 .. T-1`` (index ``t`` is the paper's step ``t + 1``), as in
diffusers. All tables are computed in float64 once and cached per device in float32, so looking up
a coefficient for a batch is one on-device ``gather`` with no host synchronisation.
"""

from __future__ import annotations

import math

import torch

from odmaug.config import DiffusionConfig
from odmaug.errors import OdmaugError


def linear_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Ho et al.'s linear schedule: float64 [T] from ``beta_start`` to ``beta_end``."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: float64 [T], betas clipped at ``max_beta``."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


class NoiseSchedule:
    """A discrete DDPM noise schedule of ``T`` steps.

    Attributes:
        timesteps: T.
        betas, alphas, alphas_cumprod: float64 [T] (abar_t = prod of alphas up to t).
        alphas_cumprod_prev: float64 [T], abar_{t-1} with abar_{-1} = 1.
        posterior_variance: float64 [T], beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t).
    """

    def __init__(self, betas: torch.Tensor, kind: str = "custom") -> None:
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise OdmaugError("a noise schedule needs at least 2 betas, each in (0, 1)")
        self.kind = kind
        self.timesteps = len(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "NoiseSchedule":
        """The schedule a recipe's ``diffusion`` section describes."""
        if cfg.schedule == "cosine":
            return cls(cosine_betas(cfg.timesteps), "cosine")
        if cfg.beta_end <= cfg.beta_start:
            raise OdmaugError("diffusion.beta_end must be larger than diffusion.beta_start")
        return cls(linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end), "linear")

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

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; all [B, C, H, W]."""
        abar = self.gather("alphas_cumprod", t, x0.ndim)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 implied by an eps estimate: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        abar = self.gather("alphas_cumprod", t, xt.ndim)
        return (xt - (1.0 - abar).sqrt() * eps) / abar.sqrt()

    def lambda_t(self, t: torch.Tensor) -> torch.Tensor:
        """The ordinal weight lambda_t = t / T with the paper's 1-based t: (index + 1) / T, [B]."""
        return (t.float() + 1.0) / self.timesteps

    def sampling_timesteps(self, steps: int) -> list[int]:
        """Descending timesteps for a sampler of ``steps`` steps ("leading" spacing).

        ``steps == T`` gives every timestep; fewer steps take every ``T // steps``-th timestep
        starting at 0, as in DDIM and diffusers' default spacing.
        """
        if not 1 <= steps <= self.timesteps:
            raise OdmaugError(f"sampling steps must be between 1 and {self.timesteps} (got {steps})")
        stride = self.timesteps // steps
        return [i * stride for i in range(steps)][::-1]

    def step_coefficients(self, t: int, t_prev: int, eta: float) -> dict[str, float]:
        """Scalars of one reverse step from ``t`` to ``t_prev`` (``-1`` means "to x0").

        The generalised (DDIM) update is
        ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z`` with
        ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``;
        eta = 1 with consecutive timesteps is ancestral DDPM (sigma^2 = posterior variance).
        """
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        variance = (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)
        sigma = eta * math.sqrt(max(variance, 0.0))
        return {
            "abar_t": abar_t,
            "abar_prev": abar_prev,
            "sigma": sigma,
            "dir_coef": math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)),
        }
