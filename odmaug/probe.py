"""Does a network run at the configured image size? One cheap forward pass, before training.

A classifier or generator that cannot run at ``data.image_size`` (e.g. ``convnext_atto`` at
16 px: its stride-2 downsampling meets a 1x1 map) used to fail deep inside the first training
step, after a run folder was made, with a raw traceback. Builders call :func:`require_runs`
right after construction, so the user gets one ``OdmaugError`` line naming the network, the
size and the nearest size that works, before anything is written.

Cost: one batch-1 forward pass in eval mode under ``no_grad`` (milliseconds for the test models,
~0.1 s for the default U-Net at 32 px). Configurations that passed are remembered per process,
so building the same network again (the CLI checks, then the trainer builds) does not probe twice.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Optional, Sequence

import torch
from torch import nn

from odmaug.errors import OdmaugError

_PASSED: set[Hashable] = set()  # configurations known to run (per process)

# Sizes tried when looking for the smallest working one: multiples of 8 (every common network
# reduces by a power of two) up to this limit, within a wall-clock budget, since each try is a
# forward pass at a growing size (and a rebuild for fixed-size networks).
SEARCH_LIMIT = 256
SEARCH_STEP = 8
SEARCH_BUDGET_S = 5.0


def forward_error(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Optional[Exception]:
    """Run ``model(*inputs)`` once; return the exception it raised, or None when it ran.

    The model is put in eval mode (BatchNorm works on a batch of 1, dropout draws nothing) and
    restored to its previous mode; no gradients are kept and the global RNG state is restored, so
    probing leaves training exactly as reproducible as before.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(*inputs)
    except Exception as err:  # any failure on a plain zeros input means "cannot run at this size"
        return err
    finally:
        model.train(was_training)
    return None


def rebuilt_runs_at(build: Callable[[int], nn.Module],
                    make_inputs: Callable[[int], Sequence[torch.Tensor]]) -> Callable[[int], bool]:
    """``runs_at`` for :func:`require_runs` that builds the network anew for each size tried
    (under a forked RNG) and runs it once; a constructor that refuses the size counts as "no"."""

    def runs_at(size: int) -> bool:
        try:
            with torch.random.fork_rng(devices=[]):  # building draws initial weights from the global RNG
                model = build(size)
        except Exception:
            return False
        return forward_error(model, make_inputs(size)) is None

    return runs_at


def describe(err: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` (shortened): enough to recognise the cause in one line."""
    first = (str(err).strip().splitlines() or [""])[0]
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def smallest_working(runs_at: Callable[[int], bool], above: int, limit: int = SEARCH_LIMIT,
                     step: int = SEARCH_STEP, budget_s: float = SEARCH_BUDGET_S) -> tuple[Optional[int], int]:
    """Search the multiples of ``step`` in (``above``, ``limit``] upward for one where
    ``runs_at(size)`` is true, for at most about ``budget_s`` seconds.

    Returns:
        ``(size, size)`` for the first that works, or ``(None, largest size tried)``.
    """
    deadline = time.perf_counter() + budget_s
    tried = above
    for size in range((above // step + 1) * step, limit + 1, step):
        tried = size
        if runs_at(size):
            return size, size
        if time.perf_counter() > deadline:
            break
    return None, tried


def require_runs(key: Hashable, model: nn.Module, image_size: int, what: str, setting: str,
                 make_inputs: Callable[[int], Sequence[torch.Tensor]],
                 runs_at: Callable[[int], bool]) -> None:
    """Raise unless ``model`` runs on ``image_size`` px inputs (skipped when ``key`` already passed).

    Args:
        key: hashable identity of the configuration (network settings, classes, size).
        model: the freshly built network (on CPU).
        image_size: side length S of the configured inputs.
        what: how to name the network in the message, e.g. ``classifier convnext_atto``.
        setting: the recipe value(s) that choose the size, for the hint.
        make_inputs: ``S -> inputs`` of one forward pass (e.g. ``[zeros(1, 3, S, S)]``).
        runs_at: ``S -> bool``, whether a network of this configuration runs at another size S
            (used only after a failure, to name the smallest size that works).

    Raises:
        OdmaugError: the network cannot run at ``image_size``; the message names the network,
            the size, the underlying error and, where found, the smallest larger size that works.
    """
    if key in _PASSED:
        return
    err = forward_error(model, make_inputs(image_size))
    if err is None:
        _PASSED.add(key)
        return
    raise OdmaugError(f"{what} cannot run on {image_size}x{image_size} px images ({describe(err)}); "
                      + size_hint(runs_at, image_size, setting))


def size_hint(runs_at: Callable[[int], bool], image_size: int, setting: str) -> str:
    """What to do instead, e.g. ``the smallest size above 16 px it runs at is 32 px (set data.image_size)``."""
    found, tried = smallest_working(runs_at, image_size)
    if found is not None:
        return f"the smallest size above {image_size} px it runs at is {found} px (set {setting})"
    if tried > image_size:
        return f"it runs at none of the multiples of {SEARCH_STEP} px up to {tried} px; choose another network"
    return "choose another network or size"
