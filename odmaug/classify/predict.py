"""Inference shared by training (validation, test) and ``odmaug evaluate``: batching, class
probabilities, the predictions table, and the layers where CPU bf16 is unsafe."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import nn

from odmaug.classify.features import prepare_batch
from odmaug.classify.models import ClassifierMeta
from odmaug.data import ImageTable, load_uint8
from odmaug.errors import OdmaugError
from odmaug.precision import autocast


def bf16_hazards(model: nn.Module, image_size: int) -> list[str]:
    """Layers whose bf16 weight gradients oneDNN computes wrongly on the CPU (torch 2.14).

    A strided k x k convolution (k > 1) whose input is 1 x 1 gets garbage, often NaN or ~1e36, in
    the gradients of the taps that only see padding (measured here: fp32 is exact, bf16 on 2 x 2
    and larger inputs is within 0.6%). This happens to small-input timm models, e.g. a ResNet's
    last stage at 16 px. Returns the names of such layers for a forward pass at ``image_size``.
    """
    hits: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and max(module.stride) > 1 and max(module.kernel_size) > 1:
            def hook(mod, inputs, output, name=name):
                if inputs[0].shape[-2:] == (1, 1):
                    hits.append(name)
            hooks.append(module.register_forward_hook(hook))
    if hooks:
        was_training = model.training
        device = next(model.parameters()).device
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(1, _in_channels(model), image_size, image_size, device=device))
        finally:
            model.train(was_training)
            for handle in hooks:
                handle.remove()
    return hits


def load_images(table: ImageTable, size: int, crop_box=None, num_workers: int = 0) -> torch.Tensor:
    """Every image of ``table`` decoded, cropped and resized once: [N, C, size, size] in the table's
    pixel format (uint8, or uint16 for 16-bit sets), on the CPU.

    ``crop_box`` applies to real source images only: rows with ``source == "synthetic"`` were
    generated from already cropped images and are only resized. With ``num_workers`` > 0 worker
    processes decode in parallel (large folders of PNG/JPEG files).
    """
    if len(table) == 0:
        raise OdmaugError(f"{table.name}: no images")
    synthetic = (table.frame["source"] == "synthetic").to_numpy(copy=True)
    if crop_box is None or not synthetic.any():
        return _decode(table, size, crop_box, num_workers)
    fmt = table.pixel_format()
    out = torch.empty(len(table), fmt.channels, size, size, dtype=torch.uint8 if fmt.bits == 8 else torch.uint16)
    for mask, box in ((~synthetic, crop_box), (synthetic, None)):
        if mask.any():
            part = ImageTable(table.frame[mask], table.num_classes, table.name, table.data_dir, **table.format_fields())
            out[torch.from_numpy(mask)] = _decode(part, size, box, num_workers)
    return out


def _decode(table: ImageTable, size: int, crop_box, num_workers: int) -> torch.Tensor:
    if num_workers == 0:
        return load_uint8(table, size, crop_box, progress=True)
    from torch.utils.data import DataLoader

    from odmaug.data import GradeDataset

    loader = DataLoader(GradeDataset(table, size, crop_box, cache=False), batch_size=64, num_workers=num_workers)
    return torch.cat([images for images, _ in loader])


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    meta: ClassifierMeta,
    images_uint8: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
    amp_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Logits float32 [N, meta.outputs] on the CPU for uint8/uint16 images [N, channels, H, W] (resized
    to the model's size): C per image for a softmax head, C - 1 for CORN
    (:func:`odmaug.classify.corn.grade_outputs` turns either into grade probabilities and grades)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, images_uint8.shape[0], batch_size):
        x = prepare_batch(images_uint8[start : start + batch_size], meta, device)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, meta.outputs)


def predictions_frame(table: ImageTable, probs: np.ndarray, predicted: Optional[np.ndarray] = None) -> pd.DataFrame:
    """path, split, source, label (true grade), predicted, prob_0..prob_{C-1}: one row per image.
    ``probs`` float [N, C]; ``predicted`` int [N] (None: the argmax of ``probs``; a CORN head
    passes its own rule's grades)."""
    frame = pd.DataFrame(
        {
            "path": table.frame["path"].to_numpy(),
            "split": table.frame["split"].to_numpy(),
            "source": table.frame["source"].to_numpy(),
            "label": table.labels,
            "predicted": probs.argmax(1) if predicted is None else predicted,
        }
    )
    for c in range(probs.shape[1]):
        frame[f"prob_{c}"] = np.round(probs[:, c], 6)
    return frame


def _in_channels(model: nn.Module) -> int:
    """Input channels of a timm model: those of its first convolution (3 when it has none)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3
