"""Defaults that the CLI shows in its help: kept free of rasterio so that ``--help`` is quick."""

from __future__ import annotations

__all__ = ["MAX_UPSAMPLING"]

MAX_UPSAMPLING = 4.0
"""Default limit on upsampling a scene to the model's ground resolution (``--max-upsampling``)."""
