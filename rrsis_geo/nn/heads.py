"""The mask head and the presence head.

Mask (paper: a matrix product between the decoded visual map and the language side): a learned
query attends over the decoded text tokens (under their mask) to give one sentence vector; the
stride-8 map is refined with the stride-4 level (one light FPN step); the logit of each pixel is
the scaled dot product of its feature with the sentence vector. Optionally (``coordinates``,
ours) the refinement also sees each pixel's place in the image, in [-1, 1] coordinates.
Presence (ours, for big scenes): the same sentence vector and the mask-weighted mean of pixel
features go through a small MLP to one logit per image: "is the referent in this tile at all?".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.errors import InputError

__all__ = ["MaskHead", "PresenceHead", "SentenceQuery", "coordinate_maps"]


def coordinate_maps(like: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` x and y of pixel centres in [-1, 1], for a ``(B, C, H, W)`` map."""
    batch, _, height, width = like.shape
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)
    return grid.unsqueeze(0).expand(batch, -1, -1, -1)


class SentenceQuery(nn.Module):
    """Attention pooling of text tokens by one learned query.

    Shapes:
        text ``(B, T, D)``, mask ``(B, T)`` -> ``(B, D)``.
    """

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        self.query = nn.Parameter(nn.init.normal_(torch.empty(1, 1, dim), std=0.02))
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sentence vector."""
        query = self.query.expand(text.shape[0], -1, -1)
        pooled, _ = self.attention(
            query, text, text, key_padding_mask=~mask.bool(), need_weights=False
        )
        return self.norm(pooled[:, 0])


class MaskHead(nn.Module):
    """Per-pixel logits from a stride-8 map, refined at stride 4.

    Args:
        dim: Width D.
        coordinates: Append the pixels' (x, y) in [-1, 1] to the refinement's input.
        width: Channels P of the refinement and the pixel features (None: D), a positive
            multiple of 8.

    Raises:
        InputError: ``width`` is not a positive multiple of 8.

    Shapes:
        decoded ``(B, D, H_8, W_8)``, fine ``(B, D, H_4, W_4)``, sentence ``(B, D)`` ->
        logits ``(B, H_4, W_4)`` and the pixel features ``(B, P, H_4, W_4)``.
    """

    def __init__(self, dim: int, coordinates: bool = False, width: int | None = None) -> None:
        super().__init__()
        if width is not None and (width <= 0 or width % 8):
            # GroupNorm splits the channels into 8 groups.
            raise InputError(f"head_width must be a positive multiple of 8, got {width}")
        width = dim if width is None else width
        self.coordinates = coordinates
        self.refine = nn.Sequential(
            nn.Conv2d(2 * dim + (2 if coordinates else 0), width, 1),
            nn.GroupNorm(8, width),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.GELU(),
        )
        self.sentence = nn.Linear(dim, width)
        self.bias = nn.Parameter(torch.zeros(1))
        self.width = width

    def forward(
        self, decoded: torch.Tensor, fine: torch.Tensor, sentence: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and pixel features at stride 4."""
        up = F.interpolate(decoded, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        inputs = [up, fine]
        if self.coordinates:
            inputs.append(coordinate_maps(fine))
        pixels = self.refine(torch.cat(inputs, dim=1))
        query = self.sentence(sentence)
        logits = torch.einsum("bd,bdhw->bhw", query, pixels) / self.width**0.5 + self.bias
        return logits, pixels


class PresenceHead(nn.Module):
    """One logit per image from the sentence and the mask-weighted pixel features.

    Args:
        dim: Width D of the sentence.
        pixel_dim: Channels P of the pixel features (None: D).

    Shapes:
        pixels ``(B, P, H, W)``, logits ``(B, H, W)``, sentence ``(B, D)`` -> ``(B,)``.
    """

    def __init__(self, dim: int, pixel_dim: int | None = None) -> None:
        super().__init__()
        inputs = (dim if pixel_dim is None else pixel_dim) + dim + 1
        self.mlp = nn.Sequential(nn.Linear(inputs, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(
        self, pixels: torch.Tensor, logits: torch.Tensor, sentence: torch.Tensor
    ) -> torch.Tensor:
        """Presence logits."""
        weights = logits.sigmoid().unsqueeze(1)
        pooled = (pixels * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp(min=1e-6)
        peak = logits.flatten(1).amax(dim=1, keepdim=True)
        return self.mlp(torch.cat([pooled, sentence, peak], dim=1))[:, 0]
