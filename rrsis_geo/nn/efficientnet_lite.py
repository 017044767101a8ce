"""EfficientNet-Lite0's feature maps in plain torch, interchangeable with timm's.

The default model's image encoder is timm's ``efficientnet_lite0`` (``features_only``). timm
imports torchvision, which imports ``torch._dynamo`` and sympy: about a second before the
first tile of every ``rrsis segment``. This module builds the same network with the same
module and parameter names (its state dict loads into timm's and back) and the same operations
in the same order, so its outputs equal timm's bit for bit. :class:`VisionEncoder
<rrsis_geo.nn.encoders.VisionEncoder>` uses it for an ``efficientnet_lite0`` whose weights a
checkpoint provides (every ``rrsis segment`` of the default model), and timm otherwise.

Architecture (Tan & Le 2019, the Lite variant: ReLU6, no squeeze-excitation, fixed stem): a
3 x 3 stride-2 stem of 32 channels, then seven stages of mobile inverted bottlenecks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FEATURE_BLOCKS", "STAGES", "EfficientNetLite0Features"]

STAGES = (
    # (blocks, kernel, stride, expansion, channels)
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
"""EfficientNet-Lite0's stages, as timm's ``_gen_efficientnet_lite`` defines them."""

FEATURE_BLOCKS = (0, 1, 2, 4, 6)
"""The stage after which each of timm's feature levels (``out_indices`` 0-4) is taken."""

STEM_CHANNELS = 32


class BatchNormAct(nn.BatchNorm2d):
    """Batch norm, then ReLU6 when ``act`` (timm's ``BatchNormAct2d``; same state dict)."""

    def __init__(self, channels: int, act: bool) -> None:
        super().__init__(channels)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized (and activated) ``x``."""
        x = super().forward(x)
        return F.relu6(x) if self.act else x


def _conv(channels_in: int, channels_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    groups = channels_in if channels_in == channels_out and kernel > 1 else 1
    return nn.Conv2d(
        channels_in, channels_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False
    )


class DepthwiseSeparable(nn.Module):
    """Depthwise conv, BN-ReLU6, pointwise conv, BN (the first stage; timm's names)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _conv(channels_in, channels_in, kernel, stride)
        self.bn1 = BatchNormAct(channels_in, act=True)
        self.conv_pw = _conv(channels_in, channels_out, 1)
        self.bn2 = BatchNormAct(channels_out, act=False)
        self.skip = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output (with the identity added when shapes allow)."""
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.skip else out


class InvertedResidual(nn.Module):
    """Expand (1 x 1), depthwise, project (1 x 1), BN after each (timm's names)."""

    def __init__(
        self, channels_in: int, channels_out: int, kernel: int, stride: int, expansion: int
    ) -> None:
        super().__init__()
        hidden = channels_in * expansion
        self.conv_pw = _conv(channels_in, hidden, 1)
        self.bn1 = BatchNormAct(hidden, act=True)
        self.conv_dw = _conv(hidden, hidden, kernel, stride)
        self.bn2 = BatchNormAct(hidden, act=True)
        self.conv_pwl = _conv(hidden, channels_out, 1)
        self.bn3 = BatchNormAct(channels_out, act=False)
        self.skip = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output (with the identity added when shapes allow)."""
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.skip else out


class EfficientNetLite0Features(nn.Module):
    """EfficientNet-Lite0 returning feature maps, as timm's ``features_only`` model.

    ``timm.create_model("efficientnet_lite0", features_only=True, out_indices=...)``: the same
    state dict and the same outputs.

    Args:
        out_indices: Which of the five levels (strides 2, 4, 8, 16, 32) to return.
        in_channels: Input bands.

    Attributes:
        channels: Channels of each returned level.
        reductions: Stride of each returned level.
    """

    def __init__(self, out_indices: tuple[int, ...] = (1, 2, 3, 4), in_channels: int = 3) -> None:
        super().__init__()
        if not out_indices or not set(out_indices) <= set(range(len(FEATURE_BLOCKS))):
            raise ValueError(f"out_indices {out_indices}: levels are 0 to 4")
        self.conv_stem = nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2, padding=1, bias=False)
        self.bn1 = BatchNormAct(STEM_CHANNELS, act=True)
        stages: list[nn.Sequential] = []
        channels, stride_total = STEM_CHANNELS, 2
        level_channels, level_reductions = [], []
        for index, (count, kernel, stride, expansion, out) in enumerate(STAGES):
            blocks: list[nn.Module] = []
            for repeat in range(count):
                step = stride if repeat == 0 else 1
                if expansion == 1:
                    blocks.append(DepthwiseSeparable(channels, out, kernel, step))
                else:
                    blocks.append(InvertedResidual(channels, out, kernel, step, expansion))
                channels = out
            stages.append(nn.Sequential(*blocks))
            stride_total *= stride
            if index in FEATURE_BLOCKS:
                level_channels.append(channels)
                level_reductions.append(stride_total)
        self.blocks = nn.Sequential(*stages)
        self.out_indices = tuple(out_indices)
        self._taken = {FEATURE_BLOCKS[i] for i in self.out_indices}
        self.channels = [level_channels[i] for i in self.out_indices]
        self.reductions = [level_reductions[i] for i in self.out_indices]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, C, H, W)`` -> the chosen levels, finest first."""
        x = self.bn1(self.conv_stem(images))
        features = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self._taken:
                features.append(x)
        return features
