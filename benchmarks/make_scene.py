"""Generate a deterministic synthetic RGB scene for benchmarks, block by block.

The scene is an N x N x 3 uint8 GeoTIFF, tiled in 512 x 512 blocks, DEFLATE-compressed, in
EPSG:32633 at 0.5 m. Its texture resembles imagery: parcels with wavy borders and their own
colours, a smooth illumination gradient, sensor noise and scattered bright "buildings". Every
pixel is a function of its global position (noise is seeded per block), so the file is the same
on every run and blocks join without seams. Memory stays at a few blocks whatever N is.

    python benchmarks/make_scene.py OUT.tif --size 20000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

BLOCK = 512
SEED = 20240611


def _hash(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """A uint64 integer hash of two integer arrays (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        h = a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= b.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(salt + SEED)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def _unit(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic uniform values in [0, 1) for integer coordinates."""
    return (_hash(a, b, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def render_block(y0: int, x0: int, height: int, width: int) -> np.ndarray:
    """Pixels ``(3, height, width)`` of the scene window at (y0, x0)."""
    y = np.arange(y0, y0 + height, dtype=np.float64)[:, None]
    x = np.arange(x0, x0 + width, dtype=np.float64)[None, :]
    # Parcels ~300 x 220 px whose borders wander by a few tens of pixels.
    px = np.floor((x + 25 * np.sin(y / 97.0)) / 300.0).astype(np.int64)
    py = np.floor((y + 20 * np.sin(x / 131.0)) / 220.0).astype(np.int64)
    px, py = np.broadcast_arrays(px, py)
    tone = _unit(px, py, 1)
    green = _unit(px, py, 2)
    base = np.stack([70 + 60 * tone, 80 + 50 * tone + 40 * green, 60 + 40 * tone])
    # Rows within a parcel (ploughing), and a smooth scene-wide illumination gradient.
    base += 6.0 * np.sin((x + y * (tone - 0.5)) / (3 + 5 * green))[None]
    base *= (0.85 + 0.15 * np.sin(x / 2900.0) * np.cos(y / 3700.0))[None]
    # Bright rectangles: about one 128-px cell in eight holds a roof 10-50 px wide.
    cy, cx = np.floor_divide(y, 128).astype(np.int64), np.floor_divide(x, 128).astype(np.int64)
    cy, cx = np.broadcast_arrays(cy, cx)
    present = _unit(cy, cx, 3) < 0.125
    side_x, side_y = 10 + 40 * _unit(cy, cx, 4), 10 + 40 * _unit(cy, cx, 5)
    left, top = (128 - side_x) * _unit(cy, cx, 6), (128 - side_y) * _unit(cy, cx, 7)
    local_x, local_y = x - cx * 128, y - cy * 128
    roof = present & (local_x >= left) & (local_x < left + side_x)
    roof &= (local_y >= top) & (local_y < top + side_y)
    base[:, roof] = (200 + 40 * _unit(cy, cx, 8))[roof]
    rng = np.random.default_rng([SEED, y0, x0])
    base += rng.normal(0.0, 5.0, size=base.shape)
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


def is_current(path: Path, size: int) -> bool:
    """True when ``path`` is already a complete scene of this size."""
    if not path.exists():
        return False
    try:
        with rasterio.open(path) as dataset:
            return (dataset.width, dataset.height, dataset.count) == (size, size, 3)
    except rasterio.errors.RasterioIOError:
        return False


def make_scene(path: Path, size: int) -> Path:
    """Write the ``size`` x ``size`` scene to ``path`` unless it is already there."""
    if is_current(path, size):
        return path
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(400_000.0, 5_500_000.0, 0.5, 0.5),
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "DEFLATE",
        "photometric": "RGB",
        "interleave": "pixel",
        "bigtiff": "IF_SAFER",
    }
    partial = path.with_name(path.name + ".partial")
    with rasterio.open(partial, "w", **profile) as dataset:
        for y0 in range(0, size, BLOCK):
            for x0 in range(0, size, BLOCK):
                height, width = min(BLOCK, size - y0), min(BLOCK, size - x0)
                window = Window(x0, y0, width, height)
                dataset.write(render_block(y0, x0, height, width), window=window)
    os.replace(partial, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", type=int, default=20000, help="side in pixels")
    args = parser.parse_args()
    make_scene(args.output, args.size)
    print(args.output)


if __name__ == "__main__":
    main()
