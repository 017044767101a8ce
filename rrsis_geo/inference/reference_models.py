"""Small exact models for tests, benchmarks and checking a pipeline end to end.

They ignore the expression's meaning and compute a known function of the pixels, so a tiled
result can be compared with the untiled one. Load them through the CLI like any model:
``--model python:rrsis_geo.inference.reference_models:brightness``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.inference.model import ModelMetadata
from rrsis_geo.inference.torch_model import TorchSegmentationModel

__all__ = ["BoxMean", "Brightness", "Constant", "box_mean", "brightness", "constant"]


class Brightness(nn.Module):
    """Per-pixel: ``sigmoid(gain * (mean over bands - 0.5))`` of inputs scaled to [0, 1]."""

    def __init__(self, gain: float = 8.0) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, tiles: torch.Tensor, encoded: Any = None) -> torch.Tensor:
        """Probabilities ``(B, H, W)``."""
        return torch.sigmoid(self.gain * (tiles.mean(dim=1) - 0.5))


class Constant(nn.Module):
    """Every pixel gets ``value``."""

    def __init__(self, value: float = 0.5) -> None:
        super().__init__()
        self.value = value

    def forward(self, tiles: torch.Tensor, encoded: Any = None) -> torch.Tensor:
        """Probabilities ``(B, H, W)``."""
        return torch.full_like(tiles[:, 0], self.value)


class BoxMean(nn.Module):
    """Needs context: the ``size x size`` box mean of :class:`Brightness` (zero padding)."""

    def __init__(self, size: int = 33) -> None:
        super().__init__()
        self.size = size
        self.brightness = Brightness()

    def forward(self, tiles: torch.Tensor, encoded: Any = None) -> torch.Tensor:
        """Probabilities ``(B, H, W)``."""
        # Mean of the band-mean first, then the box filter: zero-padded normalized inputs
        # (value 0) behave exactly like tile padding.
        mean = tiles.mean(dim=1, keepdim=True)
        boxed = F.avg_pool2d(
            mean, self.size, stride=1, padding=self.size // 2, count_include_pad=True
        )
        return torch.sigmoid(self.brightness.gain * (boxed[:, 0] - 0.5))


def brightness(device: str = "cpu") -> TorchSegmentationModel:
    """The per-pixel reference model."""
    return TorchSegmentationModel(Brightness(), ModelMetadata(name="reference/brightness"), device)


def constant(device: str = "cpu", value: float = 0.5) -> TorchSegmentationModel:
    """The constant reference model."""
    return TorchSegmentationModel(Constant(value), ModelMetadata(name="reference/constant"), device)


def box_mean(device: str = "cpu", size: int = 33) -> TorchSegmentationModel:
    """The context reference model; its metadata asks for a margin of its radius."""
    metadata = ModelMetadata(
        name=f"reference/box-mean-{size}", margin=size // 2, overlap=2 * (size // 2) + 32
    )
    return TorchSegmentationModel(BoxMean(size), metadata, device)
