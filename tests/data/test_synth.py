"""The synthetic referring benchmark: determinism, agreement of pixels, masks and polygons."""

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features

from rrsis_geo.data.readers import open_dataset
from rrsis_geo.data.synth import (
    CATEGORIES,
    EXPRESSION_TYPES,
    SCENE_CRS,
    chip_world,
    make_expressions,
    render_world,
    scene_paths,
    write_chips,
    write_scene,
)
from rrsis_geo.data.synth.world import PALETTES
from rrsis_geo.errors import InputError, OutputError


def file_bytes(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_every_instance_samples_mark_every_object_and_change_no_other(tmp_path):
    plain = write_chips(tmp_path / "plain", "train", 6, seed=5)
    summary = write_chips(tmp_path / "every", "train", 6, seed=5, every_instance=True)
    assert "every" not in plain.kinds and summary.kinds["every"] >= 1

    def records(folder):
        lines = (tmp_path / folder / "synth_train.jsonl").read_text().splitlines()
        return {r["sample_id"]: r for r in map(json.loads, lines)}

    before, after = records("plain"), records("every")
    assert all(after[name] == record for name, record in before.items())
    added = [after[name] for name in after if name not in before]
    assert [r["kind"] for r in added] == ["every", "negative"] * summary.kinds["every"]
    samples = open_dataset(tmp_path / "every", "train", "risbench")
    index = {sample.sample_id: sample for sample in samples}
    for record in added:
        world = chip_world(record["seed"], record["image_index"])
        ids = [o.object_id for o in world.objects if o.category == record["category_name"]]
        mask = index[record["sample_id"]].mask
        # The bare category's words: "The ship.", "The ships.", "All the ships."
        assert record["sent"].lower().rstrip(".").rstrip("s").endswith(record["category_name"])
        if record["kind"] == "negative":
            assert not ids and not mask.any()
            continue
        assert len(ids) >= 2
        assert sorted([record["object_id"], *record["other_object_ids"]]) == sorted(ids)
        assert np.array_equal(mask, np.isin(world.labels, ids))


def test_chips_same_seed_same_bytes(tmp_path):
    write_chips(tmp_path / "a", "test", 3, seed=11)
    write_chips(tmp_path / "b", "test", 3, seed=11)
    write_chips(tmp_path / "c", "test", 3, seed=12)
    first, again, other = (file_bytes(tmp_path / n) for n in "abc")
    assert first == again
    assert len(first) > 6
    assert first != other


def test_chips_are_a_risbench_split_the_reader_consumes(tmp_path):
    summary = write_chips(tmp_path, "test", 6, seed=3)
    samples = open_dataset(tmp_path, "test", "risbench")
    records = [
        json.loads(line) for line in (tmp_path / "synth_test.jsonl").read_text().splitlines()
    ]
    kinds = json.loads((tmp_path / "expression_kinds_test.json").read_text())
    assert len(samples) == len(records) == len(kinds) == summary.samples
    assert set(summary.kinds) <= set(EXPRESSION_TYPES)
    for sample, record in zip(samples, records, strict=True):
        assert sample.sample_id == record["sample_id"]
        assert sample.expression == record["sent"]
        assert kinds[sample.sample_id] == record["kind"]
        assert sample.image.shape == (512, 512, 3) and sample.mask.shape == (512, 512)
        # A negative refers to nothing; every other expression to one whole object.
        assert sample.mask.any() == (record["kind"] != "negative")
        if record["kind"] == "negative":
            assert record["object_id"] == 0
        else:
            assert record["category_name"] in sample.expression.lower()
        # The chip's frame can be drawn again, with the labels that tell its objects apart.
        world = chip_world(record["seed"], record["image_index"])
        assert np.array_equal(world.image, sample.image)
        assert np.array_equal(world.labels == record["object_id"], sample.mask) or (
            record["object_id"] == 0
        )


def test_chip_split_is_not_replaced_without_overwrite(tmp_path):
    write_chips(tmp_path, "val", 1, seed=0)
    before = file_bytes(tmp_path)
    with pytest.raises(OutputError, match="use --overwrite"):
        write_chips(tmp_path, "val", 2, seed=1)
    assert file_bytes(tmp_path) == before
    write_chips(tmp_path, "val", 1, seed=1, overwrite=True)
    assert file_bytes(tmp_path) != before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_chip_arguments_are_refused(tmp_path):
    with pytest.raises(InputError, match="at least 1"):
        write_chips(tmp_path, "train", 0, seed=0)
    with pytest.raises(InputError, match="plain name"):
        write_chips(tmp_path, "../x", 1, seed=0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    # Larger than a chip, so the scene layout (lakes, several roads) is what is drawn.
    path = tmp_path_factory.mktemp("scene") / "synthetic.tif"
    write_scene(path, size=1280, seed=4)
    return path


def test_scene_pixels_masks_and_geopackage_agree(scene):
    paths = scene_paths(scene)
    with rasterio.open(paths["image"]) as image_file, rasterio.open(paths["labels"]) as labels_file:
        assert image_file.crs.to_string() == SCENE_CRS == labels_file.crs.to_string()
        assert image_file.transform == labels_file.transform
        assert image_file.block_shapes[0] == (512, 512)
        assert image_file.count == 3 and labels_file.dtypes[0] == "uint16"
        image = np.moveaxis(image_file.read(), 0, -1)
        labels = labels_file.read(1)
        transform = image_file.transform
    objects = gpd.read_file(paths["objects"])
    assert objects.crs.to_string() == SCENE_CRS
    assert len(objects) >= 10
    assert set(objects["category"]) <= set(CATEGORIES)
    # The GeoPackage polygons, burnt on the scene's grid, are exactly the label raster.
    burnt = rasterio.features.rasterize(
        zip(objects.geometry, objects["object_id"], strict=True),
        out_shape=labels.shape,
        transform=transform,
        dtype="uint16",
    )
    np.testing.assert_array_equal(burnt, labels)
    for row in objects.itertuples():
        inside = labels == row.object_id
        assert row.area_m2 == pytest.approx(row.geometry.area, abs=1e-3)
        assert inside.sum() * 0.09 == pytest.approx(row.area_m2, rel=0.25, abs=3.0)
        # The pixels of an object are drawn in the colour the GeoPackage names.
        median = np.median(image[inside], axis=0)
        palette = np.asarray(PALETTES[row.category][row.colour])
        assert np.abs(median - palette).max() < 45, (row.category, row.colour, median)
    expressions = json.loads(paths["expressions"].read_text())
    ids = set(objects["object_id"])
    assert {e["kind"] for e in expressions} <= set(EXPRESSION_TYPES)
    for expression in expressions:
        if expression["kind"] == "negative":
            assert expression["object_id"] == 0
            assert expression["category"] not in set(objects["category"])
        else:
            assert expression["object_id"] in ids


def test_scene_same_seed_same_bytes(tmp_path):
    for name in ("a", "b"):
        write_scene(tmp_path / name / "s.tif", size=300, seed=9)
    write_scene(tmp_path / "c" / "s.tif", size=300, seed=10)
    first, again, other = (file_bytes(tmp_path / n) for n in "abc")
    assert first == again and len(first) == 5
    assert first != other


def test_superlatives_and_relations_name_the_right_object():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        world = render_world(rng, 512, 512)
        by_id = {o.object_id: o for o in world.objects}
        for expression in make_expressions(rng, world, per_kind=3, negatives=1.0):
            text = expression.text.lower()
            if expression.kind == "negative":
                assert expression.category not in {o.category for o in world.objects}
                continue
            target = by_id[expression.object_id]
            same = [o for o in world.objects if o.category == target.category and o is not target]
            if "largest" in text or "biggest" in text:
                assert all(target.area_px > o.area_px for o in same)
            if "smallest" in text or "tiniest" in text:
                assert all(target.area_px < o.area_px for o in same)
            if "leftmost" in text or ("first" in text and "left" in text):
                assert all(target.centre[0] < o.centre[0] for o in same)
            if "second" in text and "left" in text:
                assert sum(o.centre[0] < target.centre[0] for o in same) == 1


def test_synth_cli_writes_a_split_and_refuses_bad_output(tmp_path):
    def rrsis(*args):
        return subprocess.run(
            [sys.executable, "-m", "rrsis_geo", "data", "synth", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    run = rrsis(
        "chips", tmp_path / "d", "--split", "test", "--images", "2", "--seed", "5", "--json"
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["images"] == 2 and summary["samples"] == len(
        (tmp_path / "d" / "output_phrase_test.txt").read_text().splitlines()
    )
    every = rrsis(
        "chips", tmp_path / "d", "--split", "train", "--images", "2", "--every-instance", "--json"
    )
    assert every.returncode == 0, every.stderr
    assert json.loads(every.stdout)["kinds"].get("every", 0) >= 1
    again = rrsis("chips", tmp_path / "d", "--split", "test", "--images", "2")
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "use --overwrite" in again.stderr
    bad = rrsis("scene", tmp_path / "scene.png", "--size", "128")
    assert bad.returncode == 1 and "GeoTIFF" in bad.stderr
    assert not list(tmp_path.glob("scene*"))
