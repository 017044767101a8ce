import warnings

import numpy as np
import pytest
import rasterio

from rrsis_geo.errors import InputError
from rrsis_geo.geo.reading import (
    StripedRasterWarning,
    StripReader,
    default_bands,
    open_scene,
    parse_bands,
)
from tests.rasters import textured, write_raster


def test_parse_bands():
    assert parse_bands("3,2,1") == (3, 2, 1)
    assert parse_bands(None) is None
    for bad in ("a,b", "0,1,2", "1;2"):
        with pytest.raises(InputError):
            parse_bands(bad)


def test_default_bands():
    assert default_bands(1) == (1, 1, 1)
    assert default_bands(4) == (1, 2, 3)
    with pytest.raises(InputError, match="choose them with --bands"):
        default_bands(2)


@pytest.mark.parametrize("block", [16, 64])
def test_strip_reader_reads_each_block_once_and_returns_exact_rows(tmp_path, block):
    data = textured(3, 300, 90)
    data[:, 100:140, 10:30] = 0
    path = write_raster(tmp_path / "in.tif", data, nodata=0, block=block)
    with rasterio.open(path) as src:
        reader = StripReader(src, [3, 1])
        for start in (0, 40, 90, 140, 200, 250, 290):
            strip = reader.read(start, start + 64)
            rows, valid = strip.pixels(0, 90), strip.valid(0, 90)
            stop = min(start + 64, 300)
            np.testing.assert_array_equal(rows, data[[2, 0], start:stop])
            np.testing.assert_array_equal(strip.pixels(7, 33), data[[2, 0], start:stop, 7:33])
            expected_valid = (data[[2, 0], start:stop] != 0).any(axis=0)
            np.testing.assert_array_equal(valid, expected_valid)
        assert reader.rows_read == 300
        with pytest.raises(ValueError):
            reader.read(0, 10)


def test_striped_input_warns(tmp_path):
    path = write_raster(tmp_path / "striped.tif", textured(3, 300, 400), tiled=False)
    with pytest.warns(StripedRasterWarning, match="stored in strips"):
        open_scene(path).close()
    tiled = write_raster(tmp_path / "tiled.tif", textured(3, 300, 400))
    with warnings.catch_warnings():
        warnings.simplefilter("error", StripedRasterWarning)
        open_scene(tiled).close()


def test_open_scene_refuses_wrong_band_counts(tmp_path):
    path = write_raster(tmp_path / "in.tif", textured(4, 40, 40))
    with pytest.raises(InputError, match="band 7 does not exist"):
        open_scene(path, bands=(1, 2, 7))
    with pytest.raises(InputError, match="the model takes 3 bands"):
        open_scene(path, bands=(1, 2))
    with open_scene(path, bands=(4, 3, 2)) as scene:
        assert scene.bands == (4, 3, 2)


def test_strips_already_returned_are_never_overwritten(tmp_path):
    # The pipeline reads the next strip in a thread while it still uses the current one.
    data = textured(3, 200, 60)
    path = write_raster(tmp_path / "in.tif", data, block=16)
    with rasterio.open(path) as src:
        reader = StripReader(src, [1, 2, 3])
        first = reader.read(0, 64)
        kept = first.pixels(0, 60)
        reader.read(48, 112)
        reader.read(100, 164)
        np.testing.assert_array_equal(first.pixels(0, 60), kept)
