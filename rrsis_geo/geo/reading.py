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
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from rrsis_geo.errors import InputError, RrsisWarning
from rrsis_geo.geo.limits import MAX_UPSAMPLING

__all__ = [
    "MAX_UPSAMPLING",
    "GeoreferencingWarning",
    "ResamplingWarning",
    "SceneHeader",
    "Strip",
    "StripReader",
    "StripedRasterWarning",
    "default_bands",
    "has_nodata",
    "is_georeferenced",
    "is_striped",
    "open_scene",
    "parse_bands",
    "pixel_size_m",
    "read_header",
    "resampled_size",
]

CHUNK_ROWS = 128
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")


class StripedRasterWarning(RrsisWarning):
    """The input is stored in strips rather than tiles, so windowed reads are slower."""


class GeoreferencingWarning(RrsisWarning):
    """The input has no georeferencing (or no CRS): outputs are in its own coordinates."""


class ResamplingWarning(RrsisWarning):
    """The scene is upsampled to the model's ground resolution (within the allowed factor)."""


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


def is_georeferenced(dataset: DatasetReader) -> bool:
    """True when the raster has a CRS and a geotransform (GDAL reports the identity without)."""
    return dataset.crs is not None and dataset.transform != Affine.identity()


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


@dataclass(frozen=True)
class SceneHeader:
    """What a raster's header says, read before any model is loaded (:func:`read_header`).

    Attributes:
        path: The file.
        width: Columns.
        height: Rows.
        count: Bands.
        dtype: Pixel type of the first band.
        georeferenced: It has a CRS and a geotransform; without, nothing is resampled and the
            outputs are in the raster's own coordinates (pixels when it has no geotransform).
    """

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    georeferenced: bool


def read_header(path: str | Path, bands: Sequence[int] | None = None) -> SceneHeader:
    """Check a raster as far as can be done without the model; reads its header and one pixel.

    The last pixel of the first band is read, which finds a truncated file up front. A raster
    without georeferencing or without a CRS is said once, in one warning line.

    Raises:
        InputError: Missing file, folder, not a raster, truncated or corrupt file, unsupported
            pixel type, a band the raster does not have.
    """
    path = Path(path)
    with _open_raster(path) as dataset:
        dtype = dataset.dtypes[0]
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"unsupported pixel type {dtype} in {path}")
        check_bands(bands or (), dataset.count, str(path))
        last = Window(dataset.width - 1, dataset.height - 1, 1, 1)
        try:
            dataset.read(1, window=last)
        except RasterioIOError as error:
            raise truncated(path, error) from None
        header = SceneHeader(
            path, dataset.width, dataset.height, dataset.count, dtype, is_georeferenced(dataset)
        )
        if dataset.transform == Affine.identity():
            _warn_georeferencing(
                f"{path.name} has no georeferencing: outputs are in pixel coordinates "
                "(x = column, y = row, no CRS) and the scene is not resampled"
            )
        elif dataset.crs is None:
            _warn_georeferencing(
                f"{path.name} has no CRS: outputs keep its coordinates without a CRS and the "
                "scene is not resampled (its pixel size in metres is unknown)"
            )
    return header


def _warn_georeferencing(message: str) -> None:
    warnings.warn(message, GeoreferencingWarning, stacklevel=3)


def _open_raster(path: Path) -> DatasetReader:
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a folder, not a raster: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError:
        raise InputError(f"not a raster that GDAL can read: {path}") from None


def truncated(path: Path, error: Exception) -> InputError:
    """The one-line error for a raster whose pixels cannot be read (GDAL's first reason)."""
    cause = error.__cause__ or error.__context__ or error
    reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return InputError(f"{path} is truncated or corrupt: its pixels cannot be read ({reason})")


def resampled_size(
    path: Path,
    size: tuple[int, int],
    pixel_m: tuple[float, float],
    gsd: float,
    max_upsampling: float = MAX_UPSAMPLING,
) -> tuple[int, int] | None:
    """The ``(width, height)`` a scene is resampled to at ``gsd``, or None when it stays as is.

    Upsampling (a scene coarser than ``gsd``) by more than ``max_upsampling`` in either
    direction is refused: a 10 m scene at a 0.3 m model would be 33 times wider and higher,
    minutes of tiles of what the model never saw. Within the limit it is said in one warning.

    Raises:
        InputError: Upsampling by more than ``max_upsampling``, or to a size no raster has.
    """
    width, height = size
    scale_x, scale_y = gsd / pixel_m[0], gsd / pixel_m[1]
    if abs(scale_x - 1.0) <= 1e-3 and abs(scale_y - 1.0) <= 1e-3:
        return None
    new = (max(1, round(width / scale_x)), max(1, round(height / scale_y)))
    factor = 1.0 / min(scale_x, scale_y)
    resolution = f"{path.name} is {_metres(pixel_m)} per pixel and the model works at {gsd:g} m"
    times = f"{factor:.0f}" if factor >= 10 else f"{factor:.2g}"
    growth = f"upsample it {times}x to {new[0]} x {new[1]} pixels"
    if factor > max_upsampling or max(new) > 2**31 - 1:
        raise InputError(
            f"{resolution}: resampling would {growth}, over the {max_upsampling:g}x limit: pass "
            f"--gsd 0 to keep its resolution, use a model made for about {_metres(pixel_m)}, "
            "or raise --max-upsampling"
        )
    if factor > 1.0 + 1e-3:
        warnings.warn(f"{resolution}: resampling will {growth}", ResamplingWarning, stacklevel=3)
    return new


def _metres(pixel_m: tuple[float, float]) -> str:
    x, y = pixel_m
    return f"{x:.3g} m" if abs(x - y) <= 1e-3 * max(x, y) else f"{x:.3g} x {y:.3g} m"


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
    max_upsampling: float = MAX_UPSAMPLING,
) -> OpenedScene:
    """Open a raster for segmentation.

    Args:
        path: Any raster GDAL reads.
        bands: 1-based bands to use; default :func:`default_bands`.
        channels: How many bands the model takes.
        gsd: Target ground resolution in metres per pixel; when given and different from the
            scene's, a georeferenced scene is resampled on read (bilinear when upsampling,
            average when downsampling) on the same CRS and extent (:func:`resampled_size`).
        max_upsampling: The largest upsampling factor allowed.

    Returns:
        The opened scene; close it (or use it as a context manager).

    Raises:
        InputError: Missing file, not a raster, unsupported type, wrong bands, too much
            upsampling.
    """
    path = Path(path)
    stack = ExitStack()
    dataset = stack.enter_context(_open_raster(path))
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
        new = None
        if gsd is not None and gsd > 0 and is_georeferenced(dataset):
            size = (dataset.width, dataset.height)
            new = resampled_size(path, size, pixel_size_m(dataset), gsd, max_upsampling)
        if new is not None:
            dataset = stack.enter_context(_resampling_vrt(dataset, *new))
        return OpenedScene(path, dataset, chosen, new is not None, stack)
    except BaseException:
        stack.close()
        raise


def _resampling_vrt(dataset: DatasetReader, width: int, height: int) -> WarpedVRT:
    transform = dataset.transform @ Affine.scale(dataset.width / width, dataset.height / height)
    downsampling = width < dataset.width or height < dataset.height
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
            try:
                data = self.dataset.read(self.bands, window=window)
                valid = None
                if self.read_masks:
                    valid = self.dataset.read_masks(self.bands, window=window).any(axis=0)
            except RasterioIOError as error:
                raise truncated(Path(self.dataset.name), error) from None
            self._chunks.append((next_row, data, valid))
            self.rows_read += rows
            next_row += rows
        return Strip(start, stop, tuple(self._chunks))
