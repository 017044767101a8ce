"""Raster reading: open a scene, choose bands, resample on read, and read block-aligned strips.

Scenes are never read whole. :class:`StripReader` reads full-width strips of rows whose limits
are aligned to the file's blocks, keeps the rows that the next tile row shares with this one,
and so reads every block once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from rrsis_geo.errors import InputError, RrsisWarning

__all__ = [
    "Strip",
    "StripReader",
    "StripedRasterWarning",
    "default_bands",
    "has_nodata",
    "is_striped",
    "open_scene",
    "parse_bands",
    "pixel_size_m",
]

CHUNK_ROWS = 128
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


class StripedRasterWarning(RrsisWarning):
    """The input is stored in strips rather than tiles, so windowed reads are slower."""


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """Parse a ``--bands`` value such as ``"3,2,1"`` into 1-based band numbers.

    Raises:
        InputError: When the text is not a comma-separated list of positive integers.
    """
    if text is None or not text.strip():
        return None
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(
            f"--bands must be comma-separated band numbers such as 3,2,1, got {text!r}"
        ) from None
    if any(band < 1 for band in bands):
        raise InputError(f"band numbers start at 1, got {text!r}")
    return bands


def default_bands(count: int, wanted: int = 3) -> tuple[int, ...]:
    """The bands used when none are given: the first ``wanted``, or the only band repeated."""
    if count == 1:
        return (1,) * wanted
    if count < wanted:
        raise InputError(
            f"the raster has {count} bands and the model needs {wanted}: choose them with --bands"
        )
    return tuple(range(1, wanted + 1))


def check_bands(bands: Sequence[int], count: int, path: str) -> None:
    """Raise :class:`InputError` naming the first band that the raster does not have."""
    for band in bands:
        if band > count:
            plural = "band" if count == 1 else "bands"
            raise InputError(f"band {band} does not exist: {path} has {count} {plural}")


def is_striped(dataset: DatasetReader) -> bool:
    """True when the first band is stored in strips (blocks as wide as the raster)."""
    block_height, block_width = dataset.block_shapes[0]
    return block_width == dataset.width and block_height < dataset.height and dataset.width > 256


def has_nodata(dataset: DatasetReader, bands: Sequence[int]) -> bool:
    """True when any of ``bands`` has a nodata value, a mask band or an alpha band."""
    flags = dataset.mask_flag_enums
    return any(flags[band - 1] != [MaskFlags.all_valid] for band in bands)


def pixel_size_m(dataset: DatasetReader) -> tuple[float, float]:
    """Pixel width and height in metres (approximate at the scene centre for geographic CRSs)."""
    x_res, y_res = dataset.res
    crs = dataset.crs
    if crs is None:
        return float(x_res), float(y_res)
    if crs.is_geographic:
        latitude = (dataset.bounds.top + dataset.bounds.bottom) / 2.0
        metres_per_degree = 111_320.0
        return (
            x_res * metres_per_degree * math.cos(math.radians(latitude)),
            y_res * metres_per_degree,
        )
    factor = crs.linear_units_factor[1] if crs.is_projected else 1.0
    return float(x_res * factor), float(y_res * factor)


@dataclass
class OpenedScene:
    """A scene opened for reading, possibly through a resampling VRT.

    Attributes:
        path: The file on disk.
        dataset: What the pipeline reads: the file itself, or a WarpedVRT at the target
            ground resolution.
        bands: The 1-based bands fed to the model, in order.
        resampled: True when ``dataset`` is a resampling VRT.
    """

    path: Path
    dataset: DatasetReader
    bands: tuple[int, ...]
    resampled: bool
    _stack: ExitStack

    def close(self) -> None:
        """Close the VRT (if any) and the file."""
        self._stack.close()

    def __enter__(self) -> OpenedScene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_scene(
    path: str | Path,
    bands: Sequence[int] | None = None,
    channels: int = 3,
    gsd: float | None = None,
) -> OpenedScene:
    """Open a raster for segmentation.

    Args:
        path: Any raster GDAL reads.
        bands: 1-based bands to use; default :func:`default_bands`.
        channels: How many bands the model takes.
        gsd: Target ground resolution in metres per pixel; when given and different from the
            scene's, the scene is resampled on read (bilinear when upsampling, average when
            downsampling) on the same CRS and extent.

    Returns:
        The opened scene; close it (or use it as a context manager).

    Raises:
        InputError: Missing file, not a raster, unsupported type, wrong bands.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a raster: {path}")
    stack = ExitStack()
    try:
        dataset = stack.enter_context(rasterio.open(path))
    except RasterioIOError:
        raise InputError(f"not a raster that GDAL can read: {path}") from None
    try:
        dtype = dataset.dtypes[0]
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"unsupported pixel type {dtype} in {path}")
        chosen = tuple(bands) if bands else default_bands(dataset.count, channels)
        check_bands(chosen, dataset.count, str(path))
        if len(chosen) != channels:
            raise InputError(
                f"the model takes {channels} bands, --bands gives {len(chosen)}: {chosen}"
            )
        if is_striped(dataset):
            warnings.warn(
                f"{path.name} is stored in strips, not tiles: reading is slower "
                "(gdal_translate -co TILED=YES makes a tiled copy)",
                StripedRasterWarning,
                stacklevel=2,
            )
        resampled = False
        if gsd is not None and gsd > 0:
            current = pixel_size_m(dataset)
            scale_x, scale_y = gsd / current[0], gsd / current[1]
            if abs(scale_x - 1.0) > 1e-3 or abs(scale_y - 1.0) > 1e-3:
                dataset = stack.enter_context(_resampling_vrt(dataset, scale_x, scale_y))
                resampled = True
        return OpenedScene(path, dataset, chosen, resampled, stack)
    except BaseException:
        stack.close()
        raise


def _resampling_vrt(dataset: DatasetReader, scale_x: float, scale_y: float) -> WarpedVRT:
    width = max(1, round(dataset.width / scale_x))
    height = max(1, round(dataset.height / scale_y))
    transform = dataset.transform @ Affine.scale(dataset.width / width, dataset.height / height)
    downsampling = scale_x > 1.0 or scale_y > 1.0
    return WarpedVRT(
        dataset,
        crs=dataset.crs,
        transform=transform,
        width=width,
        height=height,
        resampling=Resampling.average if downsampling else Resampling.bilinear,
    )


@dataclass(frozen=True)
class Strip:
    """Rows ``[start, stop)`` of a raster, full width, held as block-row chunks (no copy).

    Attributes:
        start: First raster row.
        stop: Row after the last.
        chunks: ``(first_row, data (bands, rows, width), valid (rows, width) or None)`` covering
            at least ``[start, stop)``.
    """

    start: int
    stop: int
    chunks: tuple[tuple[int, np.ndarray, np.ndarray | None], ...]

    def _pieces(self, x0: int, x1: int, index: int) -> list[np.ndarray]:
        pieces = []
        for first, data, valid in self.chunks:
            top = max(self.start, first) - first
            bottom = min(self.stop, first + data.shape[1]) - first
            if bottom > top:
                source = data[:, top:bottom, x0:x1] if index == 0 else valid[top:bottom, x0:x1]  # type: ignore[index]
                pieces.append(source)
        return pieces

    def pixels(self, x0: int, x1: int) -> np.ndarray:
        """Columns ``[x0, x1)``: ``(bands, stop - start, x1 - x0)``, a new array."""
        return np.concatenate(self._pieces(x0, x1, 0), axis=1)

    def valid(self, x0: int, x1: int) -> np.ndarray | None:
        """Validity of columns ``[x0, x1)`` (None when masks were not read: all valid)."""
        if self.chunks[0][2] is None:
            return None
        return np.concatenate(self._pieces(x0, x1, 1), axis=0)


class StripReader:
    """Read full-width strips of rows in block-row chunks, each block once.

    Successive :meth:`read` calls must ask for row ranges whose starts do not decrease (tile rows
    top to bottom). Chunks shared with the previous request are kept, not read again; a strip
    already returned stays valid after later calls (chunks are never written into), so the next
    strip can be read in another thread while this one is used.

    Args:
        dataset: The raster (or VRT) to read.
        bands: 1-based bands, in the order wanted.
        read_masks: Whether to read validity masks (skip when the bands have no nodata).
    """

    def __init__(
        self, dataset: DatasetReader, bands: Sequence[int], read_masks: bool = True
    ) -> None:
        self.dataset = dataset
        self.bands = list(bands)
        self.read_masks = read_masks
        # Chunks of about CHUNK_ROWS rows, aligned to the file's blocks when they are shorter.
        # Taller blocks are decoded once into GDAL's cache and served to several chunks, which
        # keeps the rows held here to a little more than one tile.
        block_height = max(1, dataset.block_shapes[0][0])
        self.block_rows = (
            block_height * math.ceil(CHUNK_ROWS / block_height)
            if block_height < CHUNK_ROWS
            else CHUNK_ROWS
        )
        self._chunks: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        self.rows_read = 0

    def read(self, start: int, stop: int) -> Strip:
        """Rows ``[start, stop)`` of the chosen bands (clipped to the raster)."""
        stop = min(stop, self.dataset.height)
        if self._chunks and start < self._chunks[0][0]:
            raise ValueError("strips must be read top to bottom")
        self._chunks = [c for c in self._chunks if c[0] + c[1].shape[1] > start]
        next_row = (
            self._chunks[-1][0] + self._chunks[-1][1].shape[1]
            if self._chunks
            else (start // self.block_rows * self.block_rows)
        )
        while next_row < stop:
            rows = min(self.block_rows - next_row % self.block_rows, self.dataset.height - next_row)
            window = Window(0, next_row, self.dataset.width, rows)
            data = self.dataset.read(self.bands, window=window)
            valid = None
            if self.read_masks:
                valid = self.dataset.read_masks(self.bands, window=window).any(axis=0)
            self._chunks.append((next_row, data, valid))
            self.rows_read += rows
            next_row += rows
        return Strip(start, stop, tuple(self._chunks))
