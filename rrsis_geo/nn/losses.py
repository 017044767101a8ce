"""Losses: BCE + Dice on the mask, BCE on presence (weights configurable)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dice_loss", "segmentation_loss"]


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per image, averaged; ``logits`` and ``target`` are ``(B, H, W)``."""
    probabilities = logits.sigmoid().flatten(1)
    target = target.flatten(1).to(probabilities.dtype)
    intersection = (probabilities * target).sum(dim=1)
    total = probabilities.sum(dim=1) + target.sum(dim=1)
    return (1.0 - (2.0 * intersection + eps) / (total + eps)).mean()


def segmentation_loss(
    mask_logits: torch.Tensor,
    target: torch.Tensor,
    presence_logits: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    presence_weight: float = 0.5,
) -> torch.Tensor:
    """``bce_weight * BCE + dice_weight * Dice`` on the mask, plus BCE on presence.

    Args:
        mask_logits: ``(B, H, W)``.
        target: ``(B, H, W)`` in {0, 1}.
        presence_logits: ``(B,)``, optional.
        present: ``(B,)`` in {0, 1}: whether the referent is in the image (negatives have an
            empty target).
        bce_weight: Weight of the pixel BCE.
        dice_weight: Weight of the Dice term (on images whose referent is present).
        presence_weight: Weight of the presence BCE.
    """
    target = target.to(mask_logits.dtype)
    loss = bce_weight * F.binary_cross_entropy_with_logits(mask_logits, target)
    positives = present.bool() if present is not None else torch.ones_like(target[:, 0, 0]).bool()
    if positives.any():
        loss = loss + dice_weight * dice_loss(mask_logits[positives], target[positives])
    if presence_logits is not None and present is not None:
        loss = loss + presence_weight * F.binary_cross_entropy_with_logits(
            presence_logits, present.to(presence_logits.dtype)
        )
    return loss
