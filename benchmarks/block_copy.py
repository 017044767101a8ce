"""The I/O floor: copy a raster block by block with rasterio, keeping its profile.

Every block window of the source is read and written to a new tiled GeoTIFF with the same
profile (size, bands, type, CRS, transform, blocks, compression). ``segment_scale.py`` times this
as a separate process next to ``rrsis segment`` on the same scene.

    python benchmarks/block_copy.py SRC.tif DST.tif
"""

from __future__ import annotations

import argparse
from pathlib import Path

import rasterio


def block_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` one block window at a time."""
    with rasterio.open(source) as src:
        profile = src.profile
        with rasterio.open(target, "w", **profile) as dst:
            for _, window in src.block_windows(1):
                dst.write(src.read(window=window), window=window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    block_copy(args.source, args.target)


if __name__ == "__main__":
    main()
