"""The fused GroupNorm+SiLU(+offset, dropout) of odmaug.diffusion.layers against torch's reference ops.

Reference: ``F.silu(F.group_norm(x + shift[:, :, None, None]))`` (what the U-Net ran before the fused
path). fp32 must agree to 1e-5 relative (L2), bf16 within 2e-2 of the fp32 reference, for outputs
and gradients, on channels_last and contiguous inputs, for small maps (composite statistics) and
maps of >= 1024 positions (torch's forward kernel, fused backward).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from odmaug.config import GeneratorConfig
from odmaug.diffusion import build_generator, layers

# state_dict of build_generator(SMALL, 3 grades, 16 px) at git HEAD before the fused path (name:shape):
# run folders load their safetensors by these names.
SMALL = GeneratorConfig(base_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8], num_heads=2)
HEAD_STATE = """
    time_mlp.0.weight:64x16 time_mlp.0.bias:64 time_mlp.2.weight:64x64 time_mlp.2.bias:64 class_emb.weight:4x64
    stem.weight:16x3x3x3 stem.bias:16 down.0.res.norm1.weight:16 down.0.res.norm1.bias:16
    down.0.res.conv1.weight:16x16x3x3 down.0.res.conv1.bias:16 down.0.res.emb.weight:16x64 down.0.res.emb.bias:16
    down.0.res.norm2.weight:16 down.0.res.norm2.bias:16 down.0.res.conv2.weight:16x16x3x3 down.0.res.conv2.bias:16
    down.1.conv.weight:16x16x3x3 down.1.conv.bias:16 down.2.res.norm1.weight:16 down.2.res.norm1.bias:16
    down.2.res.conv1.weight:32x16x3x3 down.2.res.conv1.bias:32 down.2.res.emb.weight:32x64 down.2.res.emb.bias:32
    down.2.res.norm2.weight:32 down.2.res.norm2.bias:32 down.2.res.conv2.weight:32x32x3x3 down.2.res.conv2.bias:32
    down.2.res.skip.weight:32x16x1x1 down.2.res.skip.bias:32 down.2.attn.norm.weight:32 down.2.attn.norm.bias:32
    down.2.attn.qkv.weight:96x32 down.2.attn.qkv.bias:96 down.2.attn.proj.weight:32x32 down.2.attn.proj.bias:32
    mid1.res.norm1.weight:32 mid1.res.norm1.bias:32 mid1.res.conv1.weight:32x32x3x3 mid1.res.conv1.bias:32
    mid1.res.emb.weight:32x64 mid1.res.emb.bias:32 mid1.res.norm2.weight:32 mid1.res.norm2.bias:32
    mid1.res.conv2.weight:32x32x3x3 mid1.res.conv2.bias:32 mid1.attn.norm.weight:32 mid1.attn.norm.bias:32
    mid1.attn.qkv.weight:96x32 mid1.attn.qkv.bias:96 mid1.attn.proj.weight:32x32 mid1.attn.proj.bias:32
    mid2.norm1.weight:32 mid2.norm1.bias:32 mid2.conv1.weight:32x32x3x3 mid2.conv1.bias:32 mid2.emb.weight:32x64
    mid2.emb.bias:32 mid2.norm2.weight:32 mid2.norm2.bias:32 mid2.conv2.weight:32x32x3x3 mid2.conv2.bias:32
    up.0.res.norm1.weight:64 up.0.res.norm1.bias:64 up.0.res.conv1.weight:32x64x3x3 up.0.res.conv1.bias:32
    up.0.res.emb.weight:32x64 up.0.res.emb.bias:32 up.0.res.norm2.weight:32 up.0.res.norm2.bias:32
    up.0.res.conv2.weight:32x32x3x3 up.0.res.conv2.bias:32 up.0.res.skip.weight:32x64x1x1 up.0.res.skip.bias:32
    up.0.attn.norm.weight:32 up.0.attn.norm.bias:32 up.0.attn.qkv.weight:96x32 up.0.attn.qkv.bias:96
    up.0.attn.proj.weight:32x32 up.0.attn.proj.bias:32 up.1.res.norm1.weight:48 up.1.res.norm1.bias:48
    up.1.res.conv1.weight:32x48x3x3 up.1.res.conv1.bias:32 up.1.res.emb.weight:32x64 up.1.res.emb.bias:32
    up.1.res.norm2.weight:32 up.1.res.norm2.bias:32 up.1.res.conv2.weight:32x32x3x3 up.1.res.conv2.bias:32
    up.1.res.skip.weight:32x48x1x1 up.1.res.skip.bias:32 up.1.attn.norm.weight:32 up.1.attn.norm.bias:32
    up.1.attn.qkv.weight:96x32 up.1.attn.qkv.bias:96 up.1.attn.proj.weight:32x32 up.1.attn.proj.bias:32
    up.2.conv.weight:32x32x3x3 up.2.conv.bias:32 up.3.res.norm1.weight:48 up.3.res.norm1.bias:48
    up.3.res.conv1.weight:16x48x3x3 up.3.res.conv1.bias:16 up.3.res.emb.weight:16x64 up.3.res.emb.bias:16
    up.3.res.norm2.weight:16 up.3.res.norm2.bias:16 up.3.res.conv2.weight:16x16x3x3 up.3.res.conv2.bias:16
    up.3.res.skip.weight:16x48x1x1 up.3.res.skip.bias:16 up.4.res.norm1.weight:32 up.4.res.norm1.bias:32
    up.4.res.conv1.weight:16x32x3x3 up.4.res.conv1.bias:16 up.4.res.emb.weight:16x64 up.4.res.emb.bias:16
    up.4.res.norm2.weight:16 up.4.res.norm2.bias:16 up.4.res.conv2.weight:16x16x3x3 up.4.res.conv2.bias:16
    up.4.res.skip.weight:16x32x1x1 up.4.res.skip.bias:16 out_norm.weight:16 out_norm.bias:16
    out_conv.weight:3x16x3x3 out_conv.bias:3
"""


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of a against b (in fp32)."""
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def make_case(channels_last: bool, size: int, groups: int = 4, channels: int = 16, batch: int = 3, seed: int = 0):
    """GroupNorm with a random affine map, x [B, C, S, S] (mean 3, spread 1), an offset [B, C], a gradient."""
    g = torch.Generator().manual_seed(seed)
    norm = nn.GroupNorm(groups, channels)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=g))
        norm.bias.copy_(torch.randn(channels, generator=g))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(batch, channels, size, size, generator=g) + 3).contiguous(memory_format=fmt)
    shift = torch.randn(batch, channels, generator=g)
    gy = torch.randn(batch, channels, size, size, generator=g).contiguous(memory_format=fmt)
    return norm, x, shift, gy


def run(fn, norm, x, shift, gy, act, dtype=None):
    """Output and grads (x, weight, bias[, shift]) of ``fn(x, norm, act, shift)``.

    dtype bf16: x and shift are cast to bf16 (as a bf16 conv and Linear hand them over) and the
    call runs under bf16 autocast; weight and bias stay fp32 as in the trainer.
    """
    norm.zero_grad()
    x = x.detach().to(dtype or x.dtype, copy=True).requires_grad_()
    shift = None if shift is None else shift.detach().to(dtype or shift.dtype, copy=True).requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
        y = fn(x, norm, act, shift)
    y.backward(gy.to(y.dtype))
    grads = [x.grad, norm.weight.grad.clone(), norm.bias.grad.clone()]
    return [y.detach()] + grads + ([] if shift is None else [shift.grad])


def reference(x, norm, act, shift):
    """What the U-Net ran before: F.group_norm (+ the offset added first) and F.silu."""
    h = F.group_norm(x if shift is None else x + shift[:, :, None, None], norm.num_groups, norm.weight,
                     norm.bias, norm.eps)
    return F.silu(h) if act else h


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("size", [8, 32])  # 64 positions: composite statistics; 1024: torch's forward kernel
@pytest.mark.parametrize("act,with_shift", [(True, True), (True, False), (False, False)])
def test_fused_matches_reference_fp32_and_bf16(channels_last, size, act, with_shift):
    norm, x, shift, gy = make_case(channels_last, size)
    shift = shift if with_shift else None
    want = run(reference, norm, x, shift, gy, act)
    got = run(layers.fused_norm_act, norm, x, shift, gy, act)
    assert got[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for a, b in zip(got, want):
        assert rel(a, b) <= 1e-5
    got_bf16 = run(layers.fused_norm_act, norm, x, shift, gy, act, torch.bfloat16)
    assert got_bf16[0].dtype == torch.bfloat16 and got_bf16[1].dtype == torch.bfloat16
    for a, b in zip(got_bf16, want):
        assert rel(a, b) <= 2e-2


def test_bf16_stays_accurate_when_the_mean_dwarfs_the_spread():
    """Groups with mean 200 and spread ~4 (in bf16): the statistics are centred before squaring.

    The reference gets the same bf16-rounded input in fp32, so only the op's own rounding counts.
    """
    norm, x, shift, gy = make_case(True, 8)
    x = (x * 4 + 200).bfloat16().float()
    want = run(reference, norm, x, shift, gy, True)
    for a, b in zip(run(layers.fused_norm_act, norm, x, shift, gy, True, torch.bfloat16), want):
        assert rel(a, b) <= 2e-2


def test_norm_act_takes_the_fused_path_for_bf16_channels_last_only(monkeypatch):
    norm, x, shift, _ = make_case(True, 8)
    calls = []
    monkeypatch.setattr(layers, "fused_norm_act", lambda *a, **k: calls.append(a[0].dtype) or reference(*a[:4]))
    with torch.autocast("cpu", torch.bfloat16):
        layers.norm_act(x.bfloat16(), norm, shift=shift.bfloat16())
    layers.norm_act(x, norm, shift=shift)  # fp32: torch's kernels
    layers.norm_act(x.bfloat16().contiguous(), norm, shift=shift)  # NCHW: torch's kernels
    monkeypatch.setattr(layers, "FUSED", False)
    layers.norm_act(x.bfloat16(), norm, shift=shift)
    assert calls == [torch.bfloat16]


def test_dropout_mask_rate_scale_layout_and_seed():
    x = torch.empty(4, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(3)
    mask = layers.dropout_mask(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(mask, layers.dropout_mask(x, 0.1))  # the default generator's seed decides it
    assert mask.is_contiguous(memory_format=torch.channels_last) and mask.dtype == torch.float32
    scale = 65536 / (65536 - round(0.1 * 65536))
    assert mask.unique().tolist() == [0.0, pytest.approx(scale)]
    dropped = float((mask == 0).float().mean())
    assert abs(dropped - 0.1) < 6 * (0.09 / mask.numel()) ** 0.5  # 6 standard errors
    assert abs(float(mask.mean()) - 1) < 0.003  # unbiased: E[mask] = 1
    assert layers.dropout_mask(x.bfloat16(), 0.1).dtype == torch.bfloat16


def test_dropout_gradient_goes_through_the_kept_elements_only():
    norm, x, shift, gy = make_case(True, 8)
    mask = layers.dropout_mask(x, 0.5)
    want = run(lambda *a: reference(*a) * mask, norm, x, shift, gy, True)
    got = run(lambda x, n, act, s: layers.fused_norm_act(x, n, act, s, mask), norm, x, shift, gy, True)
    for a, b in zip(got, want):
        assert rel(a, b) <= 1e-5


def test_second_backward_is_refused():
    norm, x, shift, gy = make_case(True, 8)
    y = layers.fused_norm_act(x.requires_grad_(), norm, True, shift.requires_grad_())
    y.backward(gy, retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through it once"):
        y.backward(gy)


def unet_pair(dropout: float = 0.0):
    torch.manual_seed(0)
    model = build_generator(SMALL.model_copy(update={"dropout": dropout}), 3, 16).to(memory_format=torch.channels_last)
    model.out_conv.reset_parameters()  # zero-initialised for training; non-zero so that errors are visible
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
    return model, x, torch.tensor([3, 100, 500, 999]), torch.tensor([0, 1, 2, 3])


def eps_and_grads(model, x, t, labels, fused: bool, bf16: bool):
    before, layers.FUSED = layers.FUSED, fused
    try:
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            eps = model(x, t, labels)
        eps.float().square().mean().backward()
        return eps.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters()])
    finally:
        layers.FUSED = before


def test_unet_fp32_is_unchanged_and_bf16_stays_within_2e2():
    model, x, t, labels = unet_pair()
    ref_eps, ref_grads = eps_and_grads(model, x, t, labels, fused=False, bf16=False)
    eps, grads = eps_and_grads(model, x, t, labels, fused=True, bf16=False)
    assert torch.equal(eps, ref_eps) and torch.equal(grads, ref_grads)  # fp32 runs torch's kernels as before
    eps, grads = eps_and_grads(model, x, t, labels, fused=True, bf16=True)
    assert rel(eps, ref_eps) <= 2e-2 and rel(grads, ref_grads) <= 2e-2
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        assert rel(model(x, t, labels), ref_eps) <= 2e-2


def test_unet_trains_with_fused_dropout():
    model, x, t, labels = unet_pair(dropout=0.3)
    eps, grads = eps_and_grads(model, x, t, labels, fused=True, bf16=True)
    assert torch.isfinite(eps).all() and torch.isfinite(grads).all() and grads.abs().sum() > 0


def test_state_dict_names_and_shapes_are_those_of_head():
    model, *_ = unet_pair()
    got = [f"{k}:{'x'.join(map(str, v.shape))}" for k, v in model.state_dict().items()]
    assert got == HEAD_STATE.split()
