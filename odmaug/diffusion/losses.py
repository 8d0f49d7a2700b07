"""The training loss: DM (the MSE of the network's eps or v prediction, optionally min-SNR
weighted) plus the ordinal term of ODM on eps estimates (docs/method.md, sections 1 and 2).

One mechanism for both models: :class:`DiffusionLoss` with ``gamma = 0`` *is* the DM loss (one
forward pass, no extra evaluations); with ``gamma > 0`` the extra label evaluations of the ordinal
term are concatenated with the DM batch and go through the network in ONE forward call.

Randomness: every draw (timesteps, noise, label dropout, triplets, pool images) comes from the
``rng`` argument (a torch.Generator), in a fixed order, so a step is reproducible from its state; the
DM draws come first, so DM and ODM runs with one seed see the same t, noise and dropout.
Pass ``labels`` on the CPU: the bookkeeping (who is dropped, which triplet) then needs no
device synchronisation.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Optional

import torch
from torch import nn

from odmaug.config import DiffusionConfig
from odmaug.console import warn
from odmaug.data.images import to_model_range
from odmaug.diffusion.ordinal import ordinal_term, pair_distance
from odmaug.diffusion.parameterization import min_snr_weight, to_eps, training_target
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.errors import OdmaugError

__all__ = ["ClassPool", "DiffusionLoss", "channels_last_grad", "ordinal_term", "pair_distance"]


def channels_last_grad(eps: torch.Tensor) -> torch.Tensor:
    """``eps`` itself, made to pass a channels_last gradient back into the network.

    The gradient of ``(eps - noise).pow(2).mean()`` leaves autograd in NCHW layout even when
    ``eps`` is channels_last (mean's backward expands a scalar, and the product with it comes out
    contiguous), so the network's last convolution would start its backward in the other layout;
    on CPUs with bf16 units that sends convolution backward to slow kernels (docs/performance.md).
    """
    if eps.requires_grad and eps.dim() == 4 and eps.is_contiguous(memory_format=torch.channels_last):
        eps.register_hook(lambda grad: grad.contiguous(memory_format=torch.channels_last))
    return eps


class ClassPool:
    """Real images grouped by grade: where the ``cross-image`` mode takes images of grades p, q, r.

    The trainer builds one from the whole in-memory training set, so any grade can be drawn in any
    step; without a pool the loss builds one from the current batch (then only grades present in
    the batch can form triplets).

    Args:
        images: uint8 or model-range float images [N, 3, H, W] on the training device.
        labels: grades [N] (any device).
        num_classes: C.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        labels = labels.detach().to("cpu", torch.long)
        self.images = images
        self.order = torch.argsort(labels, stable=True)  # pool indices grouped by grade
        self.counts = torch.bincount(labels, minlength=num_classes)[:num_classes]  # [C]
        self.starts = torch.cumsum(self.counts, 0) - self.counts  # [C]

    def draw(self, classes: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """One uniformly chosen image of each grade in ``classes`` [K] -> float [K, 3, H, W] in [-1, 1]."""
        u = torch.rand(classes.shape, generator=rng, device=rng.device).cpu()
        offset = (u * self.counts[classes]).long().clamp(max=self.counts[classes] - 1)
        index = self.order[self.starts[classes] + offset].to(self.images.device)
        chosen = self.images[index]
        return to_model_range(chosen) if chosen.dtype == torch.uint8 else chosen


class DiffusionLoss:
    """``L = L_DM + gamma * mean_i(lambda_{t_i} * L_ord,i)`` as one callable (docs/method.md, section 2).

    L_DM is the MSE of the network's output against ``cfg.prediction``'s target (eps: the noise; v:
    sqrt(abar) noise - sqrt(1 - abar) x0), per sample times the min-SNR weight when ``cfg.snr_gamma``
    is set (:func:`odmaug.diffusion.parameterization.min_snr_weight`), then averaged; L_ord compares
    the eps estimates that the outputs imply (:func:`~odmaug.diffusion.parameterization.to_eps`), so
    gamma means the same under both parameterizations.

    Args:
        cfg: the recipe's ``diffusion`` section (``p_uncond``, ``prediction``, ``snr_gamma``, ``ordinal``).
        num_classes: C; label ``C`` is the null class of classifier-free guidance.
    """

    def __init__(self, cfg: DiffusionConfig, num_classes: int) -> None:
        self.cfg = cfg
        self.ord = cfg.ordinal
        self.num_classes = num_classes
        self.null_label = num_classes
        self.combos = torch.tensor(list(itertools.combinations(range(num_classes), 3)), dtype=torch.long).view(-1, 3)
        self.active = self.ord.gamma > 0 and num_classes >= 3
        if self.ord.gamma > 0 and num_classes < 3:
            warn(f"ordinal loss needs at least 3 grades (have {num_classes}): the ordinal term is zero, training is plain DM")

    @property
    def evaluations_per_ordinal_sample(self) -> int:
        """Extra network evaluations per sample that gets the ordinal term (3, or 2 with include-true)."""
        return 2 if self.ord.triplets == "include-true" else 3

    def _draw_triplets(
        self, labels: torch.Tensor, present: torch.Tensor, rng: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Triplets [B, 3] (sorted grades) and, for include-true, the position of the true grade [B].

        ``present`` [C] marks grades that may appear (all, except in cross-image mode where the
        pool must hold an image of each). Samples with no valid triplet get position -1.
        """
        valid = present[self.combos].all(dim=1)  # [M]
        if self.ord.triplets == "random":
            choices = self.combos[valid]
            if len(choices) == 0:
                return self.combos[:0], torch.zeros(0, dtype=torch.long)
            pick = torch.randint(len(choices), labels.shape, generator=rng, device=rng.device).cpu()
            return choices[pick], torch.full(labels.shape, -1, dtype=torch.long)
        contains = (self.combos[None, :, :] == labels[:, None, None]).any(dim=2) & valid[None]  # [B, M]
        has_any = contains.any(dim=1)
        weights = contains.float()
        weights[~has_any] = 1.0  # placeholder row, masked out below
        pick = torch.multinomial(weights, 1, generator=rng).squeeze(1).cpu()
        triplets = self.combos[pick]
        position = (triplets == labels[:, None]).long().argmax(dim=1)
        position[~has_any] = -1
        return triplets, position

    def __call__(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        labels: torch.Tensor,
        schedule: NoiseSchedule,
        rng: torch.Generator,
        pool: Optional[ClassPool] = None,
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            model: the network ``model(x, t, labels)``, predicting ``cfg.prediction``.
            x0: clean images in [-1, 1], [B, 3, H, W] on the training device.
            labels: grades [B] (CPU preferred).
            schedule: the noise schedule, built for ``cfg.prediction`` (else ``OdmaugError``).
            rng: source of every random draw (a CPU torch.Generator recommended).
            pool: images by grade for ``cross-image`` mode (default: the batch itself).

        Returns:
            dict with scalar tensors ``loss``, ``l_dm`` and ``l_ord`` (lambda_t-weighted mean over
            the samples that got the ordinal term, so ``loss = l_dm + gamma * l_ord``) and the int
            ``n_ord`` (how many samples got the ordinal term).
        """
        if schedule.prediction != self.cfg.prediction:
            raise OdmaugError(f"the loss trains {self.cfg.prediction}-prediction but the schedule was built for "
                              f"{schedule.prediction}-prediction (use NoiseSchedule.from_config on the same section)")
        labels_cpu = labels.detach().to("cpu", torch.long)
        draws = self._draw_dm(x0, labels_cpu, schedule, rng)  # first: identical for DM and ODM runs
        xt = schedule.q_sample(x0, draws.t, draws.noise)  # [B, 3, H, W]
        if not self.active:
            return self._dm_only(model, x0, xt, draws, schedule)
        if self.ord.mode == "cross-image" and pool is None:
            pool = ClassPool(x0, labels_cpu, self.num_classes)
        chosen, trip, pos = self._choose_ordinal(labels_cpu, draws.dropped, pool, rng)
        if len(chosen) == 0:
            return self._dm_only(model, x0, xt, draws, schedule)
        extra = self._ordinal_batch(xt, draws, chosen, trip, pos, schedule, pool, rng)
        # ONE forward call for the DM batch and every ordinal evaluation.
        x_all, t_all = torch.cat([xt, extra.xt]), torch.cat([draws.t, extra.t])
        out_all = channels_last_grad(model(x_all, t_all, torch.cat([draws.cond, extra.labels]).to(x0.device))).float()
        batch = x0.shape[0]
        l_dm = self._dm_term(out_all[:batch], x0, draws, schedule)
        # the ordinal term compares eps estimates: each output converted at its own x_t and t
        eps_all = to_eps(out_all, x_all, *schedule.alpha_sigma(t_all, x_all.ndim), self.cfg.prediction)
        e_p, e_q, e_r = self._ordered_estimates(eps_all[:batch], eps_all[batch:], extra.chosen, pos)
        term = ordinal_term(e_p, e_q, e_r, trip, self.ord.distance, self.ord.spacing)  # [K]
        l_ord = (schedule.lambda_t(draws.t[extra.chosen]) * term).mean()
        return {"loss": l_dm + self.ord.gamma * l_ord, "l_dm": l_dm, "l_ord": l_ord, "n_ord": len(chosen)}

    def _draw_dm(self, x0: torch.Tensor, labels: torch.Tensor, schedule: NoiseSchedule,
                 rng: torch.Generator) -> "_DMDraws":
        """The DM term's draws, in this order: timesteps, noise, label dropout (``labels`` on the CPU)."""
        gdev, batch = rng.device, x0.shape[0]
        t_cpu = torch.randint(schedule.timesteps, (batch,), generator=rng, device=gdev).cpu()
        noise = torch.randn(x0.shape, generator=rng, device=gdev).to(x0.device)
        dropped = (torch.rand(batch, generator=rng, device=gdev) < self.cfg.p_uncond).cpu()
        cond = torch.where(dropped, torch.full_like(labels, self.null_label), labels)
        return _DMDraws(t_cpu.to(x0.device), noise, dropped, cond)

    def _dm_only(self, model: nn.Module, x0: torch.Tensor, xt: torch.Tensor, draws: "_DMDraws",
                 schedule: NoiseSchedule) -> dict[str, torch.Tensor]:
        """The plain DM loss, when no sample gets the ordinal term."""
        output = channels_last_grad(model(xt, draws.t, draws.cond.to(xt.device))).float()
        l_dm = self._dm_term(output, x0, draws, schedule)
        return {"loss": l_dm, "l_dm": l_dm, "l_ord": torch.zeros((), device=xt.device), "n_ord": 0}

    def _dm_term(self, output: torch.Tensor, x0: torch.Tensor, draws: "_DMDraws",
                 schedule: NoiseSchedule) -> torch.Tensor:
        """L_DM of the DM batch's outputs [B, C, H, W]: the mean squared error against the target of
        ``cfg.prediction``; with ``cfg.snr_gamma`` each sample's mean error times its min-SNR weight,
        then the batch mean (diffusers' train_text_to_image.py ``--snr_gamma`` weighting)."""
        prediction, snr_gamma = self.cfg.prediction, self.cfg.snr_gamma
        target = training_target(x0, draws.noise, *schedule.alpha_sigma(draws.t, x0.ndim), prediction)
        error = (output - target).pow(2)
        if snr_gamma is None:
            return error.mean()
        weights = min_snr_weight(schedule.gather("alphas_cumprod", draws.t, 1), snr_gamma, prediction)  # [B]
        return (error.mean(dim=tuple(range(1, error.ndim))) * weights).mean()

    def _choose_ordinal(self, labels: torch.Tensor, dropped: torch.Tensor, pool: Optional[ClassPool],
                        rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which samples get the ordinal term: indices [K], their triplets [K, 3] and the position of
        the true grade in each [K] (include-true; else -1).

        The ordinal subset is the first ceil(fraction * B) samples whose label was kept and which
        have a valid triplet (the batch order is already random).
        """
        batch = labels.shape[0]
        present = pool.counts > 0 if self.ord.mode == "cross-image" else torch.ones(self.num_classes, dtype=torch.bool)
        triplets, position = self._draw_triplets(labels, present, rng)
        eligible = ~dropped if len(triplets) else torch.zeros(batch, dtype=torch.bool)
        if self.ord.triplets == "include-true":
            eligible &= position >= 0
        chosen = torch.nonzero(eligible).squeeze(1)[: math.ceil(self.ord.fraction * batch)]  # [K]
        return chosen, triplets[chosen], position[chosen]

    def _ordinal_batch(self, xt: torch.Tensor, draws: "_DMDraws", chosen: torch.Tensor, trip: torch.Tensor,
                       pos: torch.Tensor, schedule: NoiseSchedule, pool: Optional[ClassPool],
                       rng: torch.Generator) -> "_OrdinalBatch":
        """The extra network inputs of the ordinal term: the same x_t (or, cross-image, pool images
        of the other grades noised alike) under the triplet's labels, at the chosen samples' t."""
        k, device = len(chosen), xt.device
        if self.ord.triplets == "include-true":
            # the two grades of the triplet other than the true one, in increasing order
            others = trip[torch.ones_like(trip, dtype=torch.bool).scatter_(1, pos[:, None], False)].view(k, 2)
            labels = others.t().reshape(-1)  # [2K]: first the lower other grade, then the higher
        else:
            labels = trip.t().reshape(-1)  # [3K]: all p, then all q, then all r
        reps = len(labels) // k
        chosen_dev = chosen.to(device)
        t = draws.t[chosen_dev].repeat(reps)
        if self.ord.mode == "cross-image":
            x0 = pool.draw(labels, rng).to(device)  # [reps*K, 3, H, W]
            xt_extra = schedule.q_sample(x0, t, draws.noise[chosen_dev].repeat(reps, 1, 1, 1))
        else:
            xt_extra = xt[chosen_dev].repeat(reps, 1, 1, 1)
        return _OrdinalBatch(chosen_dev, labels, xt_extra, t)

    def _ordered_estimates(self, eps: torch.Tensor, extra_eps: torch.Tensor, chosen: torch.Tensor,
                           pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The estimates under grades p < q < r, each [K, ...], from the DM batch's ``eps`` [B, ...]
        and the extra evaluations [reps*K, ...] (include-true: the true grade's is the DM one)."""
        k = len(chosen)
        extra = extra_eps.view(-1, k, *eps.shape[1:])  # [reps, K, ...]
        if self.ord.triplets != "include-true":
            return extra[0], extra[1], extra[2]
        device = eps.device
        stacked = torch.stack([eps[chosen], extra[0], extra[1]], dim=1)  # [K, 3, ...]: true, lower, higher
        # slot of each triplet position in ``stacked``: true grade at pos, the others in order
        perm = torch.tensor([[0, 1, 2], [1, 0, 2], [1, 2, 0]])[pos].to(device)  # [K, 3]
        est = stacked[torch.arange(k, device=device)[:, None], perm]  # [K, 3, ...] in p, q, r order
        return est[:, 0], est[:, 1], est[:, 2]


class _DMDraws(NamedTuple):
    """The random draws of the DM term: timesteps ``t`` [B] and ``noise`` [B, 3, H, W] on the
    training device, and on the CPU which labels were ``dropped`` [B] and the labels fed ``cond`` [B]."""

    t: torch.Tensor
    noise: torch.Tensor
    dropped: torch.Tensor
    cond: torch.Tensor


class _OrdinalBatch(NamedTuple):
    """The ordinal term's extra evaluations: the ``chosen`` samples' indices [K] (device), and
    ``labels`` (CPU), inputs ``xt`` and timesteps ``t`` [reps*K] (reps = 3, or 2 with include-true)."""

    chosen: torch.Tensor
    labels: torch.Tensor
    xt: torch.Tensor
    t: torch.Tensor
