"""Does a short-trained network predict too small an eps at low noise?

Hypothesis (issue "Generators worth judging"): after a short training the eps estimate is too
small where little noise is left, so a deterministic sampler (DDIM eta 0, UniPC) removes too little
noise and carries the rest into the image, while a stochastic one re-noises at every step and
hides it. Test: on real training images x0 with their own grades, per bucket of timesteps
(``buckets`` equal ranges of 0..T-1), draw t uniformly in the bucket and eps ~ N(0, I), make
x_t = alpha_t x0 + sigma_t eps, and compare the EMA network's eps estimate (v converted, as every
sampler does) with eps: the mean over images of ||eps_pred|| / ||eps|| (per-image L2 norms over
all pixels; 1 = the right size, < 1 too small) and the mean squared error, for the conditional
estimate and the classifier-free guided one the samplers use (the run's guidance scale), under
the run's sampling precision.
"""

from __future__ import annotations

import numpy as np
import torch

from odmaug.data import to_model_range


@torch.no_grad()
def eps_diagnosis(gen, images: torch.Tensor, labels, buckets: int = 10, per_bucket: int = 256, seed: int = 0) -> dict:
    """Per timestep bucket: t range, mean abar, and for ``cond`` and ``guided`` the mean norm ratio
    ||eps_pred|| / ||eps|| and the eps MSE. ``images``: uint8 [N, 3, S, S]; ``labels``: grades [N].

    Deterministic given ``seed`` (images, t and eps are drawn from one CPU generator)."""
    from odmaug.diffusion import guided_eps
    from odmaug.diffusion.parameterization import to_eps
    from odmaug.precision import autocast, resolve_precision

    schedule, model, settings = gen.schedule, gen.model, gen.recipe.sample
    device = next(model.parameters()).device
    labels = torch.tensor(np.asarray(labels), dtype=torch.long)  # a copy: table labels are read-only arrays
    g = torch.Generator().manual_seed(seed)
    T = schedule.timesteps
    edges = [round(k * T / buckets) for k in range(buckets + 1)]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        index = torch.randint(len(labels), (per_bucket,), generator=g)
        t = torch.randint(lo, hi, (per_bucket,), generator=g)
        eps = torch.randn(per_bucket, *images.shape[1:], generator=g)
        x0 = to_model_range(images[index])
        x_t = schedule.q_sample(x0, t, eps).contiguous(memory_format=torch.channels_last)
        alpha, sigma = schedule.alpha_sigma(t)
        row = {"t_lo": lo, "t_hi": hi - 1, "abar_mean": float(schedule.gather("alphas_cumprod", t).mean())}
        with autocast(device, resolve_precision(settings.precision, device)):
            for name, scale in (("cond", 1.0), ("guided", settings.guidance_scale)):
                out = guided_eps(model, x_t.to(device), t.to(device), labels[index].to(device), scale, gen.num_classes)
                pred = to_eps(out.float().cpu(), x_t, alpha, sigma, schedule.prediction)
                ratio = pred.flatten(1).norm(dim=1) / eps.flatten(1).norm(dim=1)
                row[f"{name}_norm_ratio"] = float(ratio.mean())
                row[f"{name}_eps_mse"] = float((pred - eps).pow(2).mean())
        rows.append(row)
    return {"step": gen.step, "checkpoint_id": gen.checkpoint_id, "prediction": schedule.prediction,
            "guidance_scale": settings.guidance_scale, "precision": settings.precision, "per_bucket": per_bucket,
            "seed": seed, "buckets": rows}


def print_diagnosis(name: str, diag: dict) -> None:
    """A markdown table of one diagnosis."""
    print(f"\n{name} step {diag['step']} ({diag['prediction']}-prediction, guidance {diag['guidance_scale']}, "
          f"{diag['per_bucket']} real images per bucket): ||eps_pred|| / ||eps|| and eps MSE")
    print("| t | mean abar | cond ratio | cond MSE | guided ratio | guided MSE |\n|---|---|---|---|---|---|")
    for r in diag["buckets"]:
        print(f"| {r['t_lo']}-{r['t_hi']} | {r['abar_mean']:.3f} | {r['cond_norm_ratio']:.3f} | {r['cond_eps_mse']:.4f} "
              f"| {r['guided_norm_ratio']:.3f} | {r['guided_eps_mse']:.4f} |")
