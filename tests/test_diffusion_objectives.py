"""Training objectives beyond eps-prediction: v-prediction (Salimans & Ho 2022), min-SNR-gamma weighting
(Hang et al. 2023) and zero terminal SNR (Lin et al. 2024): the recipe options, the conversions, and the
DM loss against diffusers' training-script formula (``train_text_to_image.py``: ``get_velocity`` target,
``compute_snr`` weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from odmaug.config import DiffusionConfig, OrdinalConfig, load_recipe
from odmaug.diffusion import DiffusionLoss, NoiseSchedule
from odmaug.diffusion.parameterization import min_snr_weight, to_eps, to_x0, training_target
from odmaug.diffusion.schedule import rescale_zero_terminal_snr
from odmaug.errors import OdmaugError

diffusers = pytest.importorskip("diffusers")
T = 100


def config(prediction="eps", snr_gamma=None, zero_terminal_snr=False, gamma=0.0, **ordinal) -> DiffusionConfig:
    return DiffusionConfig(timesteps=T, p_uncond=0.0, prediction=prediction, snr_gamma=snr_gamma,
                           zero_terminal_snr=zero_terminal_snr, ordinal=OrdinalConfig(gamma=gamma, **ordinal))


def reference_scheduler(prediction: str, zero_terminal_snr: bool):
    """diffusers' DDPMScheduler on odmaug's (unrescaled) betas; diffusers rescales them itself."""
    betas = NoiseSchedule.from_config(DiffusionConfig(timesteps=T)).betas.numpy()
    return diffusers.DDPMScheduler(num_train_timesteps=T, trained_betas=betas, rescale_betas_zero_snr=zero_terminal_snr,
                                   prediction_type="v_prediction" if prediction == "v" else "epsilon")


# ---------------------------------------------------------------- recipe options
def test_options_default_to_the_old_objective_and_take_set_overrides(smoke_recipe_path):
    d = DiffusionConfig()
    assert (d.prediction, d.snr_gamma, d.zero_terminal_snr) == ("eps", None, False)
    r = load_recipe(smoke_recipe_path, ["diffusion.prediction=v", "diffusion.snr_gamma=5",
                                        "diffusion.zero_terminal_snr=true"])
    assert (r.diffusion.prediction, r.diffusion.snr_gamma, r.diffusion.zero_terminal_snr) == ("v", 5.0, True)
    assert load_recipe(smoke_recipe_path, ["diffusion.snr_gamma=null"]).diffusion.snr_gamma is None
    schedule = NoiseSchedule.from_config(r.diffusion)
    assert schedule.prediction == "v" and schedule.zero_terminal_snr and schedule.terminal_signal == 0.0


@pytest.mark.parametrize("overrides, fragment", [
    (["diffusion.prediction=x0"], "diffusion.prediction: unknown objective 'x0' (known: eps, v)"),
    (["diffusion.snr_gamma=0"], "diffusion.snr_gamma: Input should be greater than 0"),
    (["diffusion.snr_gamma=-5"], "diffusion.snr_gamma"),
    (["diffusion.zero_terminal_snr=true"], "diffusion.zero_terminal_snr needs diffusion.prediction=v"),
    (["diffusion.prediction=v", "diffusion.zero_terminal_snr=maybe"], "diffusion.zero_terminal_snr"),
])
def test_bad_values_are_one_line_errors(smoke_recipe_path, overrides, fragment):
    from odmaug.commands.names import check_names

    with pytest.raises(OdmaugError) as err:  # a recipe's names meet their registries at the command boundary
        check_names(load_recipe(smoke_recipe_path, overrides))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_eps_schedule_with_zero_terminal_snr_is_refused():
    betas = rescale_zero_terminal_snr(NoiseSchedule.from_config(DiffusionConfig(timesteps=T)).betas)
    with pytest.raises(OdmaugError, match="needs v-prediction"):
        NoiseSchedule(betas)
    with pytest.raises(OdmaugError, match="unknown objective 'x0'"):
        NoiseSchedule(betas, prediction="x0")
    assert NoiseSchedule(betas, prediction="v").zero_terminal_snr


# ---------------------------------------------------------------- schedule and conversions
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_zero_terminal_snr_rescale_matches_diffusers(schedule):
    base = NoiseSchedule.from_config(DiffusionConfig(timesteps=T, schedule=schedule)).betas
    ours = NoiseSchedule.from_config(DiffusionConfig(timesteps=T, schedule=schedule, prediction="v",
                                                     zero_terminal_snr=True))
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as reference

    assert torch.allclose(ours.betas, reference(base.clone()), rtol=1e-12, atol=0)  # diffusers' function in float64
    ref = reference(base.float())  # as diffusers' schedulers call it, in float32 (betas off by up to 3e-4 relative)
    assert torch.allclose(ours.alphas_cumprod.float(), torch.cumprod(1 - ref, 0), atol=1e-6)
    assert ours.betas[-1] == 1.0 and ours.alphas_cumprod[-1] == 0.0
    assert ours.alphas_cumprod[0] == pytest.approx(float(1 - base[0]), rel=1e-12)  # first level kept
    assert bool((ours.alphas_cumprod[1:] < ours.alphas_cumprod[:-1]).all())


def test_conversions_invert_the_forward_process():
    s = NoiseSchedule.from_config(config("v", zero_terminal_snr=True))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    t = torch.tensor([0, 10, 50, 98, 99])  # 99: abar = 0, x_t is pure noise
    alpha, sigma = s.alpha_sigma(t)
    xt = s.q_sample(x0, t, noise)
    v = training_target(x0, noise, alpha, sigma, "v")
    assert torch.allclose(v, alpha * noise - sigma * x0)  # Salimans & Ho's v
    assert torch.allclose(to_eps(v, xt, alpha, sigma, "v"), noise, atol=1e-5)
    assert torch.allclose(to_x0(v, xt, alpha, sigma, "v"), x0, atol=1e-5)  # also at abar = 0: no division
    assert training_target(x0, noise, alpha, sigma, "eps") is noise and to_eps(noise, xt, alpha, sigma, "eps") is noise
    # diffusers' float32 abar differs from odmaug's float64 one by <= 2e-7, which sqrt(1 - abar)
    # amplifies near t = 0 (1 - abar_0 = 1e-3): up to 3e-6 here
    ref = reference_scheduler("v", True)
    assert torch.allclose(v, ref.get_velocity(x0, noise, t), atol=1e-5)


@pytest.mark.parametrize("prediction, zero_terminal_snr", [("eps", False), ("v", False), ("v", True)])
def test_min_snr_weights_match_compute_snr(prediction, zero_terminal_snr):
    from types import SimpleNamespace

    from diffusers.training_utils import compute_snr

    # compute_snr on odmaug's own float32 table: the formula is compared, not two float32 cumprods
    # (theirs differs by 6e-8, which SNR = abar / (1 - abar) amplifies to 2e-5 relative near t = 0)
    abar = NoiseSchedule.from_config(config(prediction, zero_terminal_snr=zero_terminal_snr)).alphas_cumprod.float()
    snr = compute_snr(SimpleNamespace(alphas_cumprod=abar), torch.arange(T))
    expected = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0] / (snr if prediction == "eps" else snr + 1)
    ours = min_snr_weight(abar, 5.0, prediction)
    assert torch.allclose(ours, expected, rtol=1e-6, atol=0)
    assert ours[0] < 0.01  # 5 / SNR_0 (eps) or 5 / (SNR_0 + 1) (v): the easiest, least noisy level weighs least
    assert ours[-1] == (0.0 if zero_terminal_snr else pytest.approx(1.0 if prediction == "eps" else float(abar[-1]), rel=1e-5))


# ---------------------------------------------------------------- the DM loss against diffusers' training script
def diffusers_training_loss(model, x0, labels, seed, prediction, snr_gamma, zero_terminal_snr):
    """train_text_to_image.py's loss: add_noise, get_velocity / noise target, compute_snr weights."""
    from diffusers.training_utils import compute_snr

    scheduler = reference_scheduler(prediction, zero_terminal_snr)
    g = torch.Generator().manual_seed(seed)  # the draws in DiffusionLoss's documented order: t, then noise
    t = torch.randint(T, (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    noisy = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t) if prediction == "v" else noise
    model_pred = model(noisy, t, labels)
    if snr_gamma is None:
        return F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    snr = compute_snr(scheduler, t)
    weights = torch.stack([snr, snr_gamma * torch.ones_like(t)], dim=1).min(dim=1)[0]
    weights = weights / snr if prediction == "eps" else weights / (snr + 1)
    loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    return (loss.mean(dim=list(range(1, len(loss.shape)))) * weights).mean()


@pytest.mark.parametrize("prediction, snr_gamma, zero_terminal_snr", [
    ("eps", None, False), ("eps", 5.0, False), ("v", None, False), ("v", 5.0, False), ("v", 5.0, True), ("v", 0.5, True),
])
def test_dm_loss_equals_the_diffusers_training_script(tiny_unet, prediction, snr_gamma, zero_terminal_snr):
    cfg = config(prediction, snr_gamma, zero_terminal_snr)
    x0 = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 2 - 1
    labels = torch.arange(12) % 5
    with torch.no_grad():  # seed 5 draws t = 4, 6, 11 among others: SNR > 5 there at T = 100, so weights < 1
        ours = DiffusionLoss(cfg, 5)(tiny_unet, x0, labels, NoiseSchedule.from_config(cfg), torch.Generator().manual_seed(5))
        ref = diffusers_training_loss(tiny_unet, x0, labels, 5, prediction, snr_gamma, zero_terminal_snr)
        plain = diffusers_training_loss(tiny_unet, x0, labels, 5, prediction, None, zero_terminal_snr)
    assert ours["l_ord"] == 0 and ours["loss"] is ours["l_dm"]
    # measured: equal, or 1.4e-7 relative (float32 abar tables: odmaug's from float64, diffusers' own cumprod)
    assert ours["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert (snr_gamma is None) == (ref.item() == plain.item())  # the weighting changes the loss when it is on


def test_eps_loss_without_weights_is_the_plain_mse_bit_for_bit(tiny_unet):
    cfg = config("eps")
    x0 = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    s, labels = NoiseSchedule.from_config(cfg), torch.arange(6) % 5
    with torch.no_grad():
        out = DiffusionLoss(cfg, 5)(tiny_unet, x0, labels, s, torch.Generator().manual_seed(4))
        g = torch.Generator().manual_seed(4)
        t, noise = torch.randint(T, (6,), generator=g), torch.randn(x0.shape, generator=g)
        direct = (tiny_unet(s.q_sample(x0, t, noise), t, labels).float() - noise).pow(2).mean()
    assert torch.equal(out["loss"], direct)


class VTable(torch.nn.Module):
    """A v-network whose output depends on x, t and the label; ``as_eps`` gives its eps twin."""

    def __init__(self, schedule: NoiseSchedule, as_eps: bool = False) -> None:
        super().__init__()
        self.schedule, self.as_eps, self.num_classes = schedule, as_eps, 5
        self.table = torch.nn.Parameter(torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(5)))

    def forward(self, x, t, labels):
        v = self.table[labels] * (1 + t.float().view(-1, 1, 1, 1) / 50) + 0.3 * x
        if not self.as_eps:
            return v
        abar = self.schedule.alphas_cumprod.float()[t].view(-1, 1, 1, 1)  # Salimans & Ho: eps = alpha v + sigma x
        return abar.sqrt() * v + (1 - abar).sqrt() * x


@pytest.mark.parametrize("ordinal", [dict(), dict(triplets="include-true"), dict(mode="cross-image"),
                                     dict(distance="squared", spacing="proportional")])
def test_ordinal_term_of_a_v_network_is_that_of_its_eps_twin(ordinal):
    # gamma keeps its meaning: the ordinal term sees the eps estimates, whatever the network outputs
    x0 = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * 2 - 1
    labels = torch.arange(10) % 5
    v_cfg, eps_cfg = config("v", 5.0, gamma=1.0, **ordinal), config("eps", gamma=1.0, **ordinal)
    v_s, eps_s = NoiseSchedule.from_config(v_cfg), NoiseSchedule.from_config(eps_cfg)
    v_out = DiffusionLoss(v_cfg, 5)(VTable(v_s), x0, labels, v_s, torch.Generator().manual_seed(8))
    eps_out = DiffusionLoss(eps_cfg, 5)(VTable(v_s, as_eps=True), x0, labels, eps_s, torch.Generator().manual_seed(8))
    assert v_out["n_ord"] == eps_out["n_ord"] > 0
    assert v_out["l_ord"].item() == pytest.approx(eps_out["l_ord"].item(), rel=1e-5)
    assert v_out["l_ord"].item() > 1e-4 and v_out["loss"].requires_grad
    assert v_out["loss"].item() == pytest.approx(v_out["l_dm"].item() + v_out["l_ord"].item(), rel=1e-6)


def test_loss_refuses_a_schedule_of_another_parameterization(tiny_unet):
    x0 = torch.zeros(2, 3, 8, 8)
    with pytest.raises(OdmaugError, match="v-prediction but the schedule was built for eps"):
        DiffusionLoss(config("v"), 5)(tiny_unet, x0, torch.tensor([0, 1]), NoiseSchedule.from_config(config("eps")),
                                      torch.Generator())
