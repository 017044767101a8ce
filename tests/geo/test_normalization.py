import numpy as np
import pytest
import rasterio

from rrsis_geo.geo.normalization import NormalizationSpec, compute_scene_statistics
from tests.rasters import textured, write_raster


def _percentiles(data, valid=None):
    values = data if valid is None else data[:, valid]
    return np.percentile(values.reshape(data.shape[0], -1), [2, 98], axis=1)


def test_small_scene_statistics_are_exact_percentiles(tmp_path):
    data = textured(3, 300, 200, dtype="uint16")
    path = write_raster(tmp_path / "in.tif", data)
    with rasterio.open(path) as src:
        stats = compute_scene_statistics(src, [1, 2, 3])
    expected = _percentiles(data)
    np.testing.assert_allclose(stats.low, expected[0])
    np.testing.assert_allclose(stats.high, expected[1])


def test_nodata_is_left_out_of_the_statistics(tmp_path):
    data = textured(3, 200, 200)
    data[:, :, :60] = 0
    path = write_raster(tmp_path / "in.tif", data, nodata=0)
    with rasterio.open(path) as src:
        stats = compute_scene_statistics(src, [1, 2, 3])
    expected = _percentiles(data, (data != 0).any(axis=0))
    np.testing.assert_allclose(stats.low, expected[0])


@pytest.mark.parametrize("overviews", [True, False])
def test_large_scenes_use_overviews_or_a_window_sample(tmp_path, overviews):
    data = textured(3, 2500, 2000, dtype="int16")
    path = write_raster(tmp_path / "in.tif", data, overviews=overviews)
    with rasterio.open(path) as src:
        stats = compute_scene_statistics(src, [1, 2, 3])
    assert stats.source == ("overview" if overviews else "sample")
    expected = _percentiles(data[:, ::4, ::4])
    np.testing.assert_allclose(stats.low, expected[0], rtol=0.05, atol=20)
    np.testing.assert_allclose(stats.high, expected[1], rtol=0.05, atol=20)


def test_fixed_normalization_with_mean_and_std():
    spec = NormalizationSpec(method="fixed", low=(0.0,), high=(255.0,), mean=(0.5,), std=(0.25,))
    stats = compute_scene_statistics(None, [1, 2], spec)  # fixed: the scene is not read
    data = np.array([[[0, 255]], [[51, 300]]], dtype=np.uint16)
    out = stats.apply(data)
    np.testing.assert_allclose(out, [[[-2.0, 2.0]], [[-1.2, 2.0]]], rtol=1e-6)


def test_float_inputs_with_nan_become_zero():
    spec = NormalizationSpec(method="fixed", low=(0.0,), high=(1.0,))
    stats = compute_scene_statistics(None, [1], spec)
    out = stats.apply(np.array([[[np.nan, 0.5]]], dtype=np.float32))
    np.testing.assert_array_equal(out, [[[0.0, 0.5]]])


def test_spec_round_trips_through_a_dict():
    spec = NormalizationSpec(percentiles=(1.0, 99.0), mean=(0.4, 0.5, 0.6), std=(0.2,))
    assert NormalizationSpec.from_dict(spec.to_dict()) == spec
