"""Noise schedule, U-Net contract, samplers, guidance and per-seed generation."""

from __future__ import annotations

import pytest
import torch

from odmaug.config import DiffusionConfig, GeneratorConfig, SampleConfig, merge_options
from odmaug.diffusion.parameterization import to_x0
from odmaug.diffusion import GENERATORS, NoiseSchedule, build_generator, generate, guided_eps, sample
from odmaug.errors import OdmaugError

TINY = GeneratorConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4], dropout=0.0)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_generator(TINY, 5, 8)
    with torch.no_grad():  # the output layer starts at zero; give it weights so labels matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval().to(memory_format=torch.channels_last)


# ---------------------------------------------------------------- schedule
def test_linear_schedule_and_forward_noising():
    s = NoiseSchedule.from_config(DiffusionConfig())
    assert s.timesteps == 1000
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))
    x0, noise, t = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.tensor([0, 10, 500, 999])
    abar = s.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(s.q_sample(x0, t, noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    alpha, sigma = s.alpha_sigma(t, x0.ndim)
    assert torch.allclose(to_x0(noise, s.q_sample(x0, t, noise), alpha, sigma, "eps"), x0, atol=1e-3)
    cos = NoiseSchedule.from_config(DiffusionConfig(schedule="cosine", timesteps=200))
    assert cos.timesteps == 200 and bool((cos.alphas_cumprod[1:] < cos.alphas_cumprod[:-1]).all())
    assert s.sampling_timesteps(4) == [999, 749, 499, 249]  # trailing: from the last timestep
    assert s.sampling_timesteps(4, "leading") == [750, 500, 250, 0]
    with pytest.raises(OdmaugError):
        s.sampling_timesteps(1001)


def test_ddim_with_eta_one_over_all_steps_has_the_ddpm_posterior_variance():
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=50))
    for t in range(1, 50):
        sigma = s.step_coefficients(t, t - 1, eta=1.0)["sigma"]
        assert sigma**2 == pytest.approx(s.posterior_variance[t].item(), rel=1e-9)


def test_ddim_eta_one_and_ddpm_give_the_same_samples(tiny_model):
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=20))
    labels = torch.tensor([0, 2, 4])
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    run = lambda sampler, eta: sample(  # noqa: E731
        tiny_model, noise, labels, s,
        SampleConfig(sampler=sampler, steps=20, eta=eta, guidance_scale=1.5, precision="fp32"), rngs=[torch.Generator().manual_seed(i) for i in range(3)],
    )
    ddpm, ddim1, ddim0 = run("ddpm", 0.0), run("ddim", 1.0), run("ddim", 0.0)
    assert torch.allclose(ddpm, ddim1, atol=1e-5)  # same posterior mean and variance, same noise
    assert not torch.allclose(ddpm, ddim0, atol=1e-3)


def test_ddim_matches_diffusers_scheduler(tiny_model):
    diffusers = pytest.importorskip("diffusers")
    T, steps = 100, 10
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=T))
    ref = diffusers.DDIMScheduler(num_train_timesteps=T, beta_start=1e-3, beta_end=0.2, beta_schedule="linear",
                                  clip_sample=True, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    ref.set_timesteps(steps)
    assert ref.timesteps.tolist() == s.sampling_timesteps(steps, "leading")
    labels = torch.tensor([1, 3])
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ours = sample(tiny_model, noise, labels, s, SampleConfig(sampler="ddim", steps=steps, eta=0.0, guidance_scale=1.0,
                                                             timestep_spacing="leading", precision="fp32"))
    x = noise.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            eps = tiny_model(x, torch.full((2,), int(t)), labels)
            x = ref.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    assert torch.allclose(ours, x, atol=1e-4)
    # the stochastic part: our sigma for eta = 0.5 equals diffusers' eta * sqrt(variance)
    for t, t_prev in [(90, 80), (10, 0), (0, -1)]:
        ours_sigma = s.step_coefficients(t, t_prev, eta=0.5)["sigma"]
        assert ours_sigma == pytest.approx(0.5 * ref._get_variance(t, t_prev).sqrt().item(), abs=1e-6)


def test_guidance_one_is_the_conditional_prediction_and_passes_are_batched(tiny_model):
    x, t, labels = torch.randn(3, 3, 8, 8), torch.tensor([5, 50, 500]), torch.tensor([0, 2, 4])
    null = torch.full_like(labels, 5)
    with torch.no_grad():
        cond, uncond = tiny_model(x, t, labels), tiny_model(x, t, null)
        assert torch.equal(guided_eps(tiny_model, x, t, labels, 1.0, 5), cond)
        assert torch.allclose(guided_eps(tiny_model, x, t, labels, 0.0, 5), uncond, atol=1e-6)
        sizes = []
        hook = tiny_model.register_forward_hook(lambda m, a, o: sizes.append(a[0].shape[0]))
        guided = guided_eps(tiny_model, x, t, labels, 2.0, 5)
        hook.remove()
    assert sizes == [6]  # conditional and unconditional in ONE forward call
    assert torch.allclose(guided, uncond + 2.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-4)


def test_each_image_depends_only_on_its_seed(tiny_model):
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=20))
    labels, seeds = [0, 1, 2, 3, 4, 2, 1], [11, 12, 13, 14, 15, 16, 17]
    kw = SampleConfig(sampler="ddpm", steps=10, guidance_scale=2.0, precision="fp32")
    whole = generate(tiny_model, s, labels, seeds, merge_options(kw, batch_size=7))
    assert whole.shape == (7, 3, 8, 8) and whole.dtype == torch.float32
    assert whole.min() >= -1.0 and whole.max() <= 1.0
    for bs in (1, 3):
        assert torch.allclose(generate(tiny_model, s, labels, seeds, merge_options(kw, batch_size=bs)), whole, atol=1e-5)
    alone = generate(tiny_model, s, [labels[4]], [seeds[4]], kw)
    assert torch.allclose(alone[0], whole[4], atol=1e-5)
    other_seed = generate(tiny_model, s, [labels[4]], [99], kw)
    assert not torch.allclose(other_seed[0], whole[4], atol=1e-3)
    with pytest.raises(OdmaugError, match="grades must be in"):
        generate(tiny_model, s, [5], [0], kw)
    with pytest.raises(OdmaugError, match="one seed per image"):
        generate(tiny_model, s, [1, 2], [0], kw)


# ---------------------------------------------------------------- network contract (every registry entry)
@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("size", [16, 28, 32, 64])
def test_generator_contract(name, size):
    cfg = GeneratorConfig(name=name, base_channels=8, channel_mult=[1, 2, 2], num_res_blocks=1,
                          attention_resolutions=[size // 2], dropout=0.1)
    model = build_generator(cfg, 4, size).eval()
    x, t, labels = torch.randn(2, 3, size, size), torch.tensor([0, 999]), torch.tensor([3, 4])
    with torch.no_grad():
        assert model(x, t, labels).shape == (2, 3, size, size)
    for bad in (torch.tensor([0, 5]), torch.tensor([-1, 0])):
        with pytest.raises(OdmaugError, match="labels must be grades 0..3 or 4"):
            model(x, t, bad)
    with pytest.raises(OdmaugError, match="labels are required"):
        model(x, t, None)
    with pytest.raises(OdmaugError, match=r"\[B\]"):
        model(x, t, torch.tensor([1]))


def test_channels_last_and_bf16_match_fp32(tiny_model):
    x = torch.randn(4, 3, 8, 8)
    t, labels = torch.tensor([1, 100, 400, 900]), torch.tensor([0, 1, 4, 5])
    with torch.no_grad():
        ref = tiny_model(x.contiguous(), t, labels)
        out = tiny_model(x.contiguous(memory_format=torch.channels_last), t, labels)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(out, ref, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny_model(x.contiguous(memory_format=torch.channels_last), t, labels).float()
    rel = (low - ref).norm() / ref.norm()
    assert rel < 5e-2


def test_unknown_generator_and_bad_sizes_are_clear_errors():
    with pytest.raises(OdmaugError, match="unknown generator 'nope'"):
        build_generator(GeneratorConfig(name="nope"), 5, 32)
    with pytest.raises(OdmaugError, match="not divisible"):
        build_generator(GeneratorConfig(channel_mult=[1, 2, 2, 2]), 5, 28)


# ---------------------------------------------------------------- torch.compile for sampling
def test_compiled_sampling_matches_eager_and_auto_skips_small_jobs(tiny_model):
    import copy

    from odmaug.diffusion.sampling import COMPILE_MIN_IMAGE_STEPS, can_compile, compile_for_sampling

    if not can_compile(torch.device("cpu")):
        pytest.skip("no C++ compiler on PATH: torch.compile cannot build CPU kernels here")
    eager, model = tiny_model, copy.deepcopy(tiny_model)  # compiling is in place: never the shared fixture
    cpu = torch.device("cpu")
    # auto: a job below the threshold is not worth a compile; once compiled, the model stays compiled
    assert not compile_for_sampling(model, "auto", COMPILE_MIN_IMAGE_STEPS - 1, cpu)
    assert getattr(model, "_compiled_call_impl", None) is None
    s = NoiseSchedule.from_config(DiffusionConfig(timesteps=20))
    labels, seeds = [0, 1, 2, 3, 4, 0, 1, 2], list(range(8))
    settings = SampleConfig(sampler="ddim", steps=4, eta=1.0, guidance_scale=2.0, batch_size=8, precision="fp32")
    want = generate(eager, s, labels, seeds, settings)
    got = generate(model, s, labels, seeds, merge_options(settings, compile=True))
    assert getattr(model, "_compiled_call_impl", None) is not None
    assert compile_for_sampling(model, False, 0, cpu)  # already compiled: stays compiled
    assert list(model.state_dict()) == list(eager.state_dict())  # checkpoints are unaffected
    assert torch.allclose(got, want, atol=1e-4)


def test_compile_on_without_a_compiler_is_a_clear_error(monkeypatch):
    from odmaug.diffusion import sampling

    monkeypatch.setattr(sampling.shutil, "which", lambda name: None)
    model = build_generator(TINY, 5, 8)
    with pytest.raises(OdmaugError, match="C\\+\\+ compiler"):
        sampling.compile_for_sampling(model, True, 1, torch.device("cpu"))
    assert not sampling.compile_for_sampling(model, "auto", 10**9, torch.device("cpu"))  # auto: quietly eager
