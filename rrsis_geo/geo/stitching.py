"""Streaming stitcher: blends tile probabilities into finished raster rows, one band at a time.

Tiles arrive in row-major order. The stitcher keeps a float32 weighted sum and a validity mask
only for the rows that a tile still to come can touch, about one tile plus one output block
high, and hands every finished block of rows to a sink. Memory is therefore proportional to one
row band of tiles, never to the scene. The weight sum is not accumulated: it is the product of
the grid's row and column totals (see :meth:`TileGrid.weight_totals`). Tiles skipped for having
no valid pixel change nothing there, since every pixel they cover is nodata.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rrsis_geo.geo.tiling import Tile, TileGrid

__all__ = ["RowSink", "StreamingStitcher"]

RowSink = Callable[[int, np.ndarray], None]
"""Receives ``(first_row, probabilities)`` for finished rows: float32 of shape
``(rows, raster width)`` in [0, 1], NaN where no valid pixel was predicted (nodata)."""


class StreamingStitcher:
    """Blend tile probabilities over a :class:`TileGrid` and emit finished rows.

    Args:
        grid: The tile grid the tiles come from.
        sink: Called with each block of finished rows, top to bottom, exactly covering the raster.
        block_rows: Rows are emitted in multiples of this (the output's block height), so that
            writers never rewrite a partially written block; the last block may be shorter.
        start_row: Rows above this one are final already (a resumed pass; a multiple of
            ``block_rows``): nothing is emitted for them and the parts of tiles over them are
            dropped. Every tile reaching this row or below must still be added
            (:meth:`TileGrid.first_row_reaching`), so the rows emitted are exactly those of an
            uninterrupted pass.
    """

    def __init__(
        self, grid: TileGrid, sink: RowSink, block_rows: int = 256, start_row: int = 0
    ) -> None:
        self.grid = grid
        self.sink = sink
        self.block_rows = max(1, block_rows)
        capacity = min(grid.height, grid.tile_size + self.block_rows)
        self._weighted = np.zeros((capacity, grid.width), dtype=np.float32)
        self._valid = np.zeros((capacity, grid.width), dtype=bool)
        self._row_totals = grid.weight_totals(0)
        self._column_totals = grid.weight_totals(1)
        if start_row % self.block_rows and start_row < grid.height:
            raise ValueError(f"start row {start_row} is not a multiple of {self.block_rows}")
        self._top = min(start_row, grid.height)  # raster row held in accumulator row 0
        self._last_tile_y = 0

    @property
    def rows_emitted(self) -> int:
        """Raster rows already handed to the sink."""
        return self._top

    def add(self, tile: Tile, probabilities: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Accumulate one tile.

        Args:
            tile: The tile, from the same grid; tiles must come in row-major order.
            probabilities: Float array covering at least the tile's in-raster pixels,
                ``(>= tile.height, >= tile.width)``, values in [0, 1].
            valid: Optional boolean array of the same extent; False pixels (nodata) get no
                weight, so they come out as NaN unless another tile predicts them validly.
        """
        if tile.y < self._last_tile_y:
            raise ValueError("tiles must be added in row-major order")
        self._release_rows_before(tile.y)
        self._last_tile_y = tile.y
        skip = max(0, self._top - tile.y)  # rows above a resumed pass's start are final
        if skip >= tile.height:
            return
        rows = slice(tile.y + skip - self._top, tile.y - self._top + tile.height)
        cols = slice(tile.x, tile.x + tile.width)
        kept = slice(skip, tile.height), slice(0, tile.width)
        self._weighted[rows, cols] += probabilities[kept] * self.grid.weights(tile)[kept]
        if valid is None:
            self._valid[rows, cols] = True
        else:
            self._valid[rows, cols] |= valid[kept]

    def close(self) -> None:
        """Emit every remaining row; call once after the last tile."""
        self._emit(self.grid.height - self._top)

    def _release_rows_before(self, row: int) -> None:
        """Emit the finished rows above ``row`` (no later tile reaches them), in whole blocks."""
        ready = row - self._top
        ready -= ready % self.block_rows
        if ready > 0:
            self._emit(ready)

    def _emit(self, count: int) -> None:
        # Tiles skipped for nodata can leave more finished rows than the accumulators hold;
        # those rows were never touched and come out in accumulator-sized chunks.
        capacity = self._weighted.shape[0]
        while count > capacity:
            chunk = max(self.block_rows, capacity // self.block_rows * self.block_rows)
            chunk = min(chunk, capacity)
            self._emit_held(chunk)
            count -= chunk
        self._emit_held(count)

    def _emit_held(self, count: int) -> None:
        if count <= 0:
            return
        # Broadcast the two weight profiles rather than materializing their outer product.
        row_totals = self._row_totals[self._top : self._top + count, None]
        probabilities = np.divide(self._weighted[:count], row_totals)
        probabilities /= self._column_totals
        np.clip(probabilities, 0.0, 1.0, out=probabilities)
        probabilities[~self._valid[:count]] = np.nan
        self.sink(self._top, probabilities)
        kept = self._weighted.shape[0] - count
        for accumulator in (self._weighted, self._valid):
            accumulator[:kept] = accumulator[count:]
            accumulator[kept:] = 0
        self._top += count
