"""The generator's learning rate as a function of the optimizer step (``train.lr_schedule``).

A pure function of the 1-based step and the ``train`` section, so a checkpoint's step is the
schedule's whole state: ``N steps + resume`` continues it exactly. None of the schedules depends on
``train.steps`` (where a run stops), so a run continued to more steps keeps its past schedule, the
assumption of the benchmark store (:mod:`odmaug.benchmark.store`).

Step ``s`` (1-based) runs at ``lr * f(s)``, where ``f`` is the multiplier diffusers' LambdaLR reports
after ``s`` scheduler steps (:mod:`diffusers.optimization`): the warm-up's last step is at full lr,
as odmaug's warm-up always was. With ``W = lr_warmup``:

* ``constant``: ``f(s) = min(s / W, 1)`` (diffusers' ``get_constant_schedule_with_warmup``).
* ``cosine``: the warm-up, then ``r + (1 - r) * 0.5 * (1 + cos(pi * p))`` with
  ``p = min((s - W) / (D - W), 1)``, ``D = lr_decay_steps``, ``r = lr_min_ratio``; ``r = 0`` is
  diffusers' ``get_cosine_schedule_with_warmup(num_cycles=0.5)`` up to ``D``, after which odmaug
  stays at ``r`` (diffusers' cosine would rise again); ``r > 0`` is torch's ``CosineAnnealingLR``
  floor ``eta_min = r * lr``.
* ``inverse-sqrt``: ``min(s / W, 1) / sqrt(max(s / t_ref, 1))``, ``t_ref = lr_decay_steps or W``
  (EDM2, Karras et al. 2024, ``training/training_loop.py: learning_rate_schedule``, counted in steps
  instead of images; with ``t_ref = W`` it is ``sqrt(W / s)`` after the warm-up, as the inverse-sqrt
  schedules of fairseq and transformers).
"""

from __future__ import annotations

import math

from odmaug.config import TrainConfig


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """The factor ``f(step)`` of ``cfg.lr`` for 1-based optimizer step ``step`` (see the module docstring).

    Args:
        step: the optimizer step about to run, 1-based (>= 1).
        cfg: the ``train`` section (its validation guarantees ``lr_decay_steps`` where it is needed).

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: ``step < 1``.
    """
    if step < 1:
        raise ValueError(f"optimizer steps are 1-based (got {step})")
    warmup = cfg.lr_warmup
    ramp = min(step / warmup, 1.0) if warmup else 1.0
    if cfg.lr_schedule == "constant" or (cfg.lr_schedule == "cosine" and step < warmup):
        return ramp
    if cfg.lr_schedule == "cosine":
        assert cfg.lr_decay_steps is not None  # TrainConfig refuses cosine without it
        progress = min((step - warmup) / (cfg.lr_decay_steps - warmup), 1.0)
        r = cfg.lr_min_ratio
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))
    t_ref = cfg.lr_decay_steps or warmup
    return ramp / math.sqrt(max(step / t_ref, 1.0))


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """The Adam learning rate of 1-based optimizer step ``step``: ``cfg.lr * lr_multiplier(step, cfg)``.

    The constant schedule computes ``lr * step / lr_warmup`` during the warm-up exactly as odmaug
    did before the other schedules existed, so default runs keep their float rounding bit for bit.
    """
    if cfg.lr_schedule == "constant":
        if cfg.lr_warmup and step <= cfg.lr_warmup:
            return cfg.lr * step / cfg.lr_warmup
        return cfg.lr
    return cfg.lr * lr_multiplier(step, cfg)
