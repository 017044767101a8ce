"""MID: the mutual-interaction decoder, 3 cascaded bidirectional layers.

Paper facts: language-to-vision alignment feeding vision-to-language alignment, cascaded; the
result is added to the LGFA features and combined with the language side by a matrix product
to give the mask.

Our choices: each layer is (a) visual tokens cross-attending to the prompted text features,
then FFN; (b) text tokens cross-attending to the updated visual tokens, then FFN; residuals and
LayerNorm after each step; text padding is masked in (a), and padded text positions are simply
carried along in (b) (nothing downstream reads them: the heads pool text under its mask).

Two options, off in the paper configs: ``positions`` adds fixed 2D sine encodings of each visual
token's place in the image (in [0, 1] coordinates, so any input size) before the first layer,
for expressions such as "at the top left"; ``self_attention`` lets visual tokens attend to each
other at the start of each layer, so that objects can be compared ("the largest", "the second
from the left", "closest to the road").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.nn.capm import FeedForward

__all__ = ["MID", "MIDLayer", "sine_encode", "sine_positions"]


def sine_encode(points: torch.Tensor, dim: int) -> torch.Tensor:
    """``(..., dim)`` fixed encodings of ``(..., 2)`` points (x, y) in [0, 1], half per axis.

    Raises:
        ValueError: When ``dim`` is not a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"position encodings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    # 1 to 64 half-cycles across the image: coarse enough for "top left", fine enough to
    # tell neighbouring tokens apart.
    frequencies = torch.pi * 2.0 ** torch.linspace(0, 6, quarter, device=points.device)
    angles_x = points[..., 0:1].float() * frequencies
    angles_y = points[..., 1:2].float() * frequencies
    return torch.cat([angles_y.sin(), angles_y.cos(), angles_x.sin(), angles_x.cos()], dim=-1)


def cell_centres(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(H*W, 2)`` (x, y) centres of a grid's cells in [0, 1], row by row (a flattened map)."""
    rows = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    cols = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)
    return grid.reshape(height * width, 2)


def sine_positions(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """``(H*W, dim)`` :func:`sine_encode` of a grid's cell centres, row by row.

    Raises:
        ValueError: When ``dim`` is not a multiple of 4.
    """
    return sine_encode(cell_centres(height, width, device), dim)


class MIDLayer(nn.Module):
    """One bidirectional layer.

    Shapes:
        visual ``(B, N, D)``, text ``(B, T, D)``, mask ``(B, T)`` -> same shapes.
    """

    def __init__(
        self, dim: int, num_heads: int = 8, dropout: float = 0.0, self_attention: bool = False
    ) -> None:
        super().__init__()
        self.visual_self: nn.MultiheadAttention | None = None
        if self_attention:
            self.visual_self = nn.MultiheadAttention(
                dim, num_heads, dropout=dropout, batch_first=True
            )
            self.norm_self = nn.LayerNorm(dim)
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
        if self.visual_self is not None:
            attended, _ = self.visual_self(visual, visual, visual, need_weights=False)
            visual = self.norm_self(visual + attended)
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
        positions: Add 2D sine position encodings to the visual tokens.
        self_attention: Visual self-attention at the start of each layer.

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
        positions: bool = False,
        self_attention: bool = False,
    ) -> None:
        super().__init__()
        self.text_projection = nn.Linear(text_dim, dim)
        self.layers = nn.ModuleList(
            MIDLayer(dim, num_heads, dropout, self_attention) for _ in range(layers)
        )
        self.pool = pool
        self.positions = positions

    def forward(
        self, visual: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded visual map (same size as the input map) and text tokens."""
        size = visual.shape[-2:]
        source = F.avg_pool2d(visual, self.pool) if self.pool > 1 else visual
        batch, dim, height, width = source.shape
        tokens = source.flatten(2).transpose(1, 2)
        if self.positions:
            encoding = sine_positions(height, width, dim, tokens.device)
            tokens = tokens + encoding.to(tokens.dtype)
        words = self.text_projection(text)
        for layer in self.layers:
            tokens, words = layer(tokens, words, mask)
        decoded = tokens.transpose(1, 2).reshape(batch, dim, height, width)
        if self.pool > 1:
            decoded = F.interpolate(decoded, size=size, mode="bilinear", align_corners=False)
        return decoded, words
