"""Run a ``torch.nn.Module`` through the pipeline's model protocol.

The pipeline hands numpy tiles to :meth:`TorchSegmentationModel.predict`; this adapter moves
them to the chosen device, runs the module under ``torch.inference_mode`` (and autocast on
GPU), and returns numpy probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rrsis_geo.errors import InputError
from rrsis_geo.inference.model import ModelMetadata, TilePrediction

__all__ = ["TorchSegmentationModel", "resolve_device"]


def resolve_device(device: str = "auto") -> torch.device:
    """Pick ``cuda`` when available, then ``mps``, else ``cpu``, for ``"auto"``.

    Raises:
        InputError: When an explicitly requested device is not available.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return chosen


class TorchSegmentationModel:
    """Adapter from an ``nn.Module`` to :class:`~rrsis_geo.inference.model.SegmentationModel`.

    Args:
        module: Called as ``module(tiles, encoded)`` with tiles ``(B, C, H, W)`` float32 on the
            device; returns probabilities ``(B, H, W)`` or ``(B, 1, H, W)``, or a tuple
            ``(probabilities, presence)``.
        metadata: What the model declares.
        device: Device name or ``"auto"``.
        encoder: Optional function turning the expression into what ``module`` takes; default:
            the expression string itself.
    """

    def __init__(
        self,
        module: nn.Module,
        metadata: ModelMetadata,
        device: str = "auto",
        encoder: Any = None,
    ) -> None:
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.metadata = metadata
        self.encoder = encoder
        self.expressions_encoded = 0

    def encode_expression(self, expression: str) -> Any:
        """Encode once per run (counted in ``expressions_encoded``)."""
        self.expressions_encoded += 1
        if self.encoder is None:
            return expression
        with torch.inference_mode():
            return self.encoder(expression)

    def predict(self, tiles: np.ndarray, encoded: Any) -> TilePrediction:
        """Run the module on a batch of normalized tiles."""
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, enabled=self.device.type == "cuda"),
        ):
            output = self.module(batch, encoded)
        presence = None
        if isinstance(output, tuple):
            output, presence = output
        if output.dim() == 4:
            output = output[:, 0]
        probabilities = output.float().cpu().numpy()
        presence_array = None if presence is None else presence.float().cpu().numpy()
        return TilePrediction(probabilities, presence_array)
