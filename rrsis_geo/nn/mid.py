"""MID: the mutual-interaction decoder, 3 cascaded bidirectional layers.

Paper facts: language-to-vision alignment feeding vision-to-language alignment, cascaded; the
result is added to the LGFA features and combined with the language side by a matrix product
to give the mask.

Our choices: each layer is (a) visual tokens cross-attending to the prompted text features,
then FFN; (b) text tokens cross-attending to the updated visual tokens, then FFN; residuals and
LayerNorm after each step; text padding is masked in (a), and padded text positions are simply
carried along in (b) (nothing downstream reads them: the heads pool text under its mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.nn.capm import FeedForward

__all__ = ["MID", "MIDLayer"]


class MIDLayer(nn.Module):
    """One bidirectional layer.

    Shapes:
        visual ``(B, N, D)``, text ``(B, T, D)``, mask ``(B, T)`` -> same shapes.
    """

    def __init__(self, dim: int, num_heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.to_vision = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_v1 = nn.LayerNorm(dim)
        self.ffn_v = FeedForward(dim, dropout=dropout)
        self.norm_v2 = nn.LayerNorm(dim)
        self.to_text = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_t1 = nn.LayerNorm(dim)
        self.ffn_t = FeedForward(dim, dropout=dropout)
        self.norm_t2 = nn.LayerNorm(dim)

    def forward(
        self, visual: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Updated visual and text tokens."""
        attended, _ = self.to_vision(
            visual, text, text, key_padding_mask=~mask.bool(), need_weights=False
        )
        visual = self.norm_v1(visual + attended)
        visual = self.norm_v2(visual + self.ffn_v(visual))
        attended, _ = self.to_text(text, visual, visual, need_weights=False)
        text = self.norm_t1(text + attended)
        text = self.norm_t2(text + self.ffn_t(text))
        return visual, text


class MID(nn.Module):
    """Cascaded :class:`MIDLayer` over a visual map.

    Args:
        dim: Width D.
        text_dim: Width of the prompted text features (projected to D).
        layers: Number of layers (3 in the paper).
        num_heads: Attention heads.
        pool: Run on a map downsampled by this factor (2 turns stride 8 into 16 for large
            inputs) and upsample the result.
        dropout: Dropout.

    Shapes:
        visual ``(B, D, H, W)``, text ``(B, T, D_t)``, mask ``(B, T)`` ->
        visual ``(B, D, H, W)``, text ``(B, T, D)``.
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        layers: int = 3,
        num_heads: int = 8,
        pool: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.text_projection = nn.Linear(text_dim, dim)
        self.layers = nn.ModuleList(MIDLayer(dim, num_heads, dropout) for _ in range(layers))
        self.pool = pool

    def forward(
        self, visual: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded visual map (same size as the input map) and text tokens."""
        size = visual.shape[-2:]
        source = F.avg_pool2d(visual, self.pool) if self.pool > 1 else visual
        batch, dim, height, width = source.shape
        tokens = source.flatten(2).transpose(1, 2)
        words = self.text_projection(text)
        for layer in self.layers:
            tokens, words = layer(tokens, words, mask)
        decoded = tokens.transpose(1, 2).reshape(batch, dim, height, width)
        if self.pool > 1:
            decoded = F.interpolate(decoded, size=size, mode="bilinear", align_corners=False)
        return decoded, words
