"""The class-conditional U-Net of Ho et al. (2020) and the generator registry.

Contract of every registered generator: ``forward(x [B, C, H, W], t [B] long, labels [B] long)
-> eps or v [B, C, H, W]`` (``diffusion.prediction``; C = 1 or 3, ``data.channels``). Labels are grades ``0 .. C-1`` plus the null class ``C`` used by
classifier-free guidance; anything else raises (a conditional model must never ignore labels).

Performance notes (why the code looks the way it does): the network is written so that it runs in
``channels_last`` memory format and under bf16 autocast without layout conversions. Attention works
on the [B, H*W, C] view of a channels_last tensor (a free reshape) with ``Linear`` projections and
``F.scaled_dot_product_attention``; every GroupNorm (+ time/class offset, SiLU, dropout) goes through
:func:`odmaug.diffusion.layers.norm_act` (fused on the CPU in bf16, where torch's kernels are slow on
channels_last); there are no Python loops over samples and no host synchronisation in ``forward``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from odmaug.config import GeneratorConfig
from odmaug.diffusion.layers import norm_act, timestep_embedding
from odmaug.errors import OdmaugError
from odmaug.registry import Registry


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 32 (Ho et al.), but at least 4 channels per group.

    The time/class embedding is added as a per-channel offset right before a GroupNorm; with one
    channel per group the norm would subtract it entirely and the network would ignore labels.
    """
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time+class embedding added in between, plus a skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(norm_act(x, self.norm1))  # [B, cout, H, W]
        # emb [B, E] -> a [B, cout] offset added to h before norm2 (folded into the norm's affine map)
        h = norm_act(h, self.norm2, shift=self.emb(emb), dropout=self.dropout.p, training=self.dropout.training)
        return self.skip(x) + self.conv2(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise OdmaugError(f"generator.num_heads={num_heads} must divide the {channels} channels of an attention layer")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # [B, C, H, W] -> [B, H*W, C]: free for channels_last tensors (no copy, no layout change).
        tokens = norm_act(x, self.norm, act=False).permute(0, 2, 3, 1).reshape(b, h * w, c)
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, C/heads]
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))  # [B, HW, C]
        # back to [B, C, H, W] as a channels_last view
        return x + out.view(b, h, w, c).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (halves H and W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One block of a U-Net path: a ResBlock and an optional AttentionBlock."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, attention: bool, heads: int) -> None:
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, dropout)
        self.attn = AttentionBlock(cout, heads) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """Class-conditional DDPM U-Net (Ho et al. 2020) with a learned class embedding.

    Args:
        num_classes: number of grades C; the embedding has C + 1 rows, row C is the null class.
        image_size: input resolution (must be divisible by 2^(len(channel_mult) - 1)).
        base_channels, channel_mult, num_res_blocks, attention_resolutions, num_heads, dropout:
            as in :class:`odmaug.config.GeneratorConfig`.
        in_channels: image channels C, taken and returned (3 RGB, 1 grayscale).
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        num_heads: int = 1,
        dropout: float = 0.1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        levels = len(channel_mult)
        step = 2 ** (levels - 1)  # every level but the last halves H and W
        if image_size % step:
            near = " or ".join(f"{n} px" for n in (image_size // step * step, image_size // step * step + step) if n >= 8)
            raise OdmaugError(
                f"image size {image_size} is not divisible by 2^{levels - 1} = {step} (generator.channel_mult has "
                f"{levels} levels, each but the last halves the size): use {near}, or fewer levels"
            )
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_channels = in_channels
        self.base_channels = base_channels
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [base_channels]
        ch, res = base_channels, image_size
        for i, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(Level(ch, base_channels * mult, emb_dim, dropout, res in attention_resolutions, num_heads))
                ch = base_channels * mult
                skips.append(ch)
            if i < levels - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                res //= 2
        self.mid1 = Level(ch, ch, emb_dim, dropout, True, num_heads)
        self.mid2 = ResBlock(ch, ch, emb_dim, dropout)
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                cout = base_channels * mult
                self.up.append(Level(ch + skips.pop(), cout, emb_dim, dropout, res in attention_resolutions, num_heads))
                ch = cout
            if i > 0:
                self.up.append(Upsample(ch))
                res *= 2
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out_conv = nn.Conv2d(ch, in_channels, 3, padding=1)
        # Zero-initialised output (Ho et al.): the untrained network predicts eps = 0, a stable start.
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Raise on missing or out-of-range labels and on wrong input shapes.

        Labels on the CPU are checked exactly (one tiny reduction) with a clear message; on
        accelerators the check is an asynchronous device assert so that it costs no host sync
        (callers such as :func:`odmaug.diffusion.sampling.generate` validate labels on the host).
        """
        if labels is None:
            raise OdmaugError("this generator is class-conditional: labels are required (use the null class for none)")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise OdmaugError(f"generator input must be [B, {self.in_channels}, H, W], got {list(x.shape)}")
        if labels.shape != (x.shape[0],) or t.shape != (x.shape[0],):
            raise OdmaugError(
                f"labels and t must be [B] with B={x.shape[0]}, got labels {list(labels.shape)} and t {list(t.shape)}"
            )
        if labels.dtype not in (torch.int64, torch.int32):
            raise OdmaugError(f"labels must be integer grades, got {labels.dtype}")
        if torch.compiler.is_compiling() or not labels.numel():
            return
        if labels.device.type == "cpu":
            if int(labels.min()) < 0 or int(labels.max()) > self.num_classes:
                raise OdmaugError(
                    f"labels must be grades 0..{self.num_classes - 1} or {self.num_classes} (null class); "
                    f"got values in {int(labels.min())}..{int(labels.max())}"
                )
        else:
            # On accelerators a host-side check would synchronise every forward; assert on device.
            torch._assert_async(((labels >= 0) & (labels <= self.num_classes)).all(), "labels out of range")

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps estimate [B, C, H, W] for noisy images ``x`` at timesteps ``t`` with grades ``labels``."""
        self.check_inputs(x, t, labels)
        dtype = self.stem.weight.dtype  # float32, or bfloat16 when the weights themselves are bf16
        emb = self.time_mlp(timestep_embedding(t, self.base_channels).to(dtype)) + self.class_emb(labels)  # [B, E]
        h = self.stem(x.to(dtype))
        hs = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, Level) else block(h)
            hs.append(h)
        h = self.mid2(self.mid1(h, emb), emb)
        for block in self.up:
            h = block(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(block, Level) else block(h)
        return self.out_conv(norm_act(h, self.out_norm))


GeneratorFactory = Callable[[GeneratorConfig, int, int, int], nn.Module]  # (cfg, grades, size, channels)
GENERATORS: Registry[GeneratorFactory] = Registry("generator")
"""Generator networks by name (``generator.name``): ``factory(cfg, num_classes, image_size, channels) -> nn.Module``."""


def register_generator(name: str, summary: str = "") -> Callable[[GeneratorFactory], GeneratorFactory]:
    """Decorator adding a factory ``(cfg, num_classes, image_size, channels) -> nn.Module`` to :data:`GENERATORS`."""
    return GENERATORS.register(name, summary)


@register_generator("unet", "the class-conditional U-Net of Ho et al. 2020 (generator.* sizes)")
def _unet(cfg: GeneratorConfig, num_classes: int, image_size: int, channels: int = 3) -> nn.Module:
    return UNet(num_classes, image_size, base_channels=cfg.base_channels, channel_mult=tuple(cfg.channel_mult),
                num_res_blocks=cfg.num_res_blocks, attention_resolutions=tuple(cfg.attention_resolutions),
                num_heads=cfg.num_heads, dropout=cfg.dropout, in_channels=channels)


def build_generator(cfg: GeneratorConfig, num_classes: int, image_size: int, channels: int = 3) -> nn.Module:
    """The generator network named by ``cfg.name`` (see :data:`GENERATORS`) for images of
    ``channels`` (1 or 3, ``data.channels``), checked to run on [1, channels, S, S] inputs with
    S = ``image_size`` by one forward pass (see :mod:`odmaug.probe`).

    Raises:
        OdmaugError: unknown name, or settings that cannot run at ``image_size`` (the U-Net names
            its rule; any network that fails its forward pass names the smallest larger size that works).
    """
    from odmaug.probe import rebuilt_runs_at, require_runs

    factory = GENERATORS.get(cfg.name)
    model = factory(cfg, num_classes, image_size, channels)
    probe = lambda size: _probe_inputs(size, channels)  # noqa: E731
    require_runs(("generator", cfg.model_dump_json(), num_classes, image_size, channels), model, image_size,
                 f"generator '{cfg.name}'", "data.image_size", probe,
                 rebuilt_runs_at(lambda size: factory(cfg, num_classes, size, channels), probe))
    return model


def unreached_attention(cfg: GeneratorConfig, image_size: int) -> Optional[str]:
    """A warning when ``generator.attention_resolutions`` lists sizes the U-Net never works at.

    The U-Net places attention at level i when its feature maps are image_size / 2^i px wide; a
    listed size that is none of these silently gets no attention (only the middle block keeps one).
    """
    levels = [image_size >> i for i in range(len(cfg.channel_mult))]
    missing = [r for r in cfg.attention_resolutions if r not in levels]
    if cfg.name != "unet" or not missing:
        return None
    return (f"generator.attention_resolutions {missing} never occur at {image_size} px (the U-Net's levels work at "
            f"{levels} px), so no attention layer is placed there")


def _probe_inputs(size: int, channels: int = 3) -> list[torch.Tensor]:
    """x [1, C, S, S], t [1] and labels [1] (grade 0) for one probing forward pass."""
    return [torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)]
