"""The sentence grammar of scene-level referring (rrsis_geo.inference.sentence)."""

import dataclasses
import json

import pytest

from rrsis_geo.inference.sentence import KINDS, MEASURES, SceneQuery, parse_sentence

# sentence -> (description, kind, measure, descending, ordinal, count, region, anchor)
GRAMMAR = [
    # size
    ("The biggest storage tank.", "storage tank", "size", "area", True, 1, 1, None, None),
    ("The tiniest vehicle.", "vehicle", "size", "area", False, 1, 1, None, None),
    ("The largest white storage tank in the image.", "white storage tank", "size", "area",
     True, 1, 1, None, None),
    ("the second largest ship", "ship", "size", "area", True, 2, 1, None, None),
    ("The third smallest building.", "building", "size", "area", False, 3, 1, None, None),
    ("the 2nd largest ship", "ship", "size", "area", True, 2, 1, None, None),
    ("the second-largest tank", "tank", "size", "area", True, 2, 1, None, None),
    ("the three largest storage tanks", "storage tank", "size", "area", True, 1, 3, None, None),
    ("the 3 smallest ships", "ship", "size", "area", False, 1, 3, None, None),
    ("the two smallest buses", "bus", "size", "area", False, 1, 2, None, None),
    ("all ships", "ship", "size", None, False, 1, None, None, None),
    ("All the storage tanks in the image.", "storage tank", "size", None, False, 1, None, None,
     None),
    ("every storage tank", "storage tank", "size", None, False, 1, None, None, None),
    # extreme (map frame: top = north, right = east)
    ("The leftmost tennis court.", "tennis court", "extreme", "easting", False, 1, 1, None, None),
    ("the rightmost ship", "ship", "extreme", "easting", True, 1, 1, None, None),
    ("the right-most ship", "ship", "extreme", "easting", True, 1, 1, None, None),
    ("the northernmost ship", "ship", "extreme", "northing", True, 1, 1, None, None),
    ("the southernmost ship", "ship", "extreme", "northing", False, 1, 1, None, None),
    ("the easternmost ship", "ship", "extreme", "easting", True, 1, 1, None, None),
    ("the westernmost ship", "ship", "extreme", "easting", False, 1, 1, None, None),
    ("the top-most airplane", "airplane", "extreme", "northing", True, 1, 1, None, None),
    ("the uppermost airplane", "airplane", "extreme", "northing", True, 1, 1, None, None),
    ("the bottommost airplane", "airplane", "extreme", "northing", False, 1, 1, None, None),
    ("the lowest airplane", "airplane", "extreme", "northing", False, 1, 1, None, None),
    ("the second leftmost ship", "ship", "extreme", "easting", False, 2, 1, None, None),
    ("The ship that is closest to the top edge of the image.", "ship", "extreme", "northing",
     True, 1, 1, None, None),
    ("The swimming pool nearest to the bottom of the image.", "swimming pool", "extreme",
     "northing", False, 1, 1, None, None),
    ("the ship farthest from the left edge", "ship", "extreme", "easting", True, 1, 1, None,
     None),
    # order
    ("The first swimming pool from the left.", "swimming pool", "order", "easting", False, 1, 1,
     None, None),
    ("The second ship from the right.", "ship", "order", "easting", True, 2, 1, None, None),
    ("the first tank from the top", "tank", "order", "northing", True, 1, 1, None, None),
    ("the third building from the north", "building", "order", "northing", True, 3, 1, None,
     None),
    ("the 2nd vehicle from the bottom of the image", "vehicle", "order", "northing", False, 2, 1,
     None, None),
    ("the ship second from the left", "ship", "order", "easting", False, 2, 1, None, None),
    # region
    ("The airplane at the right of the image.", "airplane", "region", "region", False, 1, 1,
     (1, 2), None),
    ("the ship at the top right of the image", "ship", "region", "region", False, 1, 1, (0, 2),
     None),
    ("the ship in the top left corner", "ship", "region", "region", False, 1, 1, (0, 0), None),
    ("the ship in the top-right of the scene", "ship", "region", "region", False, 1, 1, (0, 2),
     None),
    ("The storage tank located in the center of the image.", "storage tank", "region", "region",
     False, 1, 1, (1, 1), None),
    ("the tank in the centre of the scene", "tank", "region", "region", False, 1, 1, (1, 1),
     None),
    ("the ship at the bottom of the image", "ship", "region", "region", False, 1, 1, (2, 1),
     None),
    ("the ship on the left side of the image", "ship", "region", "region", False, 1, 1, (1, 0),
     None),
    ("the ship at the top", "ship", "region", "region", False, 1, 1, (0, 1), None),
    ("the house in the southwest of the map", "house", "region", "region", False, 1, 1, (2, 0),
     None),
    ("all ships on the left side of the image", "ship", "region", "region", False, 1, None,
     (1, 0), None),
    ("The ship closest to the centre of the image.", "ship", "region", "centre_distance", False,
     1, 1, None, None),
    ("the ship nearest to the center of the scene", "ship", "region", "centre_distance", False,
     1, 1, None, None),
    ("the ship closest to the top left corner", "ship", "region", "region", False, 1, 1, (0, 0),
     None),
    # relation
    ("The airplane closest to the road.", "airplane", "relation", "anchor_distance", False, 1, 1,
     None, "road"),
    ("The vehicle that is nearest to the airplane.", "vehicle", "relation", "anchor_distance",
     False, 1, 1, None, "airplane"),
    ("The vehicle next to the road.", "vehicle", "relation", "anchor_distance", False, 1, 1,
     None, "road"),
    ("the ship nearest the pier", "ship", "relation", "anchor_distance", False, 1, 1, None,
     "pier"),
    ("the house near the road", "house", "relation", "anchor_distance", False, 1, 1, None,
     "road"),
    ("the ship farthest from the pier", "ship", "relation", "anchor_distance", True, 1, 1, None,
     "pier"),
    ("the ship furthest from the pier", "ship", "relation", "anchor_distance", True, 1, 1, None,
     "pier"),
    ("the closest vehicle to the airplane", "vehicle", "relation", "anchor_distance", False, 1,
     1, None, "airplane"),
    ("the second closest ship to the pier", "ship", "relation", "anchor_distance", False, 2, 1,
     None, "pier"),
    ("the three ships closest to the white pier", "ship", "relation", "anchor_distance", False,
     1, 3, None, "white pier"),
    # description: none of the scene-level words
    ("The red colored building.", "red colored building", "description", None, False, 1, 1,
     None, None),
    ("The white storage tank.", "white storage tank", "description", None, False, 1, 1, None,
     None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sentence", "description", "kind", "measure", "descending", "ordinal", "count", "region",
     "anchor"),
    GRAMMAR,
)  # fmt: skip
def test_grammar(sentence, description, kind, measure, descending, ordinal, count, region, anchor):
    query = parse_sentence(sentence)
    got = (query.description, query.kind, query.measure, query.descending, query.ordinal)
    assert got == (description, kind, measure, descending, ordinal)
    assert (query.count, query.region, query.anchor) == (count, region, anchor)
    assert query.kind in KINDS
    assert query.measure is None or query.measure in MEASURES


def test_the_table_covers_every_kind_and_measure():
    assert {row[2] for row in GRAMMAR} == set(KINDS)
    assert {row[3] for row in GRAMMAR} - {None} == set(MEASURES)


@pytest.mark.parametrize(
    "sentence",
    ["The white storage tank.", "a red colored building", "The two ships.", "the nearest ship"],
)
def test_no_scene_words_is_the_models_own_choice_with_the_whole_description(sentence):
    query = parse_sentence(sentence)
    assert query.kind == "description"
    assert query.measure is None
    assert (query.ordinal, query.count, query.region, query.anchor, query.words) == (
        1, 1, None, None, ""
    )  # fmt: skip
    # Only the article and the full stop go; every other word stays for the model.
    expected = sentence.lower().rstrip(".").removeprefix("the ").removeprefix("a ")
    assert query.description == expected


def test_an_edge_of_the_image_is_an_extreme_not_a_relation():
    query = parse_sentence("The ship closest to the top of the image.")
    assert (query.kind, query.measure, query.descending) == ("extreme", "northing", True)
    assert query.anchor is None and query.anchor_sentence is None
    assert query.words == "closest to the top"


def test_the_centre_of_the_image_is_centre_distance_not_a_relation():
    query = parse_sentence("The ship closest to the centre of the image.")
    assert (query.kind, query.measure, query.descending) == ("region", "centre_distance", False)
    assert query.region is None and query.anchor is None
    farthest = parse_sentence("the ship farthest from the center")
    assert (farthest.measure, farthest.descending) == ("centre_distance", True)


def test_the_edge_alone_is_no_relation():
    query = parse_sentence("the ship closest to the edge of the image")
    assert query.anchor is None
    assert query.kind == "description"


@pytest.mark.parametrize(
    ("sentence", "description", "count"),
    [
        ("the three largest storage tanks", "storage tank", 3),
        ("all ships", "ship", None),
        ("the two smallest buses", "bus", 2),
        ("the four largest factories", "factory", 4),
        ("all the boxes", "box", None),
        ("every bus", "bus", None),
        ("all tennis courts", "tennis court", None),
        ("the two largest tanks of oil", "tank of oil", 2),
    ],
)
def test_plurals_are_singular_when_several_are_asked_for(sentence, description, count):
    query = parse_sentence(sentence)
    assert (query.description, query.count) == (description, count)
    assert query.model_sentence == f"The {description}."


def test_a_single_referent_keeps_the_words_as_written():
    assert parse_sentence("the largest glass").description == "glass"
    assert parse_sentence("the largest buses").description == "buses"


def test_model_and_anchor_sentences():
    query = parse_sentence("the second largest white storage tank in the image.")
    assert query.model_sentence == "The white storage tank."
    assert query.anchor_sentence is None
    relation = parse_sentence("The airplane closest to the road.")
    assert relation.model_sentence == "The airplane."
    assert relation.anchor_sentence == "The road."


def test_text_is_whitespace_normalized_and_words_are_as_matched():
    query = parse_sentence("  The   second largest\tship.  ")
    assert query.text == "The second largest ship."
    assert query.words == "second largest"
    assert parse_sentence("the three largest ships").words == "three largest"
    assert parse_sentence("The second ship from the right.").words == "second from the right"


@pytest.mark.parametrize(
    ("sentence", "lines"),
    [
        (
            "The second largest white storage tank.",
            ['target: "white storage tank"', 'scene words: "second largest"',
             "ranked by: area, largest first", "referent: 2nd"],
        ),
        (
            "the three smallest ships",
            ['target: "ship"', 'scene words: "three smallest"', "ranked by: area, smallest first",
             "referents: the 3 first"],
        ),
        (
            "all ships",
            ['target: "ship"', 'scene words: "all"',
             "ranked by: nothing, every candidate of the target", "referents: all of them"],
        ),
        (
            "The airplane closest to the road.",
            ['target: "airplane"', 'scene words: "closest to the road"',
             'anchor: "road" (distance in metres, closest first)', "referent: 1st"],
        ),
        (
            "the ship at the top right of the image",
            ['target: "ship"', 'scene words: "at the top right"',
             "region: top right ninth of the scene (north up)",
             "ranked by: in that ninth first, then distance from its centre in metres, "
             "closest first",
             "referent: 1st"],
        ),
        (
            "The leftmost tennis court.",
            ['target: "tennis court"', 'scene words: "leftmost"',
             "ranked by: easting (north up), westernmost (left) first", "referent: 1st"],
        ),
        (
            "the ship closest to the centre",
            ['target: "ship"', 'scene words: "closest to the centre"',
             "ranked by: distance from the scene centre in metres, closest first",
             "referent: 1st"],
        ),
        (
            "The red colored building.",
            ['target: "red colored building"', "no scene-level words: the model's own choice"],
        ),
    ],
)  # fmt: skip
def test_explain(sentence, lines):
    assert parse_sentence(sentence).explain().splitlines() == lines


def test_explain_of_places_after_the_first():
    query = dataclasses.replace(parse_sentence("the three largest ships"), ordinal=2)
    assert query.explain().splitlines()[-1] == "referents: 3 from the 2nd"
    assert parse_sentence("the 12th largest ship").explain().splitlines()[-1] == "referent: 12th"


def test_to_dict_is_json_ready_and_complete():
    query = parse_sentence("the ship in the bottom left corner of the image")
    data = query.to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(SceneQuery)} | {
        "model_sentence", "anchor_sentence"
    }  # fmt: skip
    assert data["region"] == [2, 0]
    assert data["kind"] == "region" and data["measure"] == "region"
    assert data["model_sentence"] == "The ship."
    assert data["anchor_sentence"] is None
    assert json.loads(json.dumps(data)) == data
    relation = parse_sentence("the vehicle next to the road").to_dict()
    assert (relation["anchor"], relation["anchor_sentence"]) == ("road", "The road.")
    assert relation["region"] is None


@pytest.mark.parametrize("text", ["", " ", "\t\n  "])
def test_empty_text_raises(text):
    with pytest.raises(ValueError, match="empty"):
        parse_sentence(text)


def test_a_query_built_by_hand_is_checked():
    with pytest.raises(ValueError, match="kind"):
        SceneQuery("t", "ship", "biggest", "area")
    with pytest.raises(ValueError, match="measure"):
        SceneQuery("t", "ship", "size", "volume")
    with pytest.raises(ValueError, match="start at 1"):
        SceneQuery("t", "ship", "size", "area", ordinal=0)


def test_parsing_is_deterministic_and_case_insensitive():
    assert parse_sentence("THE LARGEST SHIP.") == dataclasses.replace(
        parse_sentence("the largest ship."), text="THE LARGEST SHIP."
    )
    assert parse_sentence("The biggest tank.") == parse_sentence("The biggest tank.")
