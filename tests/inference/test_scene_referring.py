"""Scene-level referring through the real pipeline: map-frame extremes, seams, absent targets.

The brightness reference model marks bright pixels exactly, so the regions are known and what
is tested is the pipeline's regions, the frame they are compared in and the choice.
"""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject
from shapely.geometry import Point

from rrsis_geo.inference.pipeline import SegmentOptions, segment
from rrsis_geo.inference.reference_models import brightness
from tests.rasters import write_raster

X0, Y0, PIXEL = 500_000.0, 5_000_000.0, 0.5
# (row, col) of the top-left corner of 16 x 16 bright squares in a 320 x 320 north-up scene.
SQUARES = {"north": (20, 150), "west": (150, 12), "south": (280, 200), "middle": (140, 170)}
SIZE = 320


def _north_up_data() -> np.ndarray:
    data = np.full((3, SIZE, SIZE), 40, np.uint8)
    for row, col in SQUARES.values():
        data[:, row : row + 16, col : col + 16] = 250
    return data


def _centre(name: str) -> Point:
    """Where a square's centre is on the map (EPSG:32633), whatever the raster's layout."""
    row, col = SQUARES[name]
    return Point(X0 + (col + 8) * PIXEL, Y0 - (row + 8) * PIXEL)


def _layouts(folder):
    data = _north_up_data()
    north_up = Affine(PIXEL, 0, X0, 0, -PIXEL, Y0)
    yield "north-up", write_raster(folder / "north_up.tif", data, transform=north_up)
    # Row 0 is the southern edge: the y axis of the grid points north.
    south_up = Affine(PIXEL, 0, X0, 0, PIXEL, Y0 - SIZE * PIXEL)
    yield "south-up", write_raster(folder / "south_up.tif", data[:, ::-1], transform=south_up)
    # The grid turned a quarter: its columns run south, its rows run west.
    rotated = Affine(0, -PIXEL, X0 + SIZE * PIXEL, -PIXEL, 0, Y0)
    turned = np.rot90(data, k=1, axes=(1, 2))
    yield (
        "rotated 90",
        write_raster(folder / "rotated.tif", np.ascontiguousarray(turned), transform=rotated),
    )
    geographic = folder / "wgs84.tif"
    with rasterio.open(folder / "north_up.tif") as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds
        )
        profile = src.profile | {
            "crs": "EPSG:4326",
            "transform": transform,
            "width": width,
            "height": height,
        }
        with rasterio.open(geographic, "w", **profile) as dst:
            for band in range(1, 4):
                reproject(
                    rasterio.band(src, band),
                    rasterio.band(dst, band),
                    resampling=Resampling.nearest,
                )
    yield "EPSG:4326", geographic


def _chosen_centre(path) -> Point:
    polygons = gpd.read_file(path).to_crs("EPSG:32633")
    assert len(polygons) == 1, path
    return polygons.geometry.iloc[0].centroid


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("the northernmost bright square", "north"),
        ("the westernmost bright square", "west"),
        ("the bright square at the bottom right of the image", "south"),
        ("the topmost bright square", "north"),
    ],
)
def test_map_frame_words_choose_the_same_object_in_every_layout(tmp_path, sentence, expected):
    options = SegmentOptions(tile_size=128, overlap=32, margin=8)
    for name, raster in _layouts(tmp_path):
        out = tmp_path / f"{raster.stem}.gpkg"
        segment(raster, sentence, brightness(), [out], options)
        centre = _chosen_centre(out)
        # A reprojected raster moves edges by up to a resampled pixel.
        assert centre.distance(_centre(expected)) < 2.0, (name, centre)


def test_an_object_cut_by_tile_seams_is_one_candidate_and_one_polygon(tmp_path):
    data = np.full((3, 200, 200), 40, np.uint8)
    # Tiles of 64 with overlap 16 start at 0, 48, 96, 136: this object spans four tiles.
    data[:, 30:110, 40:120] = 250
    data[:, 160:170, 160:170] = 250  # a smaller second object
    raster = write_raster(tmp_path / "seam.tif", data)
    out, candidates = tmp_path / "largest.gpkg", tmp_path / "candidates.gpkg"
    result = segment(
        raster,
        "the largest bright square",
        brightness(),
        [out],
        SegmentOptions(tile_size=64, overlap=16, margin=4, candidates=candidates),
    )
    layer = gpd.read_file(candidates)
    assert len(layer) == 2
    chosen = gpd.read_file(out)
    assert len(chosen) == 1
    assert chosen.area_m2.iloc[0] == pytest.approx(80 * 80 * PIXEL * PIXEL, rel=0.02)
    assert list(layer["rank"]) == [1, 2] and list(layer["chosen"]) == [True, False]
    assert layer["measure"].iloc[0] == "area"
    assert layer["value"].iloc[0] == pytest.approx(chosen.area_m2.iloc[0])
    assert result.choice["chosen"] == [1] and result.referent_found


def test_ordinals_counts_and_every_instance(tmp_path):
    raster = write_raster(tmp_path / "s.tif", _north_up_data())
    options = SegmentOptions(tile_size=128, overlap=32, margin=8)

    def chosen(sentence):
        out = tmp_path / "o.gpkg"
        segment(
            raster,
            sentence,
            brightness(),
            [out],
            options.__class__(**{**options.__dict__, "overwrite": True}),
        )
        frame = gpd.read_file(out)
        return sorted(frame.geometry.centroid.distance(_centre(n)).idxmin() for n in SQUARES), frame

    # order from the left (west): west (col 12), north (150), middle (170), south (200)
    _, frame = chosen("the second bright square from the left")
    assert frame.geometry.iloc[0].centroid.distance(_centre("north")) < 1
    _, frame = chosen("the two northernmost bright squares")
    assert len(frame) == 2
    assert frame.geometry.iloc[0].centroid.distance(_centre("north")) < 1
    assert frame.geometry.iloc[1].centroid.distance(_centre("middle")) < 1
    _, frame = chosen("all bright squares")
    assert len(frame) == 4


def test_restricted_raster_keeps_only_the_referent(tmp_path):
    raster = write_raster(tmp_path / "s.tif", _north_up_data())
    out = tmp_path / "north.tif"
    segment(raster, "the northernmost bright square", brightness(), [out],
            SegmentOptions(tile_size=128, overlap=32, margin=8))  # fmt: skip
    with rasterio.open(out) as dataset:
        values = dataset.read(1)
    row, col = SQUARES["north"]
    assert values[row + 8, col + 8] > 240
    for name in ("west", "south", "middle"):
        row, col = SQUARES[name]
        assert values[row + 8, col + 8] == 0, name


@pytest.mark.parametrize("strategy", ["scene", "tile"])
def test_a_probability_map_alone_finds_no_region(tmp_path, strategy):
    # Only the map of a sentence without scene words is asked for: the map is the answer, and
    # regions (which cost far more than the tiles on a large noisy map) are never found.
    raster = write_raster(tmp_path / "s.tif", _north_up_data())
    options = SegmentOptions(tile_size=128, overlap=32, margin=8, strategy=strategy)
    result = segment(raster, "bright squares", brightness(), [tmp_path / "map.tif"], options)
    assert result.referent_found is None and result.passes[0]["regions"] is None
    assert result.choice["note"].startswith("no referent chosen: only the probability map")
    with rasterio.open(tmp_path / "map.tif") as dataset:
        values = dataset.read(1)
    assert all(values[row + 8, col + 8] > 240 for row, col in SQUARES.values())
    with_polygons = segment(raster, "bright squares", brightness(),
                            [tmp_path / "m2.tif", tmp_path / "m2.gpkg"], options)  # fmt: skip
    assert with_polygons.passes[0]["regions"] == len(SQUARES)
    assert with_polygons.referent_found


def test_absent_target_writes_no_polygon_and_says_so(tmp_path):
    raster = write_raster(tmp_path / "dark.tif", np.full((3, 100, 100), 30, np.uint8))
    out, sidecar_of = tmp_path / "o.gpkg", tmp_path / "o.gpkg.json"
    result = segment(raster, "the largest bright square", brightness(), [out])
    assert not result.referent_found
    assert result.choice["note"].startswith("no referent found")
    assert len(gpd.read_file(out)) == 0
    assert json.loads(sidecar_of.read_text())["referent_found"] is False


def test_all_in_a_region_keeps_only_that_ninth(tmp_path):
    raster = write_raster(tmp_path / "s.tif", _north_up_data())
    out = tmp_path / "left.gpkg"
    segment(raster, "all bright squares on the left side of the image", brightness(), [out],
            SegmentOptions(tile_size=128, overlap=32, margin=8))  # fmt: skip
    frame = gpd.read_file(out)
    assert len(frame) == 1
    assert frame.geometry.iloc[0].centroid.distance(_centre("west")) < 1
