"""One optimisation step for every network odmaug trains: the generator, the classifier and the
speed benchmarks time this same unit.

A step is: the forward pass and loss (a caller's function) under the autocast of the training
precision, the backward pass (loss-scaled for fp16, whose small gradients would underflow),
optional clipping of the global gradient norm, the optimizer update, and an optional EMA update.
It is split in two, :meth:`TrainStep.backward` and :meth:`TrainStep.apply`, because the generator
trainer runs the second half (the part that turns step k into step k + 1) with Ctrl-C held back.
Weights, optimizer state, EMA and losses stay fp32 in every precision (see :mod:`odmaug.precision`).
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional, Sequence, TypeVar

import torch
from torch import nn

from odmaug.precision import autocast

Output = TypeVar("Output")


def ema_decay_at(step: int, decay: float, warmup: int) -> float:
    """EMA decay after optimizer step ``step`` (1-based): 0 (copy) during warm-up, then a ramp to ``decay``."""
    if step <= warmup:
        return 0.0
    s = step - warmup
    return min(decay, (1 + s) / (10 + s))


def ramp_end(decay: float, warmup: int) -> int:
    """The first optimizer step at which :func:`ema_decay_at` reaches ``decay`` (before it, every
    decay at or above the ramp's value gives the same average): the smallest s with
    (1 + s) / (10 + s) >= decay, after the warm-up."""
    s = max(1, math.ceil((10 * decay - 1) / (1 - decay)))
    while s > 1 and s / (9 + s) >= decay:  # the closed form can land one step late in float rounding
        s -= 1
    return warmup + s


def same_emas_note(cfg) -> str | None:
    """A warning when two of a run's EMAs (``cfg``: TrainConfig) are one and the same over its
    ``steps``: both follow the ramp to the end, so keeping both measures nothing."""
    ramped = sorted(d for d in (cfg.ema_decay, *cfg.ema_decays) if ramp_end(d, cfg.ema_warmup) > cfg.steps)
    if len(ramped) < 2:
        return None
    ends = ", ".join(f"{ramp_end(d, cfg.ema_warmup):,}" for d in ramped)
    return (f"the EMAs of decay {', '.join(f'{d:g}' for d in ramped)} are one and the same in a {cfg.steps:,}-step run: "
            f"each follows the ramp min(decay, (1 + s) / (10 + s)) until step {ends}; lower decays or more "
            "train.steps make them differ")


class EMA:
    """An exponential moving average of a model's parameters (buffers are copied once, at creation).

    Args:
        model: the trained network; the average starts as a copy of it (eval mode, no gradients).
        decay: the decay after the ramp of :func:`ema_decay_at`.
        warmup: optimizer steps during which the average copies the weights.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: int = 0) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.source, self.decay, self.warmup = model, decay, warmup

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the weights after optimizer step ``step`` (1-based)."""
        decay = ema_decay_at(step, self.decay, self.warmup)
        averaged, params = list(self.module.parameters()), list(self.source.parameters())
        if decay == 0.0:
            torch._foreach_copy_(averaged, params)
        else:
            torch._foreach_lerp_(averaged, params, 1.0 - decay)


class TrainStep:
    """Backward, clip, optimizer update and EMA of one batch, in the training precision.

    Args:
        model: the network whose parameters the optimizer updates (not a DDP or compiled wrapper:
            the caller's loss function may call one).
        optimizer: over ``model``'s parameters.
        device: where ``model`` lives (its type picks the autocast).
        amp_dtype: the autocast dtype (:func:`odmaug.precision.resolve_precision`); None: fp32.
            fp16 gets a gradient scaler.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        ema: the :class:`EMA` to update after every optimizer step (None: none); the primary one.
        extra_emas: more :class:`EMA` of ``model`` (other decays), updated after ``ema``, so a decay
            can be chosen after training (the generator's ``train.ema_decays``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 amp_dtype: Optional[torch.dtype] = None, *, grad_clip: Optional[float] = None,
                 ema: Optional[EMA] = None, extra_emas: Sequence[EMA] = ()) -> None:
        self.model, self.optimizer, self.device, self.amp_dtype = model, optimizer, device, amp_dtype
        self.grad_clip, self.ema, self.extra_emas = grad_clip, ema, tuple(extra_emas)
        self.scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    def set_lr(self, lr: float) -> None:
        """The learning rate of every parameter group (schedules are functions of the step)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def backward(self, compute: Callable[[], Output]) -> Output:
        """Run ``compute`` (forward pass and loss) under autocast and back-propagate its loss.

        ``compute`` returns the scalar loss tensor, or a dict holding it under ``"loss"``; its
        return value is passed back. Gradients are unscaled and clipped here, so they are final.
        """
        with autocast(self.device, self.amp_dtype):
            out = compute()
        loss = out["loss"] if isinstance(out, dict) else out
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        return out

    def apply(self, step: int) -> None:
        """The optimizer update (skipped by the fp16 scaler on overflow) and the EMA updates.

        Args:
            step: the optimizer steps done once this one is (1-based; it sets the EMA's decay).
        """
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(step)
        for ema in self.extra_emas:
            ema.update(step)

    def __call__(self, compute: Callable[[], Output], step: int = 1) -> Output:
        """:meth:`backward` then :meth:`apply`: one whole step; returns what ``compute`` returned."""
        out = self.backward(compute)
        self.apply(step)
        return out
