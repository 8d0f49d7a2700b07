"""The generator: noise schedule, class-conditional U-Net, DM/ODM loss, samplers, trainer, checkpoints.

Public entry points::

    from odmaug.config import SampleConfig
    from odmaug.diffusion import load_generator, generate
    gen = load_generator("runs/00003-quickstart", device="cpu")
    settings = SampleConfig(steps=50, guidance_scale=2.0)      # or the run's recipe's ``sample`` section
    images = generate(gen.model, gen.schedule, labels=[4] * 8, seeds=range(8),
                      settings=settings)                       # float [8, 3, H, W] in [-1, 1]
"""

from odmaug.diffusion.checkpoint import LoadedGenerator, load_generator
from odmaug.diffusion.losses import ClassPool, DiffusionLoss
from odmaug.diffusion.ordinal import ordinal_term, pair_distance
from odmaug.precision import resolve_precision
from odmaug.diffusion.sampling import generate, guided_eps, sample
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.diffusion.trainer import TrainResult, train_generator
from odmaug.diffusion.unet import GENERATORS, UNet, build_generator, register_generator

__all__ = [
    "GENERATORS",
    "ClassPool",
    "DiffusionLoss",
    "LoadedGenerator",
    "NoiseSchedule",
    "TrainResult",
    "UNet",
    "build_generator",
    "generate",
    "guided_eps",
    "load_generator",
    "ordinal_term",
    "pair_distance",
    "register_generator",
    "resolve_precision",
    "sample",
    "train_generator",
]
