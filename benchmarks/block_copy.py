"""The I/O floor: read a scene block row by block row and write what ``rrsis segment`` writes.

``rrsis segment SCENE SENTENCE -o OUT.tif`` reads every band of the scene and writes one band:
a uint8 probability work raster (``TiledRasterWriter``: 256 x 256 tiles, ZSTD level 1, nodata
255, scale 1/254), then copies it to a Cloud Optimized GeoTIFF (``write_cog``: DEFLATE level 6
with a predictor, 512 x 512 blocks, averaged overviews). This script does the same with no
model in between: every block row of the source is read (all bands), the band mean over 255
stands in for the probability, and it goes through the same writer, the same encoding, the same
COG copy and the same GDAL cache limit (``GDAL_CACHEMAX`` 64 MiB unless set) as ``segment``.
The target appears under its name only when complete (``atomic_output``), as ``segment``'s
outputs do. ``segment_scale.py`` times this as a separate process next to ``rrsis segment`` on
the same scene, so ``segment / copy`` is what the model, tiling and stitching add to the I/O.

    python benchmarks/block_copy.py SRC.tif DST.tif
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from rrsis_geo.geo.writers import (
    RasterEncoding,
    TiledRasterWriter,
    atomic_output,
    temporary_sibling,
    write_cog,
)
from rrsis_geo.inference.pipeline import GDAL_CACHE_BYTES

ENCODING = RasterEncoding("probability")
"""What ``rrsis segment -o OUT.tif`` writes by default (``--raster-kind probability``)."""


def gdal_config() -> dict[str, int]:
    """``segment``'s GDAL cache limit: 64 MiB, unless ``GDAL_CACHEMAX`` is set."""
    return {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_BYTES}


def block_copy(source: Path, target: Path, overwrite: bool = True) -> None:
    """Write the band mean of ``source`` to the COG ``target`` as ``rrsis segment`` writes."""
    with rasterio.Env(**gdal_config()), rasterio.open(source) as src:
        rows = src.block_shapes[0][0]
        nodata = src.nodata
        work = temporary_sibling(target, ".tif")
        try:
            writer = TiledRasterWriter(
                work, src.width, src.height, src.crs, src.transform, ENCODING
            )
            try:
                for top in range(0, src.height, rows):
                    window = Window(0, top, src.width, min(rows, src.height - top))
                    pixels = src.read(window=window)
                    mean = pixels.mean(axis=0, dtype=np.float32) / np.float32(255)
                    if nodata is not None:
                        mean[(pixels == nodata).all(axis=0)] = np.nan
                    writer.write_rows(top, mean)
            finally:
                writer.close()
            with atomic_output(target, overwrite) as temporary:
                write_cog(work, temporary, ENCODING)
        finally:
            for leftover in (work, work.with_name(work.name + ".aux.xml")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    block_copy(args.source, args.target)


if __name__ == "__main__":
    main()
