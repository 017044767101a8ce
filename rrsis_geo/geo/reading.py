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
    "StripReader",
    "StripedRasterWarning",
    "default_bands",
    "has_nodata",
    "is_striped",
    "open_scene",
    "parse_bands",
    "pixel_size_m",
]

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


class StripReader:
    """Read full-width strips of rows, aligned to blocks, each block once.

    Successive :meth:`read` calls must ask for row ranges whose starts do not decrease (tile rows
    top to bottom). Rows shared with the previous request are kept, not read again.

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
        self.block_rows = max(1, dataset.block_shapes[0][0])
        self._top = 0
        self._data = np.empty((len(self.bands), 0, dataset.width), dtype=dataset.dtypes[0])
        self._valid: np.ndarray | None = (
            np.empty((0, dataset.width), dtype=bool) if read_masks else None
        )
        self.rows_read = 0

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows ``[start, stop)`` of the chosen bands (clipped to the raster).

        Returns:
            ``(data, valid)``: data of shape ``(bands, rows, width)`` in the file's type, and a
            boolean validity mask ``(rows, width)`` (None when masks are not read). The reader
            never writes into an array it has returned (new rows go into a new buffer), so a
            caller may keep using one strip while the next is being read in another thread.
        """
        stop = min(stop, self.dataset.height)
        if start < self._top:
            raise ValueError("strips must be read top to bottom")
        held_stop = self._top + self._data.shape[1]
        if start >= held_stop:
            self._drop_all(start)
            held_stop = self._top
        else:
            drop = (start - self._top) // self.block_rows * self.block_rows
            self._data = self._data[:, drop:]
            if self._valid is not None:
                self._valid = self._valid[drop:]
            self._top += drop
        if stop > held_stop:
            new_stop = min(self.dataset.height, math.ceil(stop / self.block_rows) * self.block_rows)
            window = Window(0, held_stop, self.dataset.width, new_stop - held_stop)
            fresh = self.dataset.read(self.bands, window=window)
            self._data = np.concatenate([self._data, fresh], axis=1)
            if self._valid is not None:
                masks = self.dataset.read_masks(self.bands, window=window)
                self._valid = np.concatenate([self._valid, masks.any(axis=0)], axis=0)
            self.rows_read += new_stop - held_stop
        rows = slice(start - self._top, stop - self._top)
        valid = None if self._valid is None else self._valid[rows]
        return self._data[:, rows], valid

    def _drop_all(self, start: int) -> None:
        aligned = start // self.block_rows * self.block_rows
        self._data = self._data[:, :0]
        if self._valid is not None:
            self._valid = self._valid[:0]
        self._top = aligned
