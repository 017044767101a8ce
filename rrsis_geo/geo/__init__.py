"""Geospatial plumbing: reading, normalization, the tile grid, stitching, writers, polygons."""

from rrsis_geo.geo.normalization import NormalizationSpec, SceneStatistics, compute_scene_statistics
from rrsis_geo.geo.reading import StripReader, open_scene, parse_bands
from rrsis_geo.geo.stitching import StreamingStitcher
from rrsis_geo.geo.tiling import Tile, TileGrid
from rrsis_geo.geo.vectorize import VectorOptions, polygonize, write_polygons
from rrsis_geo.geo.writers import RasterEncoding, atomic_output, write_cog

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
