"""Outputs sit exactly on the input's grid, and polygons land on the right map coordinates."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box

from rrsis_geo.inference.pipeline import SegmentOptions, segment
from rrsis_geo.inference.reference_models import brightness
from tests.rasters import textured, write_raster

REAL = ["RGB.byte.tif", "cogeo.tif", "naip_rgbn_5m.tif", "buildings_pan_uint16.tif"]


def _same_grid(source, output):
    with rasterio.open(source) as src, rasterio.open(output) as out:
        assert out.crs == src.crs
        assert out.transform.almost_equals(src.transform)
        assert (out.width, out.height) == (src.width, src.height)
        return out.read(1), src


@pytest.mark.parametrize("name", REAL)
def test_real_rasters_keep_crs_transform_and_size(real_rasters, tmp_path, name):
    out = tmp_path / "prob.tif"
    segment(real_rasters / name, "bright fields", brightness(), [out, tmp_path / "p.gpkg"])
    _same_grid(real_rasters / name, out)
    assert cog_validate(str(out))[0], cog_validate(str(out))
    with rasterio.open(real_rasters / name) as src:
        polygons = gpd.read_file(tmp_path / "p.gpkg")
        assert polygons.crs == src.crs
        if len(polygons):
            assert box(*src.bounds).buffer(1e-6).contains(polygons.union_all())


def test_geographic_raster_keeps_its_grid_and_areas_are_metres(tmp_path):
    data = np.zeros((3, 100, 120), dtype=np.uint8)
    data[:, 40:60, 50:80] = 255  # 20 x 30 pixels of 0.0001 degrees
    transform = from_origin(10.0, 45.0, 0.0001, 0.0001)
    path = write_raster(tmp_path / "geo.tif", data, crs="EPSG:4326", transform=transform)
    outputs = [tmp_path / "p.tif", tmp_path / "p.gpkg", tmp_path / "p.geojson"]
    segment(
        path,
        "the bright block",
        brightness(),
        outputs,
        SegmentOptions(tile_size=64, overlap=16, margin=4, vector=_no_simplify()),
    )
    _same_grid(path, outputs[0])
    polygons = gpd.read_file(outputs[1])
    assert len(polygons) == 1
    expected = box(10.0 + 50 * 1e-4, 45.0 - 60 * 1e-4, 10.0 + 80 * 1e-4, 45.0 - 40 * 1e-4)
    assert polygons.geometry[0].symmetric_difference(expected).area < 1e-12
    # 30 x 20 cells of 0.0001 deg at 45 N: about 7.87 m x 11.1 m each
    cell = 0.0001 * 111_320 * np.cos(np.radians(45.0)) * 0.0001 * 111_132
    assert polygons.area_m2[0] == pytest.approx(600 * cell, rel=0.01)


def _no_simplify():
    from rrsis_geo.geo.vectorize import VectorOptions

    return VectorOptions(sieve_pixels=16, simplify_pixels=0.0)


def test_polygon_matches_a_known_mask_in_map_coordinates(tmp_path):
    data = np.zeros((3, 300, 260), dtype=np.uint8)
    data[:, 100:180, 30:90] = 250  # the object: rows 100-180, cols 30-90
    data[:, 10:12, 200:202] = 250  # a 4-pixel blob, below the sieve
    path = write_raster(tmp_path / "in.tif", data)
    outputs = [
        tmp_path / "p.gpkg",
        tmp_path / "p.geojson",
        tmp_path / "p.fgb",
        tmp_path / "p.parquet",
        tmp_path / "p.shp",
    ]
    segment(
        path,
        "the bright square",
        brightness(),
        outputs,
        SegmentOptions(tile_size=64, overlap=16, margin=4, vector=_no_simplify()),
    )
    # origin (500000, 5000000), 0.5 m pixels
    expected = box(500_015.0, 4_999_910.0, 500_045.0, 4_999_950.0)
    for output in outputs:
        read = gpd.read_parquet if output.suffix == ".parquet" else gpd.read_file
        polygons = read(output)
        assert len(polygons) == 1, output
        row = polygons.iloc[0]
        geometry = polygons.to_crs("EPSG:32633").geometry[0]
        tolerance = 1e-6 if output.suffix != ".geojson" else 0.02  # RFC 7946: 7 decimals
        assert geometry.hausdorff_distance(expected) < tolerance, output
        assert row["area_m2"] == pytest.approx(30 * 40)
        assert row["expression"] == "the bright square"
        assert row["model"] == "reference/brightness"
        assert row["threshold"] == 0.5
        assert row["rank"] == 1
        assert row["score_mean"] > 0.9 and row["score_max"] >= row["score_mean"]
    assert gpd.read_file(tmp_path / "p.geojson").crs.to_epsg() == 4326


def test_nodata_collar_gets_no_probability_and_no_polygon(real_rasters, tmp_path):
    # RGB.byte.tif has a nodata=0 collar; a model that says "yes" everywhere must stay inside.
    from rrsis_geo.inference.reference_models import constant

    source = real_rasters / "RGB.byte.tif"
    outputs = [tmp_path / "p.tif", tmp_path / "p.gpkg"]
    segment(source, "everything", constant(value=0.9), outputs)
    with rasterio.open(source) as src, rasterio.open(outputs[0]) as out:
        collar = src.dataset_mask() == 0
        values = out.read(1)
        assert collar.any()
        assert out.nodata == 255
        assert np.all(values[collar] == 255)
        assert np.all(values[~collar] == round(0.9 * 254))
        assert out.read_masks(1)[collar].max() == 0
        inside = gpd.read_file(outputs[1]).union_all()
        data_footprint = box(*src.bounds)
        # no polygon over the collar: the polygon never touches the corners of the frame
        for x, y in [
            (src.bounds.left + 1, src.bounds.top - 1),
            (src.bounds.right - 1, src.bounds.bottom + 1),
        ]:
            from shapely.geometry import Point

            assert not inside.contains(Point(x, y))
        assert inside.area < data_footprint.area


def test_all_nodata_tiles_are_skipped_without_a_model_call(tmp_path):
    data = textured(3, 256, 256)
    data[:, :, :128] = 0
    path = write_raster(tmp_path / "in.tif", data, nodata=0)
    model = brightness()
    calls = []
    original = model.predict
    model.predict = lambda tiles, encoded: calls.append(len(tiles)) or original(tiles, encoded)
    result = segment(
        path,
        "x",
        model,
        [tmp_path / "p.tif"],
        SegmentOptions(tile_size=64, overlap=0, margin=0, batch_size=1),
    )
    assert result.tiles["total"] == 16
    assert result.tiles["skipped_nodata"] == 8
    assert sum(calls) == 8


def test_expression_is_encoded_once_per_run(tmp_path):
    path = write_raster(tmp_path / "in.tif", textured(3, 300, 300))
    model = brightness()
    result = segment(
        path,
        "x",
        model,
        [tmp_path / "p.tif"],
        SegmentOptions(tile_size=64, overlap=16, margin=4, batch_size=4),
    )
    assert result.tiles["predicted"] == 36
    assert model.expressions_encoded == 1


def test_resampling_to_a_ground_resolution_keeps_the_extent(tmp_path):
    path = write_raster(tmp_path / "in.tif", textured(3, 200, 300))  # 0.5 m pixels
    out = tmp_path / "p.tif"
    result = segment(path, "x", brightness(), [out], SegmentOptions(gsd=1.0))
    assert result.resampled
    with rasterio.open(path) as src, rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (150, 100)
        assert dst.res == pytest.approx((1.0, 1.0))
        assert tuple(dst.bounds) == pytest.approx(tuple(src.bounds))


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_other_pixel_types_and_a_single_band(tmp_path, dtype):
    path = write_raster(tmp_path / "in.tif", textured(1, 150, 170, dtype=dtype))
    out = tmp_path / "p.tif"
    result = segment(path, "x", brightness(), [out])
    assert result.bands == [1, 1, 1]
    with rasterio.open(out) as dst:
        values = dst.read(1)
    assert values.min() < 50 and values.max() > 200  # the stretch used the full range


def test_binary_output_and_sidecar(tmp_path):
    path = write_raster(tmp_path / "in.tif", textured(3, 100, 100))
    out = tmp_path / "mask.tif"
    segment(path, "x", brightness(), [out], SegmentOptions(raster_kind="binary", threshold=0.6))
    with rasterio.open(out) as dst:
        assert set(np.unique(dst.read(1))) <= {0, 1}
    sidecar = json.loads((tmp_path / "mask.tif.json").read_text())
    assert sidecar["threshold"] == 0.6
    assert sidecar["tiles"]["predicted"] == 1
    assert {"rrsis_geo", "rasterio", "gdal"} <= set(sidecar["versions"])
    assert sidecar["timings"]["total"] > 0


def test_a_sidecar_that_cannot_be_written_is_one_output_error(tmp_path):
    """A folder put where the sidecar goes after the run was checked: the outputs are complete,
    and the error names the sidecar instead of being an internal error."""
    from rrsis_geo.errors import OutputError
    from rrsis_geo.inference.pipeline import check_run

    path = write_raster(tmp_path / "in.tif", textured(3, 100, 100))
    out = tmp_path / "mask.tif"
    checked = check_run(path, "x", [out], SegmentOptions())
    (tmp_path / "mask.tif.json").mkdir()
    with pytest.raises(OutputError, match=r"mask\.tif\.json \(the outputs themselves are complete"):
        segment(path, "x", brightness(), [out], checked=checked)
    with rasterio.open(out) as dst:
        assert dst.read(1).shape == (100, 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "mask.tif", "mask.tif.json"]


@pytest.mark.parametrize("kind", ["alpha", "mask_band"])
def test_alpha_and_mask_bands_are_respected(tmp_path, kind):
    from rrsis_geo.inference.reference_models import constant

    data = textured(3, 120, 140)
    valid = np.ones((120, 140), dtype=bool)
    valid[:, :30] = False
    path = tmp_path / "in.tif"
    if kind == "alpha":
        alpha = np.where(valid, 255, 0).astype(np.uint8)[None]
        write_raster(path, np.concatenate([data, alpha]))
        with rasterio.open(path, "r+") as dst:
            dst.colorinterp = [*dst.colorinterp[:3], rasterio.enums.ColorInterp.alpha]
    else:
        write_raster(path, data)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    out = tmp_path / "p.tif"
    segment(path, "x", constant(value=0.5), [out], SegmentOptions(tile_size=64))
    with rasterio.open(out) as dst:
        values = dst.read(1)
    assert np.all(values[~valid] == 255)
    assert np.all(values[valid] == 127)
