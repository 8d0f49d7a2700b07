"""Sampling a v-prediction network (Salimans & Ho 2022), also on a zero-terminal-SNR schedule (Lin et al.
2024): each DDIM/DDPM step against diffusers' ``DDIMScheduler``/``DDPMScheduler.step`` with
``prediction_type="v_prediction"``, the multistep solvers against diffusers' own runs, guidance, and
SDEdit / DDIM inversion, which must treat a v-network as its eps twin eps = alpha v + sigma x."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odmaug.config import DiffusionConfig, SampleConfig
from odmaug.diffusion import NoiseSchedule, generate, guided_eps, sample
from odmaug.diffusion.ddim import walk
from odmaug.diffusion.parameterization import to_eps
from odmaug.diffusion.solvers import SOLVERS
from odmaug.diffusion.translate import ddim_invert, translate

diffusers = pytest.importorskip("diffusers")
T, NULL = 100, 5
BASE_BETAS = NoiseSchedule.from_config(DiffusionConfig(timesteps=T)).betas.numpy()
"""odmaug's linear betas at T = 100; the diffusers references get them unrescaled (and rescale them themselves)."""


def v_schedule(zero_terminal_snr: bool = False) -> NoiseSchedule:
    return NoiseSchedule.from_config(DiffusionConfig(timesteps=T, prediction="v", zero_terminal_snr=zero_terminal_snr))


def guided(model, x, t, labels, scale):
    """The guided output as diffusers' pipelines form it, for the reference runs."""
    tb = torch.full((len(x),), int(t))
    if scale == 1.0:
        return model(x, tb, labels)
    out_c, out_u = model(torch.cat([x, x]), torch.cat([tb, tb]), torch.cat([labels, torch.full_like(labels, NULL)])).chunk(2)
    return out_u + scale * (out_c - out_u)


class EpsTwin(nn.Module):
    """The eps-network that a v-network stands for: eps(x, t) = sqrt(abar_t) v(x, t) + sqrt(1 - abar_t) x."""

    def __init__(self, v_model: nn.Module, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.v_model, self.abar = v_model, schedule.alphas_cumprod
        self.num_classes, self.image_size, self.in_channels = v_model.num_classes, v_model.image_size, v_model.in_channels

    def forward(self, x, t, labels):
        abar = self.abar[t.cpu()].view(-1, 1, 1, 1)
        return abar.sqrt().float() * self.v_model(x, t, labels) + (1 - abar).sqrt().float() * x


# ---------------------------------------------------------------- single steps against diffusers
@pytest.mark.parametrize("zero_terminal_snr", [False, True])
@pytest.mark.parametrize("sampler, eta, clip", [("ddim", 0.0, False), ("ddim", 0.0, True), ("ddim", 0.6, True),
                                                ("ddpm", 1.0, True), ("ddpm", 1.0, False)])
def test_each_ddim_and_ddpm_step_matches_diffusers(tiny_unet, zero_terminal_snr, sampler, eta, clip):
    s, steps = v_schedule(zero_terminal_snr), 10
    common = dict(num_train_timesteps=T, trained_betas=BASE_BETAS, prediction_type="v_prediction", clip_sample=clip,
                  timestep_spacing="trailing", rescale_betas_zero_snr=zero_terminal_snr)
    if sampler == "ddim":
        ref = diffusers.DDIMScheduler(**common, set_alpha_to_one=True, steps_offset=0)
        ref.set_timesteps(steps)
    else:
        ref = diffusers.DDPMScheduler(**common, variance_type="fixed_small")
        ref.set_timesteps(timesteps=s.sampling_timesteps(steps))
    timesteps = ref.timesteps.tolist()
    assert timesteps == s.sampling_timesteps(steps) and timesteps[0] == T - 1  # from abar = 0 with zero terminal SNR
    labels, settings = torch.tensor([1, 3]), SampleConfig(sampler=sampler, eta=eta, clip_x0=clip, guidance_scale=1.0)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        gens = lambda: [torch.Generator().manual_seed(10 * i + k) for k in range(2)]  # noqa: E731 - same draws for both
        with torch.no_grad():
            ours = walk(s, x, [t, t_prev], lambda x_t, t_: guided(tiny_unet, x_t, t_, labels, 1.0), settings, gens())
            out = tiny_unet(x, torch.full((2,), t), labels)
            if sampler == "ddim":
                ref_x = ref.step(out, t, x, eta=eta, use_clipped_model_output=clip, generator=gens()).prev_sample
            else:
                ref_x = ref.step(out, t, x, generator=gens()).prev_sample
        # measured: at most 7.2e-7 (float32 abar tables; diffusers rescales in float32, odmaug in float64)
        assert (ours - ref_x).abs().max() <= 1e-6, (t, (ours - ref_x).abs().max())
        x = ref_x


def test_zero_terminal_snr_takes_x0_from_v_without_dividing(tiny_unet):
    s, labels = v_schedule(True), torch.tensor([0, 4])
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    settings = SampleConfig(sampler="ddim", eta=0.0, clip_x0=False, guidance_scale=1.0)
    with torch.no_grad():
        v = tiny_unet(x, torch.full((2,), T - 1), labels)
        x0 = walk(s, x, [T - 1, -1], lambda x_t, t_: tiny_unet(x_t, torch.full((2,), t_), labels), settings)
    assert torch.equal(x0, -v)  # abar_{T-1} = 0: x0 = 0 x_T - 1 v


def test_ddim_chain_with_guidance_in_v_space_matches_diffusers(tiny_unet):
    s, labels = v_schedule(True), torch.tensor([1, 3])
    ref = diffusers.DDIMScheduler(num_train_timesteps=T, trained_betas=BASE_BETAS, prediction_type="v_prediction",
                                  rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=True,
                                  set_alpha_to_one=True, steps_offset=0)
    ref.set_timesteps(10)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    x = noise.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(guided(tiny_unet, x, t, labels, 2.0), t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    settings = SampleConfig(sampler="ddim", steps=10, eta=0.0, guidance_scale=2.0, precision="fp32")
    ours = sample(tiny_unet, noise, labels, s, settings, null_label=NULL)
    assert (ours - x).abs().max() <= 1e-6  # measured 2.4e-7


def test_guidance_on_v_is_guidance_on_eps(tiny_unet):
    s = v_schedule()
    x, labels = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5)), torch.tensor([0, 2, 4])
    t = torch.tensor([5, 50, 95])
    alpha, sigma = s.alpha_sigma(t)
    with torch.no_grad():
        v_c, v_u = tiny_unet(x, t, labels), tiny_unet(x, t, torch.full_like(labels, NULL))
        eps_c, eps_u = (to_eps(v, x, alpha, sigma, "v") for v in (v_c, v_u))
        for scale in (0.0, 1.0, 2.0, 7.5):
            guided_v = guided_eps(tiny_unet, x, t, labels, scale, NULL)
            assert torch.allclose(to_eps(guided_v, x, alpha, sigma, "v"), eps_u + scale * (eps_c - eps_u), atol=1e-5)


# ---------------------------------------------------------------- the multistep solvers against diffusers
@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("zero_terminal_snr", [False, True])
@pytest.mark.parametrize("guidance, clip", [(1.0, False), (2.0, True)])
def test_solvers_match_diffusers_with_v_prediction(tiny_unet, name, zero_terminal_snr, guidance, clip):
    cls = diffusers.DPMSolverMultistepScheduler if name == "dpmpp-2m" else diffusers.UniPCMultistepScheduler
    extra = dict(algorithm_type="dpmsolver++") if name == "dpmpp-2m" else dict(solver_type="bh2")
    ref = cls(num_train_timesteps=T, trained_betas=BASE_BETAS, solver_order=2, thresholding=clip, sample_max_value=1.0,
              final_sigmas_type="zero", timestep_spacing="trailing", prediction_type="v_prediction",
              rescale_betas_zero_snr=zero_terminal_snr, **extra)
    ref.set_timesteps(8)
    s, labels = v_schedule(zero_terminal_snr), torch.tensor([1, 3])
    assert ref.timesteps.tolist() == s.sampling_timesteps(8)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    x = noise.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(guided(tiny_unet, x, t, labels, guidance), t, x).prev_sample
    settings = SampleConfig(sampler=name, steps=8, guidance_scale=guidance, clip_x0=clip, precision="fp32")
    ours = sample(tiny_unet, noise, labels, s, settings, null_label=NULL)
    # measured: bit for bit without zero terminal SNR; up to 1.2e-6 with it (odmaug hands diffusers betas it
    # rescaled in float64, which diffusers rescales again in float32; the reference rescales the raw betas once)
    assert (ours - x).abs().max() <= 1e-6 * max(1.0, x.abs().max().item())


# ---------------------------------------------------------------- every sampler: a v-network is its eps twin
@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 1.0), ("dpmpp-2m", 0.0), ("unipc", 0.0)])
def test_every_sampler_treats_a_v_network_as_its_eps_twin(tiny_unet, sampler, eta):
    v_s, eps_s = v_schedule(), NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    twin = EpsTwin(tiny_unet, v_s)
    kw = SampleConfig(sampler=sampler, eta=eta, steps=10, guidance_scale=2.0, precision="fp32", clip_x0=False)
    with torch.no_grad():
        ours, theirs = (generate(m, s, [0, 2, 4], [7, 8, 9], kw) for m, s in ((tiny_unet, v_s), (twin, eps_s)))
    # measured: up to 2.1e-6 (images reach 2.7); the same network read as eps gives images 600 apart
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max(), (ours - theirs).abs().max()


@pytest.mark.parametrize("invert, sampler", [(False, "ddim"), (False, "ddpm"), (True, "ddim")])
def test_translation_and_inversion_treat_a_v_network_as_its_eps_twin(tiny_unet, invert, sampler):
    v_s, eps_s = v_schedule(), NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    twin = EpsTwin(tiny_unet, v_s)
    source = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1
    kw = SampleConfig(sampler=sampler, steps=10, guidance_scale=2.0, precision="fp32")
    with torch.no_grad():
        ours, theirs = (translate(m, s, source, [0, 4], [1, 2], 0.6, kw, invert=invert) for m, s in ((tiny_unet, v_s), (twin, eps_s)))
        up_v = ddim_invert(tiny_unet, v_s, source, [59, 49, 29, 9], NULL)
        up_eps = ddim_invert(twin, eps_s, source, [59, 49, 29, 9], NULL)
    assert (ours - theirs).abs().max() <= 1e-5 and ours.abs().max() <= 1.0
    assert (up_v - up_eps).abs().max() <= 1e-5 * up_eps.abs().max() and not torch.allclose(up_v, source, atol=1e-2)


@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 1.0), ("dpmpp-2m", 0.0), ("unipc", 0.0)])
def test_zero_terminal_snr_sampling_is_finite_for_every_sampler(tiny_unet, sampler, eta):
    s = v_schedule(True)
    kw = SampleConfig(sampler=sampler, eta=eta, steps=10, guidance_scale=2.0, precision="fp32", clip_x0=False)
    images = generate(tiny_unet, s, [0, 4], [1, 2], kw)
    assert bool(torch.isfinite(images).all())
    if sampler in ("ddim", "ddpm"):
        source = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1
        for invert in (False, True):
            for strength in (0.5, 1.0):
                out = translate(tiny_unet, s, source, [0, 4], [1, 2], strength,
                                SampleConfig(sampler=sampler, steps=10, guidance_scale=1.0, precision="fp32"),
                                invert=invert)
                assert bool(torch.isfinite(out).all()), (invert, strength)
