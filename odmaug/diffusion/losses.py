"""The training loss: DM (eps-prediction MSE) plus the ordinal term of ODM (docs/method.md, section 2).

One mechanism for both models: :class:`DiffusionLoss` with ``gamma = 0`` *is* the DM loss (one
forward pass, no extra evaluations); with ``gamma > 0`` the extra label evaluations of the ordinal
term are concatenated with the DM batch and go through the network in ONE forward call.

Randomness: every draw (timesteps, noise, label dropout, triplets, pool images) comes from the
``generator`` argument, in a fixed order, so a step is reproducible from the generator state; the
DM draws come first, so DM and ODM runs with one seed see the same t, noise and dropout.
Pass ``labels`` on the CPU: the bookkeeping (who is dropped, which triplet) then needs no
device synchronisation.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
from torch import nn

from odmaug.config import DiffusionConfig
from odmaug.console import warn
from odmaug.data.images import to_model_range
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.errors import OdmaugError


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


def pair_distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-element distance between eps estimates ``a``, ``b`` [K, ...] -> [K].

    ``l2``: ||a - b|| / sqrt(n) (n elements per sample); ``squared``: ||a - b||^2 / n (eq. 6 of the
    paper read literally). Dividing by n makes gamma mean the same at every resolution. The norm's
    gradient at zero distance is defined as zero by torch, so identical estimates are safe.
    """
    diff = (a - b).flatten(1)  # [K, n]
    n = diff.shape[1]
    if kind == "l2":
        return torch.linalg.vector_norm(diff, dim=1) / math.sqrt(n)
    if kind == "squared":
        return diff.pow(2).sum(dim=1) / n
    raise OdmaugError(f"unknown ordinal distance '{kind}' (use l2 or squared)")


def ordinal_term(
    e_p: torch.Tensor,
    e_q: torch.Tensor,
    e_r: torch.Tensor,
    triplets: torch.Tensor,
    distance: str = "l2",
    spacing: str = "none",
) -> torch.Tensor:
    """Per-sample ordinal penalty [K] for estimates under labels p < q < r (``triplets`` [K, 3]).

    ``(d(p, r) - d(p, q) - d(q, r))^2``: zero exactly when, for ``l2``, the three estimates lie on
    a line in the order p, q, r (for ``squared``, when the angle at q is a right angle). With
    ``spacing="proportional"`` it adds ``(d(p, q) - d(p, r) (q - p) / (r - p))^2`` so that the
    distances also follow the grade differences.
    """
    d_pq = pair_distance(e_p, e_q, distance)
    d_qr = pair_distance(e_q, e_r, distance)
    d_pr = pair_distance(e_p, e_r, distance)
    term = (d_pr - d_pq - d_qr).pow(2)
    if spacing == "proportional":
        trip = triplets.to(device=term.device, dtype=term.dtype)
        ratio = (trip[:, 1] - trip[:, 0]) / (trip[:, 2] - trip[:, 0])  # (q - p) / (r - p)
        term = term + (d_pq - d_pr * ratio).pow(2)
    elif spacing != "none":
        raise OdmaugError(f"unknown ordinal spacing '{spacing}' (use none or proportional)")
    return term


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

    def draw(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One uniformly chosen image of each grade in ``classes`` [K] -> float [K, 3, H, W] in [-1, 1]."""
        u = torch.rand(classes.shape, generator=generator, device=generator.device).cpu()
        offset = (u * self.counts[classes]).long().clamp(max=self.counts[classes] - 1)
        index = self.order[self.starts[classes] + offset].to(self.images.device)
        chosen = self.images[index]
        return to_model_range(chosen) if chosen.dtype == torch.uint8 else chosen


class DiffusionLoss:
    """``L = L_DM + gamma * mean_i(lambda_{t_i} * L_ord,i)`` as one callable (docs/method.md, section 2).

    Args:
        cfg: the recipe's ``diffusion`` section (``p_uncond`` and ``ordinal`` options).
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
        self, labels: torch.Tensor, present: torch.Tensor, generator: torch.Generator
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
            pick = torch.randint(len(choices), labels.shape, generator=generator, device=generator.device).cpu()
            return choices[pick], torch.full(labels.shape, -1, dtype=torch.long)
        contains = (self.combos[None, :, :] == labels[:, None, None]).any(dim=2) & valid[None]  # [B, M]
        has_any = contains.any(dim=1)
        weights = contains.float()
        weights[~has_any] = 1.0  # placeholder row, masked out below
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(1).cpu()
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
        generator: torch.Generator,
        pool: Optional[ClassPool] = None,
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            model: eps network, ``model(x, t, labels)``.
            x0: clean images in [-1, 1], [B, 3, H, W] on the training device.
            labels: grades [B] (CPU preferred).
            schedule: the noise schedule.
            generator: source of every random draw (CPU generator recommended).
            pool: images by grade for ``cross-image`` mode (default: the batch itself).

        Returns:
            dict with scalar tensors ``loss``, ``l_dm`` and ``l_ord`` (lambda_t-weighted mean over
            the samples that got the ordinal term, so ``loss = l_dm + gamma * l_ord``) and the int
            ``n_ord`` (how many samples got the ordinal term).
        """
        device, batch = x0.device, x0.shape[0]
        gdev = generator.device
        labels_cpu = labels.detach().to("cpu", torch.long)
        # DM draws first (identical for DM and ODM runs of one seed).
        t_cpu = torch.randint(schedule.timesteps, (batch,), generator=generator, device=gdev).cpu()
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(device)
        dropped = (torch.rand(batch, generator=generator, device=gdev) < self.cfg.p_uncond).cpu()
        cond = torch.where(dropped, torch.full_like(labels_cpu, self.null_label), labels_cpu)
        t = t_cpu.to(device)
        xt = schedule.q_sample(x0, t, noise)  # [B, 3, H, W]
        zero = torch.zeros((), device=device)

        def dm_only() -> dict[str, torch.Tensor]:  # the plain DM loss, when no sample gets the ordinal term
            eps = channels_last_grad(model(xt, t, cond.to(device))).float()
            l_dm = (eps - noise).pow(2).mean()
            return {"loss": l_dm, "l_dm": l_dm, "l_ord": zero, "n_ord": 0}

        if not self.active:
            return dm_only()

        cross = self.ord.mode == "cross-image"
        if cross and pool is None:
            pool = ClassPool(x0, labels_cpu, self.num_classes)
        present = pool.counts > 0 if cross else torch.ones(self.num_classes, dtype=torch.bool)
        triplets, position = self._draw_triplets(labels_cpu, present, generator)
        # The ordinal subset: the first ceil(fraction * B) samples whose label was kept and which
        # have a valid triplet (the batch order is already random).
        eligible = ~dropped if len(triplets) else torch.zeros(batch, dtype=torch.bool)
        if self.ord.triplets == "include-true":
            eligible &= position >= 0
        chosen = torch.nonzero(eligible).squeeze(1)[: math.ceil(self.ord.fraction * batch)]  # [K]
        k = len(chosen)
        if k == 0:
            return dm_only()
        trip = triplets[chosen]  # [K, 3]
        if self.ord.triplets == "include-true":
            pos = position[chosen]
            # the two grades of the triplet other than the true one, in increasing order
            others = trip[torch.ones_like(trip, dtype=torch.bool).scatter_(1, pos[:, None], False)].view(k, 2)
            extra_labels = others.t().reshape(-1)  # [2K]: first the lower other grade, then the higher
        else:
            extra_labels = trip.t().reshape(-1)  # [3K]: all p, then all q, then all r
        reps = len(extra_labels) // k
        chosen_dev = chosen.to(device)
        t_extra = t[chosen_dev].repeat(reps)
        if cross:
            x0_extra = pool.draw(extra_labels, generator).to(device)  # [reps*K, 3, H, W]
            xt_extra = schedule.q_sample(x0_extra, t_extra, noise[chosen_dev].repeat(reps, 1, 1, 1))
        else:
            xt_extra = xt[chosen_dev].repeat(reps, 1, 1, 1)
        # ONE forward call for the DM batch and every ordinal evaluation.
        eps_all = channels_last_grad(model(
            torch.cat([xt, xt_extra]), torch.cat([t, t_extra]), torch.cat([cond, extra_labels]).to(device)
        )).float()
        eps = eps_all[:batch]
        l_dm = (eps - noise).pow(2).mean()
        extra = eps_all[batch:].view(reps, k, *eps.shape[1:])
        if self.ord.triplets == "include-true":
            stacked = torch.stack([eps[chosen_dev], extra[0], extra[1]], dim=1)  # [K, 3, ...]: true, lower, higher
            # slot of each triplet position in ``stacked``: true grade at pos, the others in order
            perm = torch.tensor([[0, 1, 2], [1, 0, 2], [1, 2, 0]])[pos].to(device)  # [K, 3]
            est = stacked[torch.arange(k, device=device)[:, None], perm]  # [K, 3, ...] in p, q, r order
            e_p, e_q, e_r = est[:, 0], est[:, 1], est[:, 2]
        else:
            e_p, e_q, e_r = extra[0], extra[1], extra[2]
        term = ordinal_term(e_p, e_q, e_r, trip, self.ord.distance, self.ord.spacing)  # [K]
        l_ord = (schedule.lambda_t(t[chosen_dev]) * term).mean()
        return {"loss": l_dm + self.ord.gamma * l_ord, "l_dm": l_dm, "l_ord": l_ord, "n_ord": k}
