"""GroupNorm (+ per-channel offset) + SiLU (+ dropout) as one op for the U-Net's CPU bf16 path.

Every ResBlock computes ``dropout(silu(group_norm(h + emb)))`` and every attention block
``group_norm(x)``. On CPUs with bf16 (AMX / AVX-512 BF16) torch's own kernels for these are slow on
channels_last bf16 tensors, while the convolutions are fast: the channels_last GroupNorm forward
keeps a per-(sample, group) loop over runs of C/G = 4..8 channels below 1024 positions per map
(``feature_map_threshold`` in aten/src/ATen/native/cpu/group_norm_kernel.cpp), its backward does
so at every size, and dropout draws one Bernoulli variate per element with the scalar mt19937
sampler. On a 2-core Xeon with AMX (studies/results/unet_fusion_amx.json, torch 2.14) GroupNorm
took 44% of a bf16 sampling step, and GroupNorm forward + backward and ``bernoulli_`` 43% of a
bf16 training step (convolutions: 28% and 30%).

:func:`norm_act` computes the same function with ops that stream over channels_last memory with C
innermost (per-channel sums, broadcast multiply-adds) and a hand-written backward; the offset is
folded into the affine map instead of a separate add, and the dropout mask comes from 16-bit
slices of 64-bit random words (four variates per draw). Everything else (fp32, NCHW, CUDA, code
under ``torch.compile``, which fuses these itself) runs torch's reference ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

FUSED = True
"""Use the fused path where it applies (studies/unet_fusion.py sets False to time the reference ops)."""

NATIVE_MIN_POSITIONS = 1024
"""From this many positions (H*W) per map on, torch's channels_last forward kernel vectorises over C
and beats the composite forward (its backward does not, so the fused backward is used at all sizes)."""

_MASK_LEVELS = 1 << 16  # a dropout variate is a uniform 16-bit integer: p is rounded to k / 65536


def norm_act(x: torch.Tensor, norm: nn.GroupNorm, act: bool = True, shift: torch.Tensor | None = None,
             dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """``dropout(silu(norm(x + shift[:, :, None, None])))`` for x [B, C, H, W] -> [B, C, H, W].

    Args:
        x: activations, any layout; the fused path needs bf16 channels_last on the CPU.
        norm: the GroupNorm whose groups, eps, weight [C] and bias [C] are used.
        act: apply SiLU (False: the normalised tensor itself, as before attention).
        shift: optional [B, C] offset added to x before the norm (the time/class embedding).
        dropout, training: drop probability and whether dropout is active (as ``nn.Dropout``).
    """
    fused = FUSED and x.device.type == "cpu" and not torch.compiler.is_compiling() and norm.affine
    mask = dropout_mask(x, dropout) if fused and training and dropout > 0 else None
    if not fused or x.dtype != torch.bfloat16 or x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        h = norm(x if shift is None else x + shift[:, :, None, None])
        h = F.silu(h) if act else h
        if mask is not None:
            return h * mask
        return F.dropout(h, dropout, training) if dropout > 0 and training else h
    return fused_norm_act(x, norm, act, shift, mask)


def fused_norm_act(x: torch.Tensor, norm: nn.GroupNorm, act: bool = True, shift: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The fused op itself for a 4-D x [B, C, H, W] of any float dtype and dense layout (y in x's layout).

    ``norm_act`` uses it for bf16 channels_last on the CPU; ``mask`` is a :func:`dropout_mask` or None.
    """
    args = (x, norm.weight, norm.bias, None if shift is None else shift.to(x.dtype), mask, norm.num_groups, norm.eps,
            act)
    if torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in args[:4]):
        return _GroupNormAct.apply(*args)
    return _forward(*args, inplace=True)[0]


def dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout multiplier: 0 with probability p', else 1 / (1 - p'), in ``like``'s dtype, shape and layout.

    p' = round(p * 65536) / 65536 (within 7.7e-6 of p). Each 64-bit word drawn from the default
    CPU generator gives four independent 16-bit variates: torch's ``bernoulli_`` draws one word per
    element and took ~8 ns per element on the AMX host. Like ``F.dropout``, the multiplier is held
    in ``like``'s dtype (in bf16, 1 / 0.9 is stored as 1.109).
    """
    k = min(round(p * _MASK_LEVELS), _MASK_LEVELS - 1)
    words = torch.randint(-(1 << 63), (1 << 63) - 1, (-(-like.numel() // 4),), dtype=torch.int64, device=like.device)
    variates = words.view(torch.int16)[: like.numel()]
    if like.is_contiguous() or like.is_contiguous(memory_format=torch.channels_last):
        variates = variates.as_strided(like.shape, like.stride())  # the mask in like's layout, one variate each
    else:
        variates = variates.view(like.shape)
    scale = torch.tensor(_MASK_LEVELS / (_MASK_LEVELS - k), dtype=like.dtype, device=like.device)
    return torch.mul(variates >= k - _MASK_LEVELS // 2, scale)


def _per_channel(v: torch.Tensor, groups: int, channels: int) -> torch.Tensor:
    """[B, G] -> [B, C]: each group's value repeated over its C/G channels."""
    return v.repeat_interleave(channels // groups, dim=1)


def _composite_stats(x: torch.Tensor, groups: int, eps: float, shift: torch.Tensor | None):
    """Centred input t = x - m (x's dtype), offset dc [B, C] and rstd [B, G] (fp32) of v = x + shift.

    m [B, C] is each group's mean of x rounded to x's dtype (only a centre: it needs no precision),
    so t is exact up to one rounding of a value of the size of the spread and sums over t do not
    cancel. v - mean(v) = t + dc per channel; the group variance is
    sum_c (sum t^2 + 2 dc sum t + n dc^2) / (n D) (n = H*W, D = C/G). The sums are taken in x's
    dtype (fp32 accumulation, one rounding of the result): asking for fp32 results makes torch
    copy x to fp32 first, 4x slower.
    """
    b, c, h, w = x.shape
    n, d = h * w, c // groups
    s1 = x.sum((2, 3)).float()  # [B, C]
    m = _per_channel((s1.view(b, groups, d).sum(-1) / (n * d)).to(x.dtype), groups, c)  # [B, C]
    t = x - m[:, :, None, None]
    st = t.sum((2, 3)).float()  # sum of t per channel
    s2 = (t * t).sum((2, 3)).float()
    v_centre = m.float() if shift is None else m.float() + shift.float()  # v = t + v_centre
    mean = (v_centre + st / n).view(b, groups, d).mean(-1)  # [B, G]
    dc = v_centre - _per_channel(mean, groups, c)
    var = (s2 + 2 * dc * st + n * dc * dc).view(b, groups, d).sum(-1) / (n * d)
    return t, dc, torch.rsqrt(var.clamp_min(0) + eps)


def _forward(x, weight, bias, shift, mask, groups, eps, act, inplace):
    """Output y and what the backward needs: (y, saved tensors).

    Small maps: composite statistics, z = t * (rstd w) + (dc rstd w + b) in one multiply-add.
    Large maps: torch's native kernel (fast there), the centre m kept for the backward.
    """
    b, c, h, w = x.shape
    if h * w >= NATIVE_MIN_POSITIONS:
        v = x if shift is None else x + shift[:, :, None, None]
        z, mean, rstd = torch.ops.aten.native_group_norm(v, weight, bias, b, c, h * w, groups, eps)
        m = mean.to(x.dtype)
        dc = _per_channel(m.float() - mean, groups, c)
        t_or_v, centre = v, _per_channel(m, groups, c)
    else:
        t_or_v, dc, rstd = _composite_stats(x, groups, eps, shift)
        centre = None
        s = _per_channel(rstd, groups, c) * weight  # [B, C]
        z = torch.addcmul((dc * s + bias).to(x.dtype)[:, :, None, None], t_or_v, s.to(x.dtype)[:, :, None, None])
    y = F.silu(z, inplace=inplace) if act else z
    if mask is not None:
        y = y.mul_(mask) if act else y * mask  # silu's output is ours to scale in place; z may be saved
    return y, (t_or_v, centre, z if act else None, dc, rstd, shift is not None)


class _GroupNormAct(torch.autograd.Function):
    """Autograd for :func:`_forward`: dx = a dz + beta t + gamma with per-(sample, channel) a, gamma.

    Standard GroupNorm backward (as aten's) written on the centred t: with g = dz * w,
    dx = rstd (g - mean(g) - xhat mean(g xhat)) over each group, where the per-channel sums
    S = sum dz and T = sum dz t over H*W give every group reduction. Buffers this op allocated
    (z, v = x + shift) are overwritten in the backward to save allocations (x itself may be saved
    by other ops and is not touched), so a second backward through the same graph is refused.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, shift, mask, groups, eps, act):
        y, (t_or_v, centre, z, dc, rstd, owned) = _forward(x, weight, bias, shift, mask, groups, eps, act, False)
        ctx.save_for_backward(t_or_v, centre, z, dc, rstd, weight, mask)
        ctx.groups, ctx.owned, ctx.spent = groups, owned, False
        ctx.shift_dtype = None if shift is None else shift.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        if ctx.spent:
            raise RuntimeError("the fused GroupNorm's buffers were used by a first backward: backward through it once")
        ctx.spent = True
        t, centre, z, dc, rstd, weight, mask = ctx.saved_tensors
        b, c, h, w = t.shape
        groups, count = ctx.groups, h * w * (c // ctx.groups)
        g = gy if mask is None else gy * mask
        dz = g if z is None else torch.ops.aten.silu_backward.grad_input(g, z, grad_input=z)  # z is dead after
        if centre is not None:  # large maps kept v = x + shift: centre it now
            t = t.sub_(centre[:, :, None, None]) if ctx.owned else t - centre[:, :, None, None]
        s_dz = dz.sum((2, 3)).float()  # [B, C]; sums in dz's dtype (see _composite_stats)
        r = _per_channel(rstd, groups, c)
        s_xhat = r * ((dz * t).sum((2, 3)).float() + dc * s_dz)  # sum over H*W of dz * xhat
        wf = weight.float()
        a_sum = _per_channel((wf * s_dz).view(b, groups, -1).sum(-1), groups, c)  # sum of g per group
        beta = -(r * r) * _per_channel((wf * s_xhat).view(b, groups, -1).sum(-1), groups, c) / count
        gamma = -r * a_sum / count + beta * dc
        dt = t.dtype
        dx = torch.addcmul(gamma.to(dt)[:, :, None, None], t, beta.to(dt)[:, :, None, None])
        dx.addcmul_(dz, (r * wf).to(dt)[:, :, None, None])
        dshift = dx.sum((2, 3)).to(ctx.shift_dtype) if ctx.needs_input_grad[3] else None
        dweight = s_xhat.sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        dbias = s_dz.sum(0).to(weight.dtype) if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, dshift, None, None, None, None


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps: [B] -> float32 [B, dim] (Transformer/DDPM style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb
