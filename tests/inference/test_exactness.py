"""The stitched result equals the untiled one: no seams, no edge artefacts, any tiling."""

import numpy as np
import pytest
import rasterio

from rrsis_geo.geo.normalization import compute_scene_statistics
from rrsis_geo.inference.pipeline import SegmentOptions, segment
from rrsis_geo.inference.reference_models import box_mean, brightness, constant
from tests.rasters import textured, write_raster


def untiled(path, model):
    """The model applied once to the whole normalized raster."""
    with rasterio.open(path) as src:
        bands = [1, 2, 3]
        statistics = compute_scene_statistics(src, bands, model.metadata.normalization)
        data = src.read(bands)
        valid = src.read_masks(bands).any(axis=0)
    normalized = statistics.apply(data)
    normalized[:, ~valid] = 0
    probabilities = model.predict(normalized[None], model.encode_expression("x")).probabilities[0]
    probabilities[~valid] = np.nan
    return probabilities


def tiled(path, model, tmp_path, **options):
    out = tmp_path / "out.tif"
    segment(
        path,
        "anything",
        model,
        [out],
        SegmentOptions(raster_kind="float32", overwrite=True, **options),
    )
    with rasterio.open(out) as dst:
        return dst.read(1)


@pytest.mark.parametrize(
    ("height", "width", "tile_size", "overlap", "margin"),
    [
        (203, 157, 64, 16, 4),
        (203, 157, 64, 0, 0),
        (203, 157, 37, 12, 6),
        (130, 411, 100, 30, 7),
        (64, 200, 64, 20, 10),
        (50, 40, 64, 16, 4),  # smaller than one tile
        (1, 300, 32, 8, 2),
    ],
)
def test_per_pixel_model_equals_untiled(tmp_path, height, width, tile_size, overlap, margin):
    path = write_raster(tmp_path / "in.tif", textured(3, height, width, seed=height))
    model = brightness()
    result = tiled(
        path, model, tmp_path, tile_size=tile_size, overlap=overlap, margin=margin, batch_size=3
    )
    assert result.shape == (height, width)
    np.testing.assert_allclose(result, untiled(path, model), rtol=0, atol=2e-6)


@pytest.mark.parametrize(("height", "width", "tile_size"), [(203, 157, 64), (30, 20, 64)])
def test_constant_model_gives_a_constant_raster_edges_and_corners_included(
    tmp_path, height, width, tile_size
):
    path = write_raster(tmp_path / "in.tif", textured(3, height, width))
    result = tiled(path, constant(value=0.37), tmp_path, tile_size=tile_size, overlap=24, margin=6)
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, 0.37, atol=1e-6)
    for edge in (result[0], result[-1], result[:, 0], result[:, -1]):
        np.testing.assert_allclose(edge, 0.37, atol=1e-6)


def test_context_model_is_seam_free_when_margin_covers_its_radius(tmp_path):
    path = write_raster(tmp_path / "in.tif", textured(3, 301, 277, seed=5))
    model = box_mean(size=33)
    expected = untiled(path, model)
    result = tiled(path, model, tmp_path, tile_size=128, overlap=48, margin=16)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


def test_context_model_shows_seams_when_margin_is_too_small(tmp_path):
    # The same comparison fails when the margin is below the radius: the test above can fail.
    path = write_raster(tmp_path / "in.tif", textured(3, 301, 277, seed=5))
    model = box_mean(size=33)
    result = tiled(path, model, tmp_path, tile_size=128, overlap=48, margin=2)
    assert np.abs(result - untiled(path, model)).max() > 1e-3


def test_percentile_statistics_are_per_scene_not_per_tile(tmp_path):
    # A bright half and a dark half: per-tile stretching would map both to the full range.
    data = np.zeros((3, 128, 256), dtype=np.uint8)
    data[:, :, :128] = 40
    data[:, :, 128:] = 200
    path = write_raster(tmp_path / "in.tif", data)
    result = tiled(path, brightness(), tmp_path, tile_size=64, overlap=16, margin=4)
    assert result[:, :120].max() < 0.05
    assert result[:, 136:].min() > 0.95
