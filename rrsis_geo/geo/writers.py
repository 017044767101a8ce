"""Writing outputs safely: temporary names beside the target, renamed only when complete.

Rasters are written window by window into a tiled GeoTIFF work file (the COG driver cannot be
written window by window) and then copied to a Cloud Optimized GeoTIFF with overviews.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rrsis_geo.errors import OutputError

__all__ = [
    "PROBABILITY_NODATA",
    "PROBABILITY_SCALE",
    "RasterEncoding",
    "TiledRasterWriter",
    "atomic_output",
    "check_output_path",
    "keep_under",
    "remove_temporary_siblings",
    "sidecar_path",
    "temporary_sibling",
    "write_cog",
    "write_failure",
]

PROBABILITY_SCALE = 254
"""uint8 probability rasters store ``round(p * 254)``; 255 is reserved for nodata."""
PROBABILITY_NODATA = 255
ENCODE_ROWS = 64
WORK_BLOCK = 256
"""Block side of the work rasters; the stitcher emits rows in multiples of it."""
BINARY_NODATA = 255
LOW_SPACE_BYTES = 1024 * 1024
"""A write that fails with less free space than this on its device is reported as a full disk."""


@dataclass(frozen=True)
class RasterEncoding:
    """How stitched probabilities are stored in a raster.

    Attributes:
        kind: ``"probability"`` (uint8 0-254, scale 1/254), ``"binary"`` (uint8 0/1) or
            ``"float32"`` (probabilities as they are).
        threshold: Probability at or above which a pixel is 1 in ``"binary"``.
    """

    kind: str = "probability"
    threshold: float = 0.5

    @property
    def dtype(self) -> str:
        """Pixel type on disk."""
        return "float32" if self.kind == "float32" else "uint8"

    @property
    def nodata(self) -> float:
        """Nodata value on disk."""
        return float("nan") if self.kind == "float32" else PROBABILITY_NODATA

    @property
    def overview_resampling(self) -> str:
        """Overviews average probabilities but keep classes crisp."""
        return "NEAREST" if self.kind == "binary" else "AVERAGE"

    def encode(self, probabilities: np.ndarray) -> np.ndarray:
        """Encode float probabilities (NaN = nodata) for writing."""
        invalid = np.isnan(probabilities)
        if self.kind == "float32":
            return probabilities.astype(np.float32, copy=False)
        if self.kind == "binary":
            encoded = (probabilities >= self.threshold).astype(np.uint8)
            encoded[invalid] = BINARY_NODATA
            return encoded
        scaled = np.where(invalid, 0.0, probabilities) * np.float32(PROBABILITY_SCALE)
        encoded = np.rint(scaled).astype(np.uint8)
        encoded[invalid] = PROBABILITY_NODATA
        return encoded


def sidecar_path(path: Path) -> Path:
    """The JSON record written beside an output (``<output>.json``): what made it, and how."""
    return path.with_name(path.name + ".json")


def check_output_path(path: Path, overwrite: bool) -> None:
    """Fail early, before any model runs, when ``path`` (or its sidecar) cannot be written.

    Raises:
        OutputError: Existing file without ``overwrite``, an output or sidecar that is a
            folder, missing or unwritable folder.
    """
    if path.exists() and not overwrite:
        raise OutputError(f"output exists: {path} (use --overwrite to replace it)")
    if path.is_dir():
        raise OutputError(f"output is a folder: {path}")
    if sidecar_path(path).is_dir():
        raise OutputError(f"the sidecar of {path.name} is a folder: {sidecar_path(path)}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise OutputError(f"output folder does not exist: {folder}")
    if not folder.is_dir():
        raise OutputError(f"output folder is not a folder: {folder}")
    probe = temporary_sibling(path, ".probe")
    try:
        probe.touch()
    except OSError as error:
        raise OutputError(f"output folder is not writable: {folder} ({error.strerror})") from None
    probe.unlink()


def write_failure(path: Path, what: str, error: Exception) -> OutputError:
    """The one-line error for a file GDAL could not finish: a full disk, or GDAL's reason.

    Args:
        path: The file being written.
        what: What it is, for the user (``"the work raster"``).
        error: What GDAL raised.
    """
    folder = path.parent if str(path.parent) else Path(".")
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(folder).free
        if free < LOW_SPACE_BYTES:
            return OutputError(
                f"no space left on the device of {folder} ({free // 1024} kB free): "
                f"{what} could not be written"
            )
    reason = str(error.__cause__ or error).splitlines()[0] or type(error).__name__
    return OutputError(f"{what} could not be written in {folder}: {reason}")


def temporary_sibling(path: Path, suffix: str | None = None) -> Path:
    """A hidden, unique name in ``path``'s folder, keeping its extension (drivers read it)."""
    suffix = path.suffix if suffix is None else suffix
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{suffix}")


def remove_temporary_siblings(path: Path) -> list[Path]:
    """Remove what :func:`temporary_sibling` named for ``path`` and its ``.json`` sidecar.

    Only for temporaries no process is writing any more: those of a run that was killed.

    Returns:
        What was removed.
    """
    removed = []
    for target in (path, sidecar_path(path)):
        name = re.compile(rf"\.{re.escape(target.stem)}\.[0-9a-f]{{12}}\.tmp(\.[^/]*)?")
        folder = target.parent if str(target.parent) else Path(".")
        for leftover in folder.glob(f".{glob.escape(target.stem)}.*.tmp*"):
            if name.fullmatch(leftover.name):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


@contextlib.contextmanager
def atomic_output(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Whatever is written to the temporary path is removed on any error or interruption, so a
    target is either complete or absent. Shapefiles, being several files, are written into a
    temporary folder whose members are renamed one by one.
    """
    if path.exists() and not overwrite:
        raise OutputError(f"output exists: {path} (use --overwrite to replace it)")
    if path.suffix.lower() == ".shp":
        folder = temporary_sibling(path, "")
        folder.mkdir()
        try:
            yield folder / path.name
            for member in sorted(folder.iterdir()):
                os.replace(member, path.with_suffix(member.suffix))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    temporary = temporary_sibling(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


class TiledRasterWriter:
    """A single-band tiled GeoTIFF written block row by block row.

    Args:
        path: File to create.
        width: Columns.
        height: Rows.
        crs: Coordinate reference system (may be None).
        transform: Affine geotransform.
        encoding: How probabilities are stored.
        tags: Metadata tags for the dataset.
        block_size: Tile side of the file.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        crs: CRS | None,
        transform: Any,
        encoding: RasterEncoding,
        tags: dict[str, str] | None = None,
        block_size: int = WORK_BLOCK,
    ) -> None:
        self.path = path
        self.encoding = encoding
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": 1,
            "dtype": encoding.dtype,
            "nodata": encoding.nodata,
            "crs": crs,
            "transform": transform,
            "tiled": True,
            "blockxsize": block_size,
            "blockysize": block_size,
            "compress": "ZSTD",
            "zstd_level": 1,
            "bigtiff": "IF_SAFER",
        }
        self.dataset = rasterio.open(path, "w", **profile)
        if encoding.kind == "probability":
            self.dataset.scales = (1.0 / PROBABILITY_SCALE,)
            self.dataset.offsets = (0.0,)
        if tags:
            self.dataset.update_tags(**tags)

    @classmethod
    def reopen(cls, path: Path, encoding: RasterEncoding) -> TiledRasterWriter:
        """Open a work raster this class wrote before, to write more rows into it.

        Raises:
            OutputError: The file cannot be opened for update.
        """
        writer = cls.__new__(cls)
        writer.path, writer.encoding = path, encoding
        try:
            writer.dataset = rasterio.open(path, "r+")
        except RasterioError as error:
            raise write_failure(path, "the work raster", error) from None
        return writer

    def flush(self) -> None:
        """Write everything so far to disk (close and reopen), so it survives a killed process.

        Raises:
            OutputError: The file cannot be finished or reopened.
        """
        self.close()
        try:
            self.dataset = rasterio.open(self.path, "r+")
        except RasterioError as error:
            raise write_failure(self.path, "the work raster", error) from None

    def write_rows(self, first_row: int, probabilities: np.ndarray) -> None:
        """Encode and write full-width rows starting at ``first_row``.

        Rows are encoded a few at a time: encoding makes temporary copies, and a whole block
        row of a wide scene would cost several times its float32 size at once.
        """
        rows, width = probabilities.shape
        try:
            for start in range(0, rows, ENCODE_ROWS):
                chunk = probabilities[start : start + ENCODE_ROWS]
                window = Window(0, first_row + start, width, chunk.shape[0])
                self.dataset.write(self.encoding.encode(chunk), 1, window=window)
        except RasterioError as error:
            raise write_failure(self.path, "the work raster", error) from None

    def close(self) -> None:
        """Flush and close the file, and check that it reads back.

        GDAL reports no failure of the blocks it flushes on closing (a full disk).

        Raises:
            OutputError: The file cannot be read back.
        """
        if self.dataset.closed:
            return
        self.dataset.close()
        try:
            with rasterio.open(self.path) as written:
                last = Window(written.width - 1, written.height - 1, 1, 1)
                written.read(1, window=last)
        except RasterioError as error:
            raise write_failure(self.path, "the work raster", error) from None


def write_cog(source: Path, target: Path, encoding: RasterEncoding) -> None:
    """Copy a tiled GeoTIFF to a Cloud Optimized GeoTIFF with overviews.

    ``target`` is written as is; wrap the call in :func:`atomic_output`.
    """
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        rasterio.shutil.copy(
            source,
            target,
            driver="COG",
            COMPRESS="DEFLATE",
            LEVEL=6,
            PREDICTOR="YES" if encoding.kind != "binary" else "NO",
            BLOCKSIZE=512,
            OVERVIEWS="AUTO",
            OVERVIEW_RESAMPLING=encoding.overview_resampling,
            NUM_THREADS="ALL_CPUS",
            BIGTIFF="IF_SAFER",
        )


def keep_under(
    source: Path,
    target: Path,
    geometries: list[Any],
    encoding: RasterEncoding,
    buffer_pixels: float = 1.5,
) -> None:
    """Copy a single-band work raster, keeping only the pixels under ``geometries``.

    Valid pixels elsewhere become 0 (no object); nodata stays nodata. The geometries (in the
    raster's CRS) are grown by ``buffer_pixels`` so that a simplified outline keeps the edge
    pixels of its object. Block by block: memory follows one block row.
    """
    import rasterio.features
    from rasterio.windows import transform as window_transform

    with rasterio.open(source) as src:
        size = abs(src.transform.a) or 1.0
        shapes = [g.buffer(buffer_pixels * size) for g in geometries]
        profile = src.profile
        tags = src.tags()
        with rasterio.open(target, "w", **profile) as dst:
            dst.scales, dst.offsets = src.scales, src.offsets
            dst.update_tags(**tags)
            for _, window in src.block_windows(1):
                values = src.read(1, window=window)
                inside = np.zeros(values.shape, bool)
                if shapes:
                    inside = rasterio.features.geometry_mask(
                        shapes, values.shape, window_transform(window, src.transform), invert=True
                    )
                nodata = (
                    np.isnan(values) if encoding.kind == "float32" else values == encoding.nodata
                )
                values = np.where(inside | nodata, values, 0).astype(values.dtype)
                dst.write(values, 1, window=window)
