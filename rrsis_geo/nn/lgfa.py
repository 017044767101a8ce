"""LGFA: language-guided feature aggregation, with attention deficit compensation.

Paper facts: per visual level, a language-to-vision interaction, then multi-scale attention
fusion, then attention deficit compensation.

Our choices: pixel-word cross-attention (queries = pixels, keys/values = plain word features,
padding masked) with one extra learnable *null* key/value. The softmax mass a pixel puts on the
null token is its attention deficit ``d`` in [0, 1]; the fused feature is the language-attended
feature plus ``d`` times the projected visual feature, so pixels that language does not explain
keep their visual evidence. Levels are then brought to stride 8 and weighted per pixel by a
softmax over levels whose scores come from each level's features matched against the pooled
sentence (language-conditioned scale attention).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LGFA", "LanguageGuidedAttention", "MultiScaleFusion", "masked_mean"]


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, T, D)`` over the tokens where ``mask`` ``(B, T)`` is 1."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class LanguageGuidedAttention(nn.Module):
    """Pixel-word cross-attention with a null token and deficit compensation.

    Shapes:
        visual ``(B, C, H, W)``, words ``(B, T, D_t)``, mask ``(B, T)`` ->
        fused ``(B, D, H, W)``, deficit ``(B, H, W)``.
    """

    def __init__(self, in_channels: int, text_dim: int, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.query = nn.Conv2d(in_channels, dim, 1)
        self.key = nn.Linear(text_dim, dim)
        self.value = nn.Linear(text_dim, dim)
        self.null_key = nn.Parameter(torch.zeros(1, 1, dim))
        self.null_value = nn.Parameter(torch.zeros(1, 1, dim))
        self.out = nn.Conv2d(dim, dim, 1)
        self.visual = nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.GroupNorm(8, dim))
        self.norm = nn.GroupNorm(8, dim)
        nn.init.trunc_normal_(self.null_key, std=0.02)

    def forward(
        self, visual: torch.Tensor, words: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused features and the attention deficit."""
        batch, _, height, width = visual.shape
        heads = self.num_heads
        queries = self.query(visual).flatten(2).transpose(1, 2)  # (B, HW, D)
        keys = torch.cat([self.null_key.expand(batch, -1, -1), self.key(words)], dim=1)
        values = torch.cat([self.null_value.expand(batch, -1, -1), self.value(words)], dim=1)
        dim = queries.shape[-1]
        head_dim = dim // heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, h, N, d)

        scores = split(queries) @ split(keys).transpose(-1, -2) / head_dim**0.5
        valid = torch.cat([mask.new_ones(batch, 1), mask], dim=1).bool()  # null always valid
        scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
        attention = scores.softmax(dim=-1)  # (B, h, HW, 1 + T)
        attended = (attention @ split(values)).transpose(1, 2).reshape(batch, -1, dim)
        attended = attended.transpose(1, 2).reshape(batch, dim, height, width)
        deficit = attention[..., 0].mean(dim=1).view(batch, 1, height, width)
        fused = self.norm(self.out(attended) + deficit * self.visual(visual))
        return fused, deficit[:, 0]


class MultiScaleFusion(nn.Module):
    """Language-conditioned per-pixel softmax over levels, at a common stride.

    Shapes:
        levels: L maps ``(B, D, H_i, W_i)``, sentence ``(B, D_t)`` -> ``(B, D, H_t, W_t)``
        where ``t`` is ``target_level``.
    """

    def __init__(self, levels: int, dim: int, text_dim: int, target_level: int = 1) -> None:
        super().__init__()
        self.target_level = target_level
        self.level_keys = nn.ModuleList(nn.Conv2d(dim, dim, 1) for _ in range(levels))
        self.sentence = nn.Linear(text_dim, dim)
        self.dim = dim

    def forward(self, levels: Sequence[torch.Tensor], sentence: torch.Tensor) -> torch.Tensor:
        """Fused map at the target level's resolution."""
        size = levels[self.target_level].shape[-2:]
        resized = [
            f
            if f.shape[-2:] == size
            else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in levels
        ]
        query = self.sentence(sentence)[:, :, None, None]  # (B, D, 1, 1)
        scores = torch.stack(
            [
                (key(f) * query).sum(dim=1) / self.dim**0.5
                for key, f in zip(self.level_keys, resized, strict=True)
            ],
            dim=1,
        )  # (B, L, H, W)
        weights = scores.softmax(dim=1)
        return torch.einsum("blhw,bldhw->bdhw", weights, torch.stack(resized, dim=1))


class LGFA(nn.Module):
    """One :class:`LanguageGuidedAttention` per level, then :class:`MultiScaleFusion`.

    Shapes:
        features: 4 maps ``(B, C_i, H_i, W_i)``, words ``(B, T, D_t)``, mask ``(B, T)`` ->
        fused ``(B, D, H_8, W_8)`` at stride 8, and the per-level fused maps.
    """

    def __init__(
        self, vision_channels: Sequence[int], text_dim: int, dim: int, num_heads: int = 8
    ) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            LanguageGuidedAttention(c, text_dim, dim, num_heads) for c in vision_channels
        )
        self.fusion = MultiScaleFusion(len(vision_channels), dim, text_dim, target_level=1)

    def forward(
        self, features: Sequence[torch.Tensor], words: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Fused stride-8 map and the per-level maps."""
        per_level = [
            level(f, words, mask)[0] for level, f in zip(self.levels, features, strict=True)
        ]
        return self.fusion(per_level, masked_mean(words, mask)), per_level
