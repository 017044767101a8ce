import numpy as np
import pytest

from rrsis_geo.geo.stitching import StreamingStitcher
from rrsis_geo.geo.tiling import TileGrid


def _stitch(grid, values, block_rows=32):
    out = np.full((grid.height, grid.width), -1.0, dtype=np.float32)
    emitted = []

    def sink(first, rows):
        emitted.append((first, rows.shape[0]))
        out[first : first + rows.shape[0]] = rows

    stitcher = StreamingStitcher(grid, sink, block_rows=block_rows)
    for tile in grid:
        patch = np.zeros((grid.tile_size, grid.tile_size), dtype=np.float32)
        patch[: tile.height, : tile.width] = values[
            tile.y : tile.y + tile.height, tile.x : tile.x + tile.width
        ]
        stitcher.add(tile, patch)
    stitcher.close()
    return out, emitted


def test_rows_stream_out_in_blocks_and_cover_the_raster_once():
    grid = TileGrid(height=333, width=250, tile_size=64, overlap=16, margin=4)
    values = np.random.default_rng(1).random((333, 250)).astype(np.float32)
    out, emitted = _stitch(grid, values)
    firsts = [first for first, _ in emitted]
    assert firsts == sorted(firsts) and firsts[0] == 0
    assert sum(count for _, count in emitted) == grid.height
    assert all(count % 32 == 0 for _, count in emitted[:-1])
    np.testing.assert_allclose(out, values, atol=1e-6)


def test_accumulators_hold_one_row_band_not_the_scene():
    grid = TileGrid(height=5000, width=300, tile_size=64, overlap=16, margin=4)
    stitcher = StreamingStitcher(grid, lambda first, rows: None, block_rows=32)
    assert stitcher._weighted.shape == (64 + 32, 300)


def test_tiles_out_of_order_are_refused():
    grid = TileGrid(height=200, width=200, tile_size=64, overlap=16, margin=4)
    stitcher = StreamingStitcher(grid, lambda first, rows: None)
    tiles = list(grid)
    stitcher.add(tiles[-1], np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError):
        stitcher.add(tiles[0], np.zeros((64, 64), np.float32))


def test_pixels_no_tile_predicted_come_out_as_nan():
    grid = TileGrid(height=300, width=100, tile_size=64, overlap=16, margin=4)
    out = np.zeros((300, 100), dtype=np.float32)

    def sink(first, rows):
        out[first : first + rows.shape[0]] = rows

    stitcher = StreamingStitcher(grid, sink, block_rows=16)
    tiles = list(grid)
    # only the last tile row is predicted: the skipped rows above still flow out, as nodata
    for tile in tiles:
        if tile.last_row:
            stitcher.add(tile, np.full((64, 64), 0.25, np.float32))
    stitcher.close()
    assert np.isnan(out[:200]).all()
    np.testing.assert_allclose(out[-40:], 0.25)
