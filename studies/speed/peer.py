"""The diffusers peer of ``generator_speed.py``: ``UNet2DModel`` at odmaug's default size, its
training loss (diffusers' training-script loss with label dropout) and its guided DDIM loop.

The peer trains through the same step unit as odmaug (``odmaug.train_step.TrainStep`` built by
``odmaug.diffusion.trainer.generator_train_step``: Adam foreach, grad clip, EMA), so the two
sides differ only in the network and the loss.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

NUM_CLASSES = 5  # grades; label 5 is the null class of classifier-free guidance (num_class_embeds 6)
GUIDANCE = 2.0
PEER_DROPOUT = 0.1  # odmaug's default GeneratorConfig dropout; the peer cases marked "dropout" use it too
PEER_KWARGS = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(64, 128, 128, 128), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), num_class_embeds=NUM_CLASSES + 1,
)


def peer_generator(dropout: float = 0.0) -> torch.nn.Module:
    """The diffusers UNet2DModel peer (seed 0; diffusers' default dropout is 0)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(**PEER_KWARGS, dropout=dropout)


def peer_setup(kind: str, setting: str, compile_precision: str, device: torch.device) -> dict:
    """The peer network of a case in its precision and layout, and how it computes.

    Returns a dict: ``model``, ``weights_dtype`` (the dtype inputs are cast to), ``autocast``
    (dtype or None), ``precision`` (the name reported) and ``detail`` (for the setting text).
    """
    dropout = PEER_DROPOUT if (setting == "fp32-dropout" or (setting == "compiled" and kind == "train")) else 0.0
    model = peer_generator(dropout).to(device)
    if setting == "compiled":
        precision = compile_precision
    else:
        precision = "fp32" if setting.startswith("fp32") else "bf16"
    weights_dtype = torch.bfloat16 if setting == "bf16-cl" else torch.float32
    if not setting.startswith("fp32"):  # the peer's fp32 eager cases are its default NCHW
        model = model.to(dtype=weights_dtype, memory_format=torch.channels_last)
    use_autocast = "autocast" in setting or (setting == "compiled" and compile_precision == "bf16")
    return {"model": model, "weights_dtype": weights_dtype, "autocast": torch.bfloat16 if use_autocast else None,
            "precision": precision, "detail": "bf16 autocast" if use_autocast else "fp32"}


def peer_train_loss(net: torch.nn.Module, x0: torch.Tensor, labels: torch.Tensor, weights_dtype: torch.dtype,
                    layout: torch.memory_format, g: torch.Generator) -> Callable[[], torch.Tensor]:
    """diffusers' training-script loss with label dropout for guidance, of ``net`` on ``x0`` (in ``layout``)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    batch, device = x0.shape[0], x0.device

    def loss() -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=g).to(device).contiguous(memory_format=layout)
        t = torch.randint(1000, (batch,), generator=g).to(device)
        dropped = torch.rand(batch, generator=g) < 0.1
        cond = torch.where(dropped, torch.full_like(labels, NUM_CLASSES), labels).to(device)
        xt = scheduler.add_noise(x0, noise, t)
        pred = net(xt.to(weights_dtype), t, class_labels=cond).sample
        return F.mse_loss(pred.float(), noise)

    return loss


def peer_sample_work(net: torch.nn.Module, noise: torch.Tensor, labels: torch.Tensor, steps: int,
                     weights_dtype: torch.dtype, ctx: Callable, keep: Callable[[torch.Tensor], None]):
    """The diffusers pipeline loop: cond + uncond in one batch, guidance, DDIM scheduler step."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps)
    batch, device = noise.shape[0], noise.device
    both = torch.cat([labels, torch.full_like(labels, NUM_CLASSES)]).to(device)

    @torch.no_grad()
    def work():
        x = noise
        for t in scheduler.timesteps:
            tt = torch.full((2 * batch,), int(t), dtype=torch.long, device=device)
            with ctx():
                eps = net(torch.cat([x, x]).to(weights_dtype), tt, class_labels=both).sample.float()
            eps_c, eps_u = eps.chunk(2)
            x = scheduler.step(eps_u + GUIDANCE * (eps_c - eps_u), t, x).prev_sample
        keep(x)
        return x

    return work
