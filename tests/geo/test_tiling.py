import itertools

import numpy as np
import pytest

from rrsis_geo.geo.tiling import TileGrid, axis_starts, ramp


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(1000, 512, 64), (960, 512, 64), (512, 512, 64), (513, 512, 0), (37, 64, 16), (2000, 100, 30)],
)
def test_axis_starts_cover_the_axis_with_full_tiles(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    if length >= tile:
        assert starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    else:
        assert starts == [0]


def test_ramps_form_a_partition_of_unity():
    rising = ramp(24)
    assert np.all(rising > 0) and np.all(rising < 1)
    np.testing.assert_allclose(rising + rising[::-1], 1.0, atol=1e-6)


def test_every_pixel_gets_weight_and_edges_stay_flat():
    grid = TileGrid(height=301, width=517, tile_size=128, overlap=40, margin=8)
    total = np.zeros((grid.height, grid.width))
    for tile in grid:
        total[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width] += grid.weights(tile)
    assert total.min() > 0
    corner = next(iter(grid))
    weights = grid.weights(corner)
    # outer row and column of the raster: full weight, as nothing else covers them
    assert np.all(weights[0, : 128 - 40] == 1.0)
    assert np.all(weights[: 128 - 40, 0] == 1.0)
    # interior sides: the discarded margin has no weight
    assert np.all(weights[:, -8:] == 0.0)
    assert np.all(weights[-8:, :] == 0.0)


def test_regular_overlaps_sum_to_one():
    grid = TileGrid(height=64, width=64 + 48 * 3, tile_size=64, overlap=16, margin=4)
    total = np.zeros(grid.width)
    for tile in grid:
        total[tile.x : tile.x + tile.width] += grid.weights(tile)[0]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_raster_smaller_than_a_tile_has_one_flat_tile():
    grid = TileGrid(height=20, width=30, tile_size=64, overlap=16, margin=4)
    tiles = list(grid)
    assert len(tiles) == 1
    assert (tiles[0].height, tiles[0].width) == (20, 30)
    assert np.all(grid.weights(tiles[0]) == 1.0)


@pytest.mark.parametrize(
    ("tile", "overlap", "margin"), [(64, 64, 0), (64, -1, 0), (64, 16, 9), (64, 48, 8), (1, 0, 0)]
)
def test_inconsistent_sizes_are_refused(tile, overlap, margin):
    with pytest.raises(ValueError):
        TileGrid(height=100, width=100, tile_size=tile, overlap=overlap, margin=margin)
