"""DPM-Solver++ (2M) and UniPC: odmaug's loop against diffusers' schedulers, seeding, accuracy, CLI.

The reference runs drive diffusers' schedulers the usual way (the guided eps in, diffusers' own
eps -> x0 conversion, its static threshold at 1 for clipping) with the same timesteps; odmaug hands
them x0 computed with the scheduler's own sigmas and clips it itself. The accuracy check uses the
exact denoiser of Gaussian data, whose probability-flow ODE has a closed-form solution.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from odmaug.config import DiffusionConfig, SampleConfig, merge_options
from odmaug.diffusion import NoiseSchedule, generate, guided_eps, sample
from odmaug.diffusion.sampling import sample_settings
from odmaug.diffusion.solvers import SOLVERS, build_scheduler, solve
from odmaug.errors import OdmaugError
from test_diffusion_schedule import DATA_MEAN, DATA_STD, ExactGaussianDenoiser

diffusers = pytest.importorskip("diffusers")
NULL = 5



def _reference(name, model, noise, labels, T, guidance, clip, *, steps=None, spacing="linspace", timesteps=None):
    """diffusers' scheduler run as its pipelines do: guided eps in, prev_sample out.

    Its timesteps are its own for ``steps`` and ``spacing``, or the custom ``timesteps`` (DPM only).
    """
    cls = diffusers.DPMSolverMultistepScheduler if name == "dpmpp-2m" else diffusers.UniPCMultistepScheduler
    extra = dict(algorithm_type="dpmsolver++") if name == "dpmpp-2m" else dict(solver_type="bh2")
    # the run's betas (their float32 rounding matters: a random network amplifies it to ~1e-4 of a
    # clipped image); thresholding with sample_max_value = 1 is a static clip of x0 to [-1, 1]
    betas = NoiseSchedule.from_config(DiffusionConfig(timesteps=T)).betas.numpy()
    ref = cls(num_train_timesteps=T, trained_betas=betas, solver_order=2, thresholding=clip, sample_max_value=1.0,
              final_sigmas_type="zero", timestep_spacing=spacing, **extra)
    if timesteps is None:
        ref.set_timesteps(steps)
    else:
        ref.set_timesteps(timesteps=timesteps)
    x, null = noise.clone(), torch.full_like(labels, NULL)
    with torch.no_grad():
        for t in ref.timesteps:
            tb = torch.full((len(x),), int(t))
            if guidance == 1.0:  # the conditional model alone
                eps = model(x, tb, labels)
            else:
                eps_c, eps_u = model(torch.cat([x, x]), torch.cat([tb, tb]), torch.cat([labels, null])).chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
            x = ref.step(eps, t, x).prev_sample
    return ref.timesteps.tolist(), x


def _close(ours, ref):
    # unclipped x0 of a random network reaches |x| ~ 700: compare relative to the image's scale
    # (measured: bit for bit equal, as odmaug hands the scheduler the x0 it would compute itself)
    return (ours - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("guidance, clip", [(1.0, False), (2.0, False), (2.0, True)])
def test_solvers_match_diffusers_with_the_same_timesteps(tiny_unet, name, guidance, clip):
    labels = torch.tensor([1, 3])
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = dict(sampler=name, guidance_scale=guidance, clip_x0=clip, precision="fp32")
    # diffusers' own trailing list is odmaug's (T = 100, 10 steps; T = 1000, 20 steps)
    for T, steps in [(100, 10), (1000, 20)]:
        s = NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
        ref_ts, ref = _reference(name, tiny_unet, noise, labels, T, guidance, clip, steps=steps, spacing="trailing")
        assert ref_ts == s.sampling_timesteps(steps, "trailing")
        assert _close(sample(tiny_unet, noise, labels, s, SampleConfig(steps=steps, **kw), null_label=NULL), ref), (T, steps)
    # non-uniform lists: diffusers' own leading/linspace lists (unlike odmaug's) and odmaug's through DPM's
    # custom timesteps; UniPC has no custom timesteps in diffusers 0.42, so odmaug sets list and sigmas itself
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=100))
    eps = lambda x, t: guided_eps(tiny_unet, x, torch.full((len(x),), t), labels, guidance, NULL)  # noqa: E731
    for spacing, steps in [("linspace", 13), ("leading", 7)]:
        ref_ts, ref = _reference(name, tiny_unet, noise, labels, 100, guidance, clip, steps=steps, spacing=spacing)
        assert ref_ts != s.sampling_timesteps(steps, spacing)
        assert _close(solve(name, noise, ref_ts, s, eps, clip), ref), spacing
    if name == "dpmpp-2m":
        for spacing, steps in [("linspace", 13), ("trailing", 29), ("leading", 7)]:
            ts = s.sampling_timesteps(steps, spacing)
            _, ref = _reference(name, tiny_unet, noise, labels, 100, guidance, clip, timesteps=ts)
            settings = SampleConfig(steps=steps, timestep_spacing=spacing, **kw)
            assert _close(sample(tiny_unet, noise, labels, s, settings, null_label=NULL), ref)


def test_unipc_custom_list_is_the_state_diffusers_builds_itself():
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=1000))
    for steps in (1, 10, 20, 50):
        ref = diffusers.UniPCMultistepScheduler(num_train_timesteps=1000, trained_betas=s.betas.numpy(),
                                                final_sigmas_type="zero", timestep_spacing="trailing")
        ref.set_timesteps(steps)
        ours = build_scheduler("unipc", s, s.sampling_timesteps(steps))
        assert torch.equal(ours.timesteps, ref.timesteps) and torch.equal(ours.sigmas, ref.sigmas)
        assert ours.num_inference_steps == steps and ours.last_sample is None and ours.lower_order_nums == 0


@pytest.mark.parametrize("name", SOLVERS)
def test_each_image_depends_only_on_its_seed_and_no_state_leaks(tiny_unet, name):
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=100))
    labels, seeds = [0, 1, 2, 3, 4], [21, 22, 23, 24, 25]
    kw = SampleConfig(sampler=name, steps=8, guidance_scale=2.0, eta=0.7, precision="fp32")  # eta: ignored
    rng = torch.random.get_rng_state()
    whole = generate(tiny_unet, s, labels, seeds, merge_options(kw, batch_size=5))
    assert torch.equal(torch.random.get_rng_state(), rng)  # the solver steps draw no random numbers
    assert whole.shape == (5, 3, 8, 8) and whole.min() >= -1.0 and whole.max() <= 1.0
    assert torch.allclose(generate(tiny_unet, s, labels, seeds, merge_options(kw, batch_size=2)), whole, atol=1e-5)
    alone = generate(tiny_unet, s, [labels[3]], [seeds[3]], kw)
    assert torch.allclose(alone[0], whole[3], atol=1e-5)
    again = generate(tiny_unet, s, labels, seeds, merge_options(kw, batch_size=5))
    assert torch.equal(again, whole)  # a fresh scheduler per call: no multistep history carried over
    assert not torch.allclose(generate(tiny_unet, s, [labels[3]], [99], kw)[0], whole[3], atol=1e-3)


def _exact_ode(s: NoiseSchedule, noise: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """The exact probability-flow ODE from x_T to the last listed timestep, then E[x0 | x_t] there.

    For Gaussian data the ODE keeps z = (x_t - sqrt(abar_t) mean) / s_t fixed, where
    s_t^2 = abar_t std^2 + 1 - abar_t; every sampler's last step returns
    E[x0 | x_t] = mean + std^2 sqrt(abar_t) / s_t * z.
    """
    abar = s.alphas_cumprod
    sd = lambda t: (abar[t] * DATA_STD**2 + 1 - abar[t]).sqrt()  # noqa: E731
    z = (noise.double() - abar[timesteps[0]].sqrt() * DATA_MEAN) / sd(timesteps[0])
    return DATA_MEAN + DATA_STD**2 * abar[timesteps[-1]].sqrt() / sd(timesteps[-1]) * z


def test_an_exact_gaussian_denoiser_is_solved_more_accurately_than_by_ddim():
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=1000))
    noise = torch.stack([torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(24)])
    labels, steps = torch.zeros(24, dtype=torch.long), 20
    exact = _exact_ode(s, noise, s.sampling_timesteps(steps))
    run = lambda name: sample(ExactGaussianDenoiser(s), noise, labels, s,  # noqa: E731
                              SampleConfig(sampler=name, steps=steps, clip_x0=False, guidance_scale=1.0,
                                           precision="fp32")).double()
    ddim = run("ddim")
    ddim_err = (ddim - exact).pow(2).mean().sqrt()
    for name in SOLVERS:
        x = run(name)
        assert x.mean().item() == pytest.approx(DATA_MEAN, abs=0.01), name
        # closer to the data's std than DDIM-20 (measured 0.0493/0.0494 vs 0.0481; the exact ODE with the
        # final E[x0 | x_49] step of trailing-20 gives 0.0499, the data 0.1)
        assert abs(x.std() - DATA_STD) < abs(ddim.std() - DATA_STD), name
        assert abs(x.std() - exact.std()) < 0.5 * abs(ddim.std() - exact.std()), name
        # second order: a third of DDIM's distance from the exact ODE solution (measured 5.9e-4, 5.0e-4 vs 1.7e-3)
        assert (x - exact).pow(2).mean().sqrt() < 0.5 * ddim_err, name


def test_the_new_names_are_accepted_everywhere_and_bad_ones_are_clear_errors(tiny_unet):
    for name in SOLVERS:
        assert SampleConfig(sampler=name).sampler == name
        merge_options(SampleConfig(), sampler=name)
    with pytest.raises(OdmaugError, match=r"unknown sampler 'euler' \(known: ddim, ddpm, dpmpp-2m, unipc\)"):
        sample_settings(SampleConfig(), sampler="euler")
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=100))
    with pytest.raises(OdmaugError, match=r"unknown solver 'euler' \(known: dpmpp-2m, unipc\)"):
        build_scheduler("euler", s, [99, 49])
    with pytest.raises(OdmaugError, match="unknown sampler 'dpm'"):
        sample(tiny_unet, torch.zeros(1, 3, 8, 8), torch.tensor([0]), s, SampleConfig(sampler="dpm", steps=2))


def test_cli_samples_with_dpm_solver(tmp_path, smoke_recipe_path):
    from odmaug.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["train-generator", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path),
                                 "--set", "train.steps=2", "--set", "train.grid_per_grade=1"])
    assert result.exit_code == 0, result.output
    run = str(tmp_path / "00000-smoke")
    for sampler in SOLVERS:
        out = tmp_path / f"{sampler}.png"
        result = runner.invoke(app, ["sample", "--run", run, "--per-grade", "2", "--out", str(out),
                                     "--sampler", sampler, "--steps", "10", "--guidance", "2", "--seed", "0"])
        assert result.exit_code == 0, result.output
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"{sampler} 10 steps" in result.output
    result = runner.invoke(app, ["sample", "--run", run, "--out", str(tmp_path / "x.png"), "--sampler", "euler"])
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 2 and last.startswith("error: ") and "unknown sampler 'euler'" in last, result.output

