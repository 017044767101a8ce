"""The tile grid: where tiles go over a raster and how much each tile pixel counts when blended.

One grid serves every model. Tiles are square, ``tile_size`` pixels, and consecutive tiles share
``overlap`` pixels. On a tile side that lies inside the raster, the outer ``margin`` pixels are
discarded (a model's border pixels lack context) and the rest of the shared strip is blended with
a raised-cosine ramp, so that two neighbours' weights sum to one across a regular overlap. Sides
that touch the raster edge keep weight one all the way out: nothing else covers those pixels.

The last tile of a row or column is shifted back to end on the raster edge instead of hanging
over it, so every tile is read at full size; only a raster smaller than one tile gives tiles that
extend past the raster (those are padded with zeros after normalization).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Tile", "TileGrid", "axis_starts", "ramp"]


def axis_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis.

    Args:
        length: Raster size along the axis, in pixels.
        tile_size: Tile size in pixels.
        overlap: Pixels shared by consecutive tiles.

    Returns:
        Increasing offsets; the last tile ends exactly on the raster edge unless the raster is
        shorter than one tile, in which case there is one tile at offset 0.
    """
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    starts = list(range(0, length - tile_size, stride))
    starts.append(length - tile_size)
    return starts


def ramp(width: int) -> np.ndarray:
    """A rising raised-cosine ramp of ``width`` samples, strictly between 0 and 1.

    ``ramp(w)[i] + ramp(w)[w - 1 - i] == 1``, so a rising and a falling ramp over the same
    pixels form a partition of unity.
    """
    positions = (np.arange(width, dtype=np.float64) + 0.5) / width
    return (np.sin(positions * math.pi / 2.0) ** 2).astype(np.float32)


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes:
        row: Tile row index in the grid.
        col: Tile column index in the grid.
        y: Top pixel row of the tile in the raster.
        x: Left pixel column of the tile in the raster.
        height: Rows of the tile that lie inside the raster (``<= tile_size``).
        width: Columns of the tile that lie inside the raster (``<= tile_size``).
        first_row: True when the tile's top side is the raster's top edge.
        last_row: True when the tile's bottom side reaches the raster's bottom edge.
        first_col: True when the tile's left side is the raster's left edge.
        last_col: True when the tile's right side reaches the raster's right edge.
    """

    row: int
    col: int
    y: int
    x: int
    height: int
    width: int
    first_row: bool
    last_row: bool
    first_col: bool
    last_col: bool


@dataclass(frozen=True)
class TileGrid:
    """Square tiles over a ``height`` x ``width`` raster.

    Args:
        height: Raster rows.
        width: Raster columns.
        tile_size: Tile side in pixels.
        overlap: Pixels shared by consecutive tiles.
        margin: Pixels discarded on each tile side that lies inside the raster; at most half the
            overlap, so the kept parts of neighbours still meet.

    Raises:
        ValueError: When the sizes do not fit together.
    """

    height: int
    width: int
    tile_size: int
    overlap: int
    margin: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"empty raster: {self.height} x {self.width}")
        if self.tile_size < 2:
            raise ValueError(f"tile size must be at least 2, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(
                f"overlap must be in [0, tile size), got {self.overlap} for tile {self.tile_size}"
            )
        if not 0 <= 2 * self.margin <= self.overlap:
            raise ValueError(
                f"margin must be in [0, overlap / 2], got margin {self.margin} "
                f"for overlap {self.overlap}"
            )
        if 2 * (self.overlap - self.margin) > self.tile_size:
            raise ValueError(
                f"overlap {self.overlap} minus margin {self.margin} leaves no room for two "
                f"blend ramps in a {self.tile_size}-pixel tile"
            )

    @property
    def blend_width(self) -> int:
        """Pixels over which two regular neighbours are blended (``overlap - 2 * margin``)."""
        return self.overlap - 2 * self.margin

    @property
    def row_starts(self) -> list[int]:
        """Top offsets of the tile rows."""
        return axis_starts(self.height, self.tile_size, self.overlap)

    @property
    def col_starts(self) -> list[int]:
        """Left offsets of the tile columns."""
        return axis_starts(self.width, self.tile_size, self.overlap)

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def first_row_reaching(self, row: int) -> int:
        """Index of the first tile row whose tiles cover raster row ``row`` or a later one.

        Rows before ``row`` being final, only these tile rows still contribute anything: a
        resumed pass restarts there (:class:`~rrsis_geo.geo.stitching.StreamingStitcher`'s
        ``start_row``). Equals the number of tile rows when ``row`` is past the raster.
        """
        for index, start in enumerate(self.row_starts):
            if min(start + self.tile_size, self.height) > row:
                return index
        return len(self.row_starts)

    def __iter__(self) -> Iterator[Tile]:
        """Tiles in row-major order (the order the streaming stitcher needs)."""
        rows, cols = self.row_starts, self.col_starts
        for i, y in enumerate(rows):
            for j, x in enumerate(cols):
                yield self.tile(i, j, y, x, len(rows), len(cols))

    def tile(self, row: int, col: int, y: int, x: int, n_rows: int, n_cols: int) -> Tile:
        """Build the tile at grid position (row, col) with top-left pixel (y, x)."""
        return Tile(
            row=row,
            col=col,
            y=y,
            x=x,
            height=min(self.tile_size, self.height - y),
            width=min(self.tile_size, self.width - x),
            first_row=row == 0,
            last_row=row == n_rows - 1,
            first_col=col == 0,
            last_col=col == n_cols - 1,
        )

    def weights(self, tile: Tile) -> np.ndarray:
        """Blend weights of a tile's in-raster pixels, shape ``(tile.height, tile.width)``.

        Zero on discarded margins, a ramp over the blend strip, one elsewhere and on every side
        that touches the raster edge.
        """
        full = _tile_weights(
            self.tile_size,
            self.margin,
            self.blend_width,
            tile.first_row,
            tile.last_row,
            tile.first_col,
            tile.last_col,
        )
        return full[: tile.height, : tile.width]

    def weight_totals(self, axis: int) -> np.ndarray:
        """Sum of all tiles' weights along one axis (0: rows, 1: columns), float32.

        Tile weights are an outer product of a row profile and a column profile, and tiles form
        a full rows x columns grid, so the total weight at a pixel is
        ``weight_totals(0)[y] * weight_totals(1)[x]``: the stitcher divides by that instead of
        accumulating a second full-width array.
        """
        length = self.height if axis == 0 else self.width
        starts = self.row_starts if axis == 0 else self.col_starts
        totals = np.zeros(length, dtype=np.float64)
        for index, start in enumerate(starts):
            profile = _axis_weights(
                self.tile_size, self.margin, self.blend_width, index > 0, index < len(starts) - 1
            )
            stop = min(start + self.tile_size, length)
            totals[start:stop] += profile[: stop - start]
        return totals.astype(np.float32)


def _axis_weights(
    tile_size: int, margin: int, blend_width: int, inner_start: bool, inner_end: bool
) -> np.ndarray:
    weights = np.ones(tile_size, dtype=np.float32)
    rising = ramp(blend_width)
    if inner_start:
        weights[:margin] = 0.0
        weights[margin : margin + blend_width] = rising
    if inner_end:
        end = tile_size - margin
        weights[end:] = 0.0
        weights[end - blend_width : end] = np.minimum(
            weights[end - blend_width : end], rising[::-1]
        )
    return weights


@lru_cache(maxsize=64)
def _tile_weights(
    tile_size: int,
    margin: int,
    blend_width: int,
    first_row: bool,
    last_row: bool,
    first_col: bool,
    last_col: bool,
) -> np.ndarray:
    rows = _axis_weights(tile_size, margin, blend_width, not first_row, not last_row)
    cols = _axis_weights(tile_size, margin, blend_width, not first_col, not last_col)
    weights = np.outer(rows, cols).astype(np.float32)
    weights.setflags(write=False)
    return weights
