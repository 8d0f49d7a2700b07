"""How synthesis samples: the batch loop that writes each PNG as soon as its batch is done.

Split from :mod:`odmaug.augment.synthesis` (which re-exports these names): that module plans and
resumes a run; this one only turns (grade, seed) pairs into files.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Iterable

import numpy as np
import torch

from odmaug.augment.plan import Item
from odmaug.augment.synthesis_folder import SynthesisFolder
from odmaug.config import SampleConfig
from odmaug.console import progress
from odmaug.data.images import to_pixels
from odmaug.data.pixels import png_mode


BATCH_ALIGN = 8
"""Network batches always hold a multiple of this many images (the tail is padded with copies).

CPU kernels (oneDNN, vectorised reductions) take other code paths for batch remainders, which
changes float rounding by ~1e-7 (fp32) to ~1e-2 (bf16) and can flip a uint8 pixel: measured here,
batches of 1, 3 or 5 rows differ from batches of 64, while every multiple of 8 rows agrees bit for
bit. Aligned batches make an image independent of ``--batch-size`` and of its neighbours.
"""


def aligned(n: int, align: int = BATCH_ALIGN) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return -(-n // align) * align


def generate_batches(loaded, folder: SynthesisFolder, items: Iterable[Item], count: int, settings: SampleConfig,
                     device: torch.device, bar_label: str, show_progress: bool, compiled: bool = False,
                     sources=None) -> None:
    """Generate ``items`` (``count`` of them, consumed lazily) batch by batch and write each PNG
    as soon as its batch is done.

    With ``sources`` (:class:`odmaug.augment.from_real.SourcePools`) each image is a translation
    of its real source image (SDEdit) instead of a sample from pure noise. ``settings.batch_size``
    is rounded up to a multiple of :data:`BATCH_ALIGN`.

    A compiled network builds kernels for each batch shape (about a minute on a 2-core CPU), so
    with ``compiled`` a short last batch is padded to the full batch size instead: on average
    cheaper than a second compile.
    """
    batch_size = aligned(settings.batch_size)
    bits = png_mode(loaded.pixels)[1]  # 16-bit grayscale PNGs for a generator trained on 16-bit images
    one_shape = compiled and count > batch_size
    pending = iter(items)
    bar = progress("img") if show_progress else contextlib.nullcontext()
    with bar:
        task = bar.add_task(bar_label, total=count, info="") if show_progress else None
        while chunk := list(itertools.islice(pending, batch_size)):
            rows = batch_size if one_shape else aligned(len(chunk))
            padded = chunk + [chunk[-1]] * (rows - len(chunk))  # only the last batch pads
            labels = torch.tensor([i.grade for i in padded], dtype=torch.long)
            images = _batch(loaded, padded, labels, settings, device, sources)  # [B, C, H, W] in [-1, 1]
            pixels = to_pixels(images[: len(chunk)].detach().cpu(), bits).permute(0, 2, 3, 1).numpy()  # [B, H, W, C]
            for item, image in zip(chunk, pixels):
                folder.write_png(item, np.ascontiguousarray(image))
            if task is not None:
                bar.update(task, advance=len(chunk), info=f"grade {chunk[-1].grade} seed {chunk[-1].seed}")


def _batch(loaded, items: list[Item], labels: torch.Tensor, settings: SampleConfig, device: torch.device,
           sources) -> torch.Tensor:
    """One batch of images [B, C, H, W] in [-1, 1]: from noise, or translated from ``sources``."""
    seeds = [i.seed for i in items]
    if sources is None:
        from odmaug.diffusion import generate

        # synthesis has compiled the network already when it pays (for the whole job, not one batch)
        one_batch = settings.model_copy(update={"batch_size": len(items), "compile": False})
        return generate(loaded.model, loaded.schedule, labels, seeds, one_batch, device=device)
    from odmaug.diffusion.translate import translate

    return translate(loaded.model, loaded.schedule, sources.images(items), labels, seeds, sources.strength, settings,
                     device=device)
