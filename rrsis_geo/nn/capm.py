"""CAPM: context-aware prompt modulation.

Paper facts: the 4 visual levels are pooled and concatenated into a visual context; learnable
prompt tokens interact with it (vision-to-language); the resulting prompts are appended to the
word tokens and the text encoder runs on ``[words; prompts]``.

Our choices: each level is pooled to small grids (1x1, 2x2, 4x4 by default) so that a coarse 2-D
layout survives ("left", "top"), projected to the text width, and tagged with a learned level and
grid-position embedding. K prompts cross-attend to that context (then FFN; residuals and
LayerNorm). :func:`append_prompts` places the prompts right after each expression's last real
token, so their position embeddings do not depend on how much padding follows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CAPM", "FeedForward", "append_prompts"]


class FeedForward(nn.Module):
    """The transformer feed-forward block: Linear, GELU, dropout, Linear."""

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = hidden or 4 * dim
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., dim) -> (..., dim)``."""
        return self.net(x)


class CAPM(nn.Module):
    """Context-aware prompts from a visual feature pyramid.

    Args:
        vision_channels: Channels of the 4 visual levels.
        text_dim: Width of the text encoder (the prompts live in its embedding space).
        num_prompts: K.
        pool_sizes: Grid sizes each level is pooled to.
        num_heads: Attention heads.
        dropout: Dropout.

    Shapes:
        features: 4 maps ``(B, C_i, H_i, W_i)`` -> prompts ``(B, K, text_dim)``.
    """

    def __init__(
        self,
        vision_channels: Sequence[int],
        text_dim: int,
        num_prompts: int = 4,
        pool_sizes: Sequence[int] = (1, 2, 4),
        num_heads: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        tokens_per_level = sum(s * s for s in self.pool_sizes)
        self.projections = nn.ModuleList(nn.Linear(c, text_dim) for c in vision_channels)
        self.position = nn.Parameter(torch.zeros(len(vision_channels), tokens_per_level, text_dim))
        self.prompts = nn.Parameter(nn.init.normal_(torch.empty(num_prompts, text_dim), std=0.02))
        self.attention = nn.MultiheadAttention(
            text_dim, num_heads, dropout=dropout, batch_first=True
        )
        self.norm1 = nn.LayerNorm(text_dim)
        self.ffn = FeedForward(text_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(text_dim)
        nn.init.trunc_normal_(self.position, std=0.02)

    def context(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Visual context tokens ``(B, levels * sum(s^2), text_dim)``."""
        tokens = []
        for level, (feature, projection) in enumerate(zip(features, self.projections, strict=True)):
            pooled = torch.cat(
                [F.adaptive_avg_pool2d(feature, s).flatten(2) for s in self.pool_sizes], dim=2
            )
            tokens.append(projection(pooled.transpose(1, 2)) + self.position[level])
        return torch.cat(tokens, dim=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Context-aware prompts ``(B, K, text_dim)``."""
        context = self.context(features)
        queries = self.prompts.unsqueeze(0).expand(context.shape[0], -1, -1)
        attended, _ = self.attention(queries, context, context, need_weights=False)
        prompts = self.norm1(queries + attended)
        return self.norm2(prompts + self.ffn(prompts))


def append_prompts(
    word_embeddings: torch.Tensor, attention_mask: torch.Tensor, prompts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert prompts right after each sequence's real tokens.

    Args:
        word_embeddings: ``(B, T, D)``.
        attention_mask: ``(B, T)``, 1 for real tokens (a prefix), 0 for padding.
        prompts: ``(B, K, D)``.

    Returns:
        ``(embeddings, mask)`` of length ``T + K``: real tokens, prompts, then padding.
    """
    batch, length, _ = word_embeddings.shape
    count = prompts.shape[1]
    lengths = attention_mask.sum(dim=1, keepdim=True)  # (B, 1)
    positions = torch.arange(length + count, device=word_embeddings.device).unsqueeze(0)
    # source index into cat([words, prompts]) for every output position
    is_word = positions < lengths
    is_prompt = (positions >= lengths) & (positions < lengths + count)
    source = torch.where(is_word, positions, positions - count)
    source = torch.where(is_prompt, length + positions - lengths, source)
    combined = torch.cat([word_embeddings, prompts], dim=1)
    gathered = torch.gather(combined, 1, source.unsqueeze(-1).expand(-1, -1, combined.shape[-1]))
    mask = (is_word | is_prompt).to(attention_mask.dtype)
    return gathered, mask.expand(batch, -1)
