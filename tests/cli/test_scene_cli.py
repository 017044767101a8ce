"""Scene-level referring through the real CLI with the shipped default model."""

import json

import geopandas as gpd
import numpy as np
import rasterio
import shapely

from rrsis_geo.data.synth import scene_paths
from tests.inference.test_default_model import EXAMPLE, rrsis


def test_absent_category_writes_no_polygon_exits_zero_and_says_so(tmp_path):
    out = tmp_path / "plane.gpkg"
    run = rrsis("segment", EXAMPLE, "The largest airplane.", "-o", out, "--progress", "none")
    assert run.returncode == 0, run.stderr
    assert "no referent found" in run.stderr
    assert len(gpd.read_file(out)) == 0
    summary = json.loads(out.with_name(out.name + ".json").read_text())
    assert summary["referent_found"] is False and summary["choice"]["chosen"] == []


def test_sentence_without_scene_words_on_one_tile_gives_the_per_tile_output(tmp_path):
    outputs = {}
    for strategy in ("tile", "scene"):
        raster, polygons = tmp_path / f"{strategy}.tif", tmp_path / f"{strategy}.gpkg"
        run = rrsis("segment", EXAMPLE, "The white storage tank.", "-o", raster, "-o", polygons,
                    "--strategy", strategy, "--json")  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["tiles"]["total"] == 1
        with rasterio.open(raster) as dataset:
            outputs[strategy] = (dataset.read(), gpd.read_file(polygons))
    (tile_pixels, tile_polygons), (scene_pixels, scene_polygons) = outputs["tile"], outputs["scene"]
    np.testing.assert_array_equal(tile_pixels, scene_pixels)
    assert len(tile_polygons) == len(scene_polygons) == 1
    assert tile_polygons.geometry.iloc[0].equals(scene_polygons.geometry.iloc[0])
    columns = ["rank", "score_mean", "score_max", "area_m2", "expression", "model", "threshold"]
    assert tile_polygons[columns].equals(scene_polygons[columns])


def test_largest_tank_with_candidates_and_explain(tmp_path):
    out, candidates = tmp_path / "tank.gpkg", tmp_path / "tanks.fgb"
    run = rrsis("segment", EXAMPLE, "the largest storage tank", "-o", out,
                "--candidates", candidates, "--explain", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert 'rrsis: reading: target: "storage tank"' in run.stderr
    summary = json.loads(run.stdout)
    assert summary["strategy"] == "scene" and summary["reading"]["kind"] == "size"
    assert summary["choice"]["measure"] == "area" and summary["referent_found"]
    # FlatGeobuf stores features in its spatial index's order: read them back by rank.
    layer = gpd.read_file(candidates).sort_values("rank").reset_index(drop=True)
    truth = gpd.read_file(scene_paths(EXAMPLE)["objects"])
    tanks = truth[truth["category"] == "storage tank"]
    assert len(layer) >= len(tanks) == 3
    assert list(layer["rank"]) == list(range(1, len(layer) + 1))
    assert set(layer["reason"].iloc[1:]) == {"ranked after the referent"}
    assert layer["chosen"].sum() == 1 and layer["chosen"].iloc[0]
    assert layer["value"].iloc[0] == layer["value"].max()  # ranked by area, largest first
    largest = tanks.loc[tanks["area_m2"].idxmax()].geometry
    found = shapely.union_all(gpd.read_file(out).geometry.to_list())
    assert found.intersection(largest).area / found.union(largest).area > 0.8
    # The referent was checked against the model's seven categories before it was chosen.
    assert layer["reads_as"].iloc[0] == "storage tank" and layer["reads_as_score"].iloc[0] > 0.5
    assert summary["tiles"]["checked_regions"] >= 1
    assert summary["tiles"]["check_forwards"] == 7 * summary["tiles"]["checked_regions"]
    assert summary["choice"]["top"][0]["reads_as"] == "storage tank"
    assert layer["mended_from_m2"].isna().iloc[0]  # a whole tank, not a mended piece
    assert summary["choice"]["top"][0]["mended_from_m2"] is None


def test_no_check_and_own_vocabulary(tmp_path):
    forwards = {}
    for name, flags in {
        "none": ["--no-check"],
        "two": ["--vocabulary", "storage tank, building"],
    }.items():
        out, candidates = tmp_path / f"{name}.gpkg", tmp_path / f"{name}_all.gpkg"
        run = rrsis("segment", EXAMPLE, "the smallest storage tank", "-o", out,
                    "--candidates", candidates, "--json", *flags)  # fmt: skip
        assert run.returncode == 0, run.stderr
        tiles = json.loads(run.stdout)["tiles"]
        forwards[name] = (tiles["checked_regions"], tiles["check_forwards"])
        layer = gpd.read_file(candidates)
        assert len(gpd.read_file(out)) == 1
        if name == "none":
            assert set(layer["reads_as"]) == {""}
        else:
            assert set(layer["reads_as"]) <= {"", "storage tank", "building"}
    assert forwards["none"] == (0, 0)
    checked, made = forwards["two"]
    assert checked >= 1 and made == 2 * checked
    run = rrsis("segment", EXAMPLE, "the smallest storage tank", "-o", tmp_path / "x.gpkg",
                "--vocabulary", " , ")  # fmt: skip
    assert run.returncode == 1 and "--vocabulary names no category" in run.stderr
    assert not (tmp_path / "x.gpkg").exists()
