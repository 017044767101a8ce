"""Geospatial plumbing: reading, normalization, the tile grid, stitching, writers, polygons.

The names below are imported on first use (PEP 562): importing one submodule, such as
``rrsis_geo.geo.formats`` for the CLI's option lists, must not import rasterio, shapely and
every other submodule with it (``rrsis --help`` would pay for all of them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rrsis_geo.geo.normalization import (
        NormalizationSpec,
        SceneStatistics,
        compute_scene_statistics,
    )
    from rrsis_geo.geo.reading import StripReader, open_scene, parse_bands
    from rrsis_geo.geo.stitching import StreamingStitcher
    from rrsis_geo.geo.tiling import Tile, TileGrid
    from rrsis_geo.geo.vectorize import VectorOptions, polygonize, write_polygons
    from rrsis_geo.geo.writers import RasterEncoding, atomic_output, write_cog

_SUBMODULES = {
    "NormalizationSpec": "normalization",
    "SceneStatistics": "normalization",
    "compute_scene_statistics": "normalization",
    "StripReader": "reading",
    "open_scene": "reading",
    "parse_bands": "reading",
    "StreamingStitcher": "stitching",
    "Tile": "tiling",
    "TileGrid": "tiling",
    "VectorOptions": "vectorize",
    "polygonize": "vectorize",
    "write_polygons": "vectorize",
    "RasterEncoding": "writers",
    "atomic_output": "writers",
    "write_cog": "writers",
}

__all__ = [
    "NormalizationSpec",
    "RasterEncoding",
    "SceneStatistics",
    "StreamingStitcher",
    "StripReader",
    "Tile",
    "TileGrid",
    "VectorOptions",
    "atomic_output",
    "compute_scene_statistics",
    "open_scene",
    "parse_bands",
    "polygonize",
    "write_cog",
    "write_polygons",
]


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULES.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value
