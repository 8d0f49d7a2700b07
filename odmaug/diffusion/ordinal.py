"""The ordinal term's geometry: distances between eps estimates under three grades p < q < r
(docs/method.md, section 2). :class:`odmaug.diffusion.losses.DiffusionLoss` feeds it eps estimates
under any parameterization (:mod:`odmaug.diffusion.parameterization` converts v first)."""

from __future__ import annotations

import math

import torch

from odmaug.errors import OdmaugError


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
