"""Small functions that write real GeoTIFFs for tests (through rasterio/GDAL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

REAL_RASTERS = Path(__file__).resolve().parent / "assets" / "real"


def textured(
    bands: int, height: int, width: int, seed: int = 0, dtype: str = "uint8"
) -> np.ndarray:
    """Smooth gradients plus noise: every pixel differs, so misplaced tiles show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    layers = []
    for band in range(bands):
        base = 0.5 + 0.35 * np.sin(xx / (17.0 + 5 * band)) * np.cos(yy / (23.0 + 3 * band))
        base += 0.15 * rng.standard_normal((height, width))
        layers.append(np.clip(base, 0, 1))
    data = np.stack(layers)
    if dtype == "uint8":
        return (data * 255).astype(np.uint8)
    if dtype == "uint16":
        return (data * 4000 + 100).astype(np.uint16)
    if dtype == "int16":
        return (data * 2000 - 500).astype(np.int16)
    return data.astype(dtype)


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = "EPSG:32633",
    transform: object | None = None,
    nodata: float | None = None,
    tiled: bool = True,
    block: int = 256,
    overviews: bool = False,
) -> Path:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF; defaults: UTM 33N, 0.5 m pixels."""
    count, height, width = data.shape
    profile: dict[str, object] = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": str(data.dtype),
        "crs": CRS.from_user_input(crs) if crs else None,
        "transform": transform or from_origin(500_000.0, 5_000_000.0, 0.5, 0.5),
        "nodata": nodata,
        "compress": "deflate",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if overviews:
            dst.build_overviews([2, 4, 8])
    return path
