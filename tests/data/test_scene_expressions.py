"""Scene-level sentences of the synthetic world: the grammar reads them, the oracle answers them."""

import json
from collections import Counter

import numpy as np
import pytest
import shapely.affinity
from rasterio.crs import CRS
from rasterio.transform import from_origin
from shapely.geometry import box

from rrsis_geo.data.synth import make_expressions, render_world, scene_paths, write_scene
from rrsis_geo.data.synth.export import SCENE_CRS, SCENE_ORIGIN
from rrsis_geo.data.synth.scene_expressions import (
    SCENE_KINDS,
    SceneExpression,
    make_scene_expressions,
)
from rrsis_geo.data.synth.world import GSD

SIDE = 2048
# Frames whose sentences cover all five kinds.
SEEDS = (3, 5)


@pytest.fixture(scope="module")
def worlds():
    return {seed: render_world(np.random.default_rng(seed), SIDE, SIDE) for seed in SEEDS}


@pytest.fixture(scope="module")
def sentences(worlds):
    return {
        seed: make_scene_expressions(np.random.default_rng([seed, 1]), world)
        for seed, world in worlds.items()
    }


def test_kinds_and_referents(worlds, sentences):
    for seed, found in sentences.items():
        ids = {o.object_id: o for o in worlds[seed].objects}
        kinds = Counter(e.kind for e in found)
        assert set(kinds) == set(SCENE_KINDS), (seed, kinds)
        assert max(kinds.values()) <= 3
        assert len({e.text for e in found}) == len(found)
        for expression in found:
            assert isinstance(expression, SceneExpression)
            assert expression.object_ids
            assert all(ids[i].category == expression.category for i in expression.object_ids)
            assert (expression.kind == "relation") == (expression.anchor_category is not None)
            if expression.anchor_category is not None:
                anchors = [o for o in ids.values() if o.category == expression.anchor_category]
                assert anchors
                assert expression.anchor_category not in ("vehicle", expression.category)
            assert expression.category != "vehicle"


def test_same_seed_same_sentences(worlds, sentences):
    seed = SEEDS[0]
    again = make_scene_expressions(np.random.default_rng([seed, 1]), worlds[seed])
    assert again == sentences[seed]
    fewer = make_scene_expressions(np.random.default_rng([seed, 1]), worlds[seed], per_kind=1)
    assert Counter(e.kind for e in fewer) == dict.fromkeys(SCENE_KINDS, 1)


def test_every_sentence_parses_to_its_kind(sentences):
    sentence = pytest.importorskip("rrsis_geo.inference.sentence")
    for found in sentences.values():
        for expression in found:
            query = sentence.parse_sentence(expression.text)
            assert query.kind == expression.kind, expression.text
            assert query.description == expression.category, expression.text
            assert query.anchor == expression.anchor_category, expression.text


def _regions(objects, region_type):
    transform = from_origin(*SCENE_ORIGIN, GSD, GSD)
    to_map = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    return [
        region_type(
            geometry=shapely.affinity.affine_transform(o.polygon, to_map),
            score_mean=0.9,
            score_max=1.0,
            area_m2=o.area_px * GSD * GSD,
            presence=None,
        )
        for o in objects
    ]


def test_oracle_regions_choose_the_referent(worlds, sentences):
    """The true objects as regions: the resolver picks exactly the referent of every sentence."""
    sentence = pytest.importorskip("rrsis_geo.inference.sentence")
    referring = pytest.importorskip("rrsis_geo.inference.referring")
    regions_module = pytest.importorskip("rrsis_geo.inference.regions")
    west, north = SCENE_ORIGIN
    footprint = box(west, north - SIDE * GSD, west + SIDE * GSD, north)
    frame = regions_module.SceneFrame.from_footprint(footprint, CRS.from_user_input(SCENE_CRS))
    checked = 0
    for seed, found in sentences.items():
        objects = worlds[seed].objects
        for expression in found:
            targets = [o for o in objects if o.category == expression.category]
            anchors = [o for o in objects if o.category == expression.anchor_category]
            ranking = referring.rank_regions(
                sentence.parse_sentence(expression.text),
                _regions(targets, regions_module.Region),
                frame,
                _regions(anchors, regions_module.Region) if anchors else None,
            )
            chosen = tuple(targets[i].object_id for i in ranking.chosen)
            assert chosen == expression.object_ids, expression.text
            checked += 1
    assert checked == sum(len(f) for f in sentences.values())


def test_write_scene_writes_them_and_keeps_the_other_bytes(tmp_path, worlds):
    seed = SEEDS[0]
    paths = write_scene(tmp_path / "scene.tif", seed=seed, world=worlds[seed])
    assert paths == scene_paths(tmp_path / "scene.tif")
    written = json.loads(paths["scene_expressions"].read_text())
    expected = make_scene_expressions(np.random.default_rng([seed, 1]), worlds[seed])
    assert written == [e.to_dict() for e in expected]
    assert written and set(written[0]) == {
        "text",
        "kind",
        "object_ids",
        "category",
        "anchor_category",
    }
    # Their own generator: the scene's expressions are drawn as before.
    rng = np.random.default_rng(seed)
    before = make_expressions(rng, worlds[seed], per_kind=5, negatives=1.0)
    assert json.loads(paths["expressions"].read_text()) == [e.to_dict() for e in before]
