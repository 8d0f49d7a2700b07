"""The noise schedule reaches noise at every T, and DDIM/DDPM start at the last timestep.

Values are checked against closed forms (an exact denoiser for Gaussian data) and diffusers'
schedulers (DDIMScheduler's timestep lists and updates, DDPMScheduler and EulerDiscreteScheduler
with the same custom timesteps).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odmaug.config import DiffusionConfig, SampleConfig
from odmaug.diffusion import NoiseSchedule, generate, sample
from odmaug.errors import OdmaugError

T_VALUES = (50, 100, 250, 1000, 4000)
SPACINGS = ("trailing", "leading", "linspace")
DATA_MEAN, DATA_STD = 0.5, 0.1


class ExactGaussianDenoiser(nn.Module):
    """E[eps | x_t] for data x0 ~ N(mean, std^2) per pixel: the best possible eps network.

    x_t ~ N(sqrt(abar) mean, abar std^2 + 1 - abar), so
    E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mean) / (abar std^2 + 1 - abar).
    """

    def __init__(self, schedule: NoiseSchedule, image_size: int = 16) -> None:
        super().__init__()
        self.schedule, self.num_classes, self.image_size, self.in_channels = schedule, 5, image_size, 3

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        abar = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        var = abar * DATA_STD**2 + 1 - abar
        return ((1 - abar).sqrt() * (x.double() - abar.sqrt() * DATA_MEAN) / var).float()


def _moments(schedule: NoiseSchedule, **kw) -> tuple[float, float]:
    settings = SampleConfig(clip_x0=False, guidance_scale=1.0, batch_size=24, precision="fp32", **kw)
    images = generate(ExactGaussianDenoiser(schedule), schedule, [0] * 24, range(24), settings)
    return images.mean().item(), images.std().item()


@pytest.mark.parametrize("T", T_VALUES)
def test_linear_schedule_reaches_noise_at_every_T(T):
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    assert s.terminal_signal < 0.01
    s.check_reaches_noise()
    # improved-diffusion's linear schedule: Ho et al.'s betas scaled by 1000 / T (diffusers computes the same)
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=1e-4 * 1000 / T, beta_end=0.02 * 1000 / T)
    assert torch.allclose(s.alphas_cumprod.float(), ref.alphas_cumprod, atol=1e-6)


def test_the_reported_schedule_values():
    assert NoiseSchedule.from_config(DiffusionConfig(timesteps=100)).terminal_signal == pytest.approx(0.0045, abs=5e-4)
    old = NoiseSchedule.from_config(DiffusionConfig(timesteps=100, scale_betas=False))
    assert old.terminal_signal == pytest.approx(0.603, abs=1e-3)  # what every T = 100 run trained with before
    with pytest.raises(OdmaugError, match="scale_betas=true"):
        old.check_reaches_noise()
    # T = 1000 is unchanged by the scaling; a very short schedule stays valid (betas clipped below 1)
    assert torch.equal(NoiseSchedule.from_config(DiffusionConfig()).betas,
                       NoiseSchedule.from_config(DiffusionConfig(scale_betas=False)).betas)
    short = NoiseSchedule.from_config(DiffusionConfig(timesteps=10))
    assert float(short.betas.max()) < 1 and short.terminal_signal < 0.01


def _ddim_closed_form(s: NoiseSchedule, steps: int) -> tuple[float, float]:
    """Mean and std of deterministic DDIM's output for the exact Gaussian denoiser, in closed form.

    With d_t = x_t - sqrt(abar_t) mean, one step multiplies d by
    k = (sqrt(abar_prev abar_t) std^2 + sqrt((1 - abar_prev)(1 - abar_t))) / (abar_t std^2 + 1 - abar_t),
    and x_T ~ N(0, 1); so the output is mean - K sqrt(abar_T) mean with std K = prod k.
    """
    ts = s.sampling_timesteps(steps)
    abar = [float(s.alphas_cumprod[t]) for t in ts] + [1.0]
    k = 1.0
    for a, a_prev in zip(abar[:-1], abar[1:]):
        k *= ((a_prev * a) ** 0.5 * DATA_STD**2 + ((1 - a_prev) * (1 - a)) ** 0.5) / (a * DATA_STD**2 + 1 - a)
    return DATA_MEAN - k * abar[0] ** 0.5 * DATA_MEAN, k


@pytest.mark.parametrize("T", T_VALUES)
def test_an_exact_denoiser_returns_the_data_mean(T):
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    for kw in (dict(sampler="ddpm", steps=T), dict(sampler="ddim", steps=T), dict(sampler="ddim", steps=min(50, T)),
               dict(sampler="ddim", steps=T * 3 // 5), dict(sampler="ddim", steps=min(50, T), eta=1.0)):
        mean, std = _moments(s, **kw)
        assert mean == pytest.approx(DATA_MEAN, abs=0.01), kw
        if kw["sampler"] == "ddim" and "eta" not in kw:
            # DDIM is exact up to its discretisation, which shrinks a narrow Gaussian's std at few
            # steps (its last step returns E[x0 | x_t]); the closed form of that recursion must hold.
            want_mean, want_std = _ddim_closed_form(s, kw["steps"])
            assert mean == pytest.approx(want_mean, abs=2e-3) and std == pytest.approx(want_std, rel=0.02), kw
        if kw["steps"] >= 1000:  # long chains: the data's std too
            assert std == pytest.approx(DATA_STD, abs=0.01), kw


def test_the_old_schedule_and_spacing_were_biased():
    """The reported faults, reproduced with the old settings (unscaled T = 100; leading 600 of 1000)."""
    mean, std = _moments(NoiseSchedule.from_config(DiffusionConfig(timesteps=100, scale_betas=False)),
                         sampler="ddim", steps=100)
    assert abs(mean - DATA_MEAN) > 0.02 and abs(std - DATA_STD) > 0.01
    s = NoiseSchedule.from_config(DiffusionConfig())
    assert s.sampling_timesteps(600, "leading")[0] == 599
    leading_mean, _ = _moments(s, sampler="ddim", steps=600, timestep_spacing="leading")
    trailing_mean, _ = _moments(s, sampler="ddim", steps=600)
    assert abs(leading_mean - DATA_MEAN) > 0.005 > abs(trailing_mean - DATA_MEAN)


def _diffusers_timesteps(T: int, steps: int, spacing: str) -> list[int]:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    ref.set_timesteps(steps)
    return ref.timesteps.tolist()


@pytest.mark.parametrize("T", (100, 1000))
def test_timestep_lists_match_diffusers(T):
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    for steps in sorted({1, 3, 7, 10, 29, 31, 50, 60, 97, 99, 100, 600, T} & set(range(1, T + 1))):
        for spacing in SPACINGS:
            ours, ref = s.sampling_timesteps(steps, spacing), _diffusers_timesteps(T, steps, spacing)
            # diffusers' float arange gives one entry too many for some trailing counts (a final -1)
            assert ours == (ref[:steps] if ref[-1] == -1 else ref), (steps, spacing)
            assert len(ours) == steps


@pytest.mark.parametrize("T", (50, 100, 1000))
def test_the_default_spacing_starts_at_the_last_timestep_for_every_step_count(T):
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    for steps in range(1, T + 1):
        ts = s.sampling_timesteps(steps)
        assert ts[0] == T - 1 and len(set(ts)) == steps and ts == sorted(ts, reverse=True) and ts[-1] >= 0
    with pytest.raises(OdmaugError, match="between 1 and T = "):
        s.sampling_timesteps(T + 1)
    with pytest.raises(OdmaugError, match="unknown timestep spacing"):
        s.sampling_timesteps(10, "uniform")



def _ours(model, s, steps, spacing, sampler="ddim", eta=0.0, clip=True, seed=3):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 3, 8, 8, generator=g)
    settings = SampleConfig(sampler=sampler, steps=steps, eta=eta, clip_x0=clip, timestep_spacing=spacing,
                            guidance_scale=1.0, precision="fp32")
    return noise, sample(model, noise, torch.tensor([2]), s, settings, rngs=[g])


def test_ddim_matches_diffusers_ddim_where_its_step_follows_its_list(tiny_unet):
    """Uniform lists (counts dividing T): diffusers' prev = t - T // steps is the next listed timestep."""
    diffusers = pytest.importorskip("diffusers")
    T = 100
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    for spacing, steps, eta in [("trailing", 10, 0.0), ("trailing", 20, 0.5), ("leading", 25, 0.0),
                                ("trailing", 100, 1.0), ("leading", 50, 0.3)]:
        ref = diffusers.DDIMScheduler(num_train_timesteps=T, beta_start=1e-4 * 10, beta_end=0.02 * 10,
                                      clip_sample=True, set_alpha_to_one=True, timestep_spacing=spacing)
        ref.set_timesteps(steps)
        assert ref.timesteps.tolist() == s.sampling_timesteps(steps, spacing)
        noise, ours = _ours(tiny_unet, s, steps, spacing, eta=eta)
        g = torch.Generator().manual_seed(3)
        x = torch.randn(1, 3, 8, 8, generator=g)  # the same initial noise, then the same step noise
        with torch.no_grad():
            for t in ref.timesteps:
                eps = tiny_unet(x, torch.full((1,), int(t)), torch.tensor([2]))
                z = torch.randn(1, 3, 8, 8, generator=g) if eta > 0 and int(t) != ref.timesteps[-1] else None
                x = ref.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=z).prev_sample
        assert torch.allclose(ours, x, atol=1e-5), (spacing, steps, eta)


def test_non_uniform_lists_match_diffusers_euler_and_ddpm_with_the_same_timesteps(tiny_unet):
    """Counts that do not divide T, and counts above T / 2: each step goes to the next listed timestep.

    Deterministic DDIM is Euler's method in sigma = sqrt((1 - abar) / abar) (Karras et al. 2022, eq. 4),
    so diffusers' EulerDiscreteScheduler with the same custom timesteps is an exact reference; the
    respaced ancestral chain is diffusers' DDPMScheduler with those timesteps.
    """
    diffusers = pytest.importorskip("diffusers")
    T = 100
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    betas = dict(num_train_timesteps=T, beta_start=1e-4 * 10, beta_end=0.02 * 10)
    for spacing, steps in [("trailing", 7), ("linspace", 13), ("trailing", 60), ("linspace", 75), ("leading", 30)]:
        ts = s.sampling_timesteps(steps, spacing)
        noise, ours = _ours(tiny_unet, s, steps, spacing, clip=False)
        euler = diffusers.EulerDiscreteScheduler(**betas, final_sigmas_type="zero")
        euler.set_timesteps(timesteps=ts)
        x = noise * (euler.sigmas[0] ** 2 + 1) ** 0.5  # x_T = noise in x_t space (init_noise_sigma drops the +1)
        with torch.no_grad():
            for t in euler.timesteps:
                eps = tiny_unet(euler.scale_model_input(x, t), torch.full((1,), int(t)), torch.tensor([2]))
                x = euler.step(eps, t, x).prev_sample
        # unclipped x0 of a random network reaches |x| ~ 400: compare relative to the image's scale
        assert (ours - x).abs().max() <= 2e-5 * x.abs().max(), (spacing, steps)

        noise, ours = _ours(tiny_unet, s, steps, spacing, sampler="ddpm", clip=False, seed=5)
        ddpm = diffusers.DDPMScheduler(**betas, clip_sample=False, variance_type="fixed_small")
        ddpm.set_timesteps(timesteps=ts)
        g = torch.Generator().manual_seed(5)
        x = torch.randn(1, 3, 8, 8, generator=g)
        with torch.no_grad():
            for t in ddpm.timesteps:
                eps = tiny_unet(x, torch.full((1,), int(t)), torch.tensor([2]))
                x = ddpm.step(eps, t, x, generator=g).prev_sample
        assert (ours - x).abs().max() <= 2e-5 * x.abs().max(), ("ddpm", spacing, steps)
