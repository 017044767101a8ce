"""The check of candidates against the model's vocabulary, and the ranking that asks for it."""

import geopandas as gpd
import pytest
from shapely.geometry import box

from rrsis_geo.data.synth import scene_paths
from rrsis_geo.geo.reading import open_scene
from rrsis_geo.inference.model import default_model, load_model
from rrsis_geo.inference.pipeline import SegmentOptions, scene_statistics
from rrsis_geo.inference.referring import rank_regions
from rrsis_geo.inference.regions import Region, SceneFrame, Verdict
from rrsis_geo.inference.sentence import parse_sentence
from rrsis_geo.inference.verification import (
    CandidateChecker,
    chip_window,
    description_category,
)
from tests.inference.test_default_model import EXAMPLE

VOCABULARY = ("storage tank", "tank", "building", "vehicle")


@pytest.mark.parametrize(
    ("description", "category"),
    [
        ("white storage tank", "storage tank"),  # the longest category named wins
        ("storage tank", "storage tank"),
        ("small gray tank", "tank"),
        ("red Vehicle", "vehicle"),
        ("tanker", None),  # whole words only
        ("ship", None),
    ],
)
def test_description_category(description, category):
    assert description_category(description, VOCABULARY) == category


def test_chip_window_is_centred_and_stays_inside():
    assert chip_window((100, 200, 120, 220), 64, 1000, 1000).flatten() == (78, 178, 64, 64)
    assert chip_window((0, 0, 4, 4), 64, 1000, 1000).flatten() == (0, 0, 64, 64)
    assert chip_window((990, 995, 999, 999), 64, 1000, 1000).flatten() == (936, 936, 64, 64)
    assert chip_window((10, 10, 20, 20), 64, 40, 30).flatten() == (0, 0, 40, 30)


def test_verdict_reads_as_the_best_category_its_own_on_a_tie():
    tie = Verdict("building", {"building": 0.8, "vehicle": 0.8})
    assert tie.reads_as == "building" and tie.accepted and tie.reason == ""
    other = Verdict("building", {"building": 0.12, "vehicle": 0.98})
    assert other.reads_as == "vehicle" and not other.accepted
    assert other.reason == "rejected: reads as vehicle (0.98) more than building (0.12)"


def _squares(count):
    """Squares of growing size along the x axis, in a metric CRS."""
    return [Region(box(100 * i, 0, 100 * i + 10 + i, 10 + i), 0.9, 0.95, (10 + i) ** 2)
            for i in range(count)]  # fmt: skip


FRAME = SceneFrame.from_footprint(box(-50, -50, 1000, 1000), None)


def test_ranking_checks_only_what_it_chooses_and_a_rejected_referent_gives_its_place():
    regions = _squares(6)
    asked = []

    def check(found, description):
        # The two largest read as vehicles: the third largest is "the largest building".
        asked.append([regions.index(r) for r in found])
        for region in found:
            own = 0.1 if regions.index(region) in (4, 5) else 0.9
            region.verdict = Verdict(description, {description: own, "vehicle": 0.5})

    ranking = rank_regions(parse_sentence("the largest building"), regions, FRAME, check=check)
    assert ranking.chosen == [3]
    assert asked == [[5], [4], [3]]  # one new region a round, never the ones ranked after
    assert ranking.reasons[5] == "rejected: reads as vehicle (0.50) more than building (0.10)"
    assert ranking.reasons[3] == "chosen: largest"
    assert ranking.summary(regions)["rejected"] == 2


def test_ranking_checks_the_anchor_nearest_the_referent():
    targets = [
        Region(box(0, 0, 10, 10), 0.9, 0.9, 100),
        Region(box(500, 0, 510, 10), 0.9, 0.9, 100),
    ]
    # The anchor beside the first target is a false positive; the true one is near the second.
    anchors = [
        Region(box(20, 0, 30, 10), 0.9, 0.9, 100),
        Region(box(530, 0, 540, 10), 0.9, 0.9, 100),
    ]
    asked = []

    def check(found, description):
        asked.append((description, len(found)))
        for region in found:
            own = 0.1 if region is anchors[0] else 0.9
            region.verdict = Verdict(description, {description: own, "ship": 0.5})

    query = parse_sentence("the building closest to the airplane")
    ranking = rank_regions(query, targets, FRAME, anchors, check)
    assert ranking.chosen == [1]
    assert ("airplane", 1) in asked and anchors[0].verdict is not None
    assert not anchors[0].verdict.accepted and anchors[1].verdict.accepted


def test_ranking_without_check_is_unchanged():
    regions = _squares(3)
    ranking = rank_regions(parse_sentence("the largest building"), regions, FRAME)
    assert ranking.chosen == [2] and all(r.verdict is None for r in regions)


@pytest.fixture(scope="module")
def example_checker():
    model = load_model(str(default_model()), "cpu")
    with open_scene(EXAMPLE, None, 3, model.metadata.gsd) as scene:
        statistics = scene_statistics(scene.dataset, scene.bands, model.metadata, SegmentOptions())
        objects = gpd.read_file(scene_paths(EXAMPLE)["objects"]).to_crs(scene.dataset.crs)
        yield CandidateChecker(scene, model, statistics, model.metadata.vocabulary, 320), objects


def _regions(objects):
    return [Region(g, 1.0, 1.0, g.area) for g in objects.geometry]


def test_default_model_reads_each_true_object_as_its_category(example_checker):
    checker, objects = example_checker
    assert set(objects["category"]) == {"storage tank", "swimming pool", "building"}
    for category, group in objects.groupby("category"):
        regions = _regions(group)
        checker(regions, f"white {category}")
        assert all(r.verdict.category == category for r in regions)
        assert [r.verdict.reads_as for r in regions] == [category] * len(regions)


def test_default_model_rejects_an_object_of_another_category(example_checker):
    checker, objects = example_checker
    before = checker.forwards
    regions = _regions(objects[objects["category"] != "vehicle"])
    checker(regions, "vehicle")
    assert checker.forwards - before == len(regions) * len(checker.vocabulary)
    assert [r.verdict.accepted for r in regions] == [False] * len(regions)
    assert [r.verdict.reads_as for r in regions] == list(
        objects[objects["category"] != "vehicle"]["category"]
    )
    checker(regions, "vehicle")  # checked once: no second model call
    assert checker.forwards - before == len(regions) * len(checker.vocabulary)


def test_description_outside_the_vocabulary_is_not_checked(example_checker):
    checker, objects = example_checker
    regions = _regions(objects)
    before = checker.forwards
    checker(regions, "road")
    assert checker.forwards == before and all(r.verdict is None for r in regions)


def test_verdict_under_the_threshold_is_a_fragment():
    weak = Verdict("swimming pool", {"swimming pool": 0.43, "building": 0.02}, threshold=0.5)
    assert weak.reads_as == "swimming pool" and not weak.accepted
    assert weak.reason == "rejected: reads as swimming pool only 0.43 < 0.5 on a chip centred on it"


def test_an_anchor_inside_a_target_is_no_anchor():
    ship = Region(box(0, 0, 40, 10), 0.9, 0.9, 400)
    far_ship = Region(box(600, 0, 640, 10), 0.9, 0.9, 400)
    # An "airplane" on the first ship's deck, and the airplane parked beside the second ship.
    deck = Region(box(5, 2, 15, 8), 0.9, 0.9, 60)
    plane = Region(box(650, 0, 670, 20), 0.9, 0.9, 400)
    query = parse_sentence("the ship closest to the airplane")
    ranking = rank_regions(query, [ship, far_ship], FRAME, [deck, plane])
    assert ranking.chosen == [1] and ranking.values == [610.0, 10.0]
    same = parse_sentence("the ship closest to the ship")  # every anchor is then a target
    assert rank_regions(same, [ship, far_ship], FRAME, [ship, far_ship]).values == [0.0, 0.0]


def test_an_ordinal_checks_every_match_ranked_before_it():
    regions = _squares(6)  # left to right: 0 .. 5

    def check(found, description):
        for region in found:  # the second from the left is a false positive
            own = 0.1 if region is regions[1] else 0.9
            region.verdict = Verdict(description, {description: own, "vehicle": 0.5})

    ranking = rank_regions(parse_sentence("the third building from the left"), regions, FRAME,
                           check=check)  # fmt: skip
    assert ranking.chosen == [3]
    assert [r.verdict is not None for r in regions] == [True] * 4 + [False] * 2


def test_a_speck_is_a_fragment_not_the_smallest():
    regions = [Region(box(100 * i, 0, 100 * i + 10, 10), 0.9, 0.95, 100.0) for i in range(4)]
    regions.append(Region(box(900, 0, 902, 2), 0.9, 0.95, 4.0))  # 4 m² beside 100 m² objects
    regions.append(Region(box(700, 0, 708, 8), 0.9, 0.95, 64.0))
    ranking = rank_regions(parse_sentence("the smallest building"), regions, FRAME)
    assert ranking.chosen == [5]
    assert (
        ranking.reasons[4] == "rejected: a fragment (4.0 m² < 10% of the matches' median 100.0 m²)"
    )
    # A sentence without scene words keeps the model's own choice, specks included.
    own = rank_regions(parse_sentence("the building"), regions, FRAME)
    assert not own.reasons[4].startswith("rejected")


AREAS = {"building": (100.0, 1600.0), "vehicle": (12.0, 88.0), "tennis court": (580.0, 800.0)}


def test_verdict_far_under_the_smallest_trained_object_is_a_speck():
    speck = Verdict("building", {}, 0.5, 40.0, AREAS)
    assert speck.too_small and not speck.accepted and speck.reads_as == "building"
    assert speck.reason == (
        "rejected: 40.0 m² is far under the smallest building the model knows (100.0 m²)"
    )
    scores = {"building": 0.9, "vehicle": 0.1}
    assert Verdict("building", scores, 0.5, 85.0, AREAS).accepted  # a small building
    assert Verdict("building", scores, 0.5, 40.0).accepted  # no size known: no size check


def test_verdict_a_little_under_the_smallest_that_reads_as_a_category_of_its_size_is_that_one():
    bus = Verdict("building", {"building": 0.83, "vehicle": 0.22}, 0.5, 85.0, AREAS)
    assert bus.rival == "vehicle" and not bus.accepted
    assert bus.reason == (
        "rejected: 85.0 m², under the smallest building (100.0 m²), also reads as vehicle (0.22)"
    )
    # A category that does not fit the region's size is a rival only at the threshold; one the
    # model hardly reads is none; a region of its category's size has no rival.
    court = Verdict("building", {"building": 0.8, "tennis court": 0.4}, 0.5, 85.0, AREAS)
    strong = Verdict("building", {"building": 0.8, "tennis court": 0.52}, 0.5, 85.0, AREAS)
    faint = Verdict("building", {"building": 0.8, "vehicle": 0.1}, 0.5, 85.0, AREAS)
    big = Verdict("building", {"building": 0.8, "vehicle": 0.6}, 0.5, 120.0, AREAS)
    assert court.accepted and faint.accepted and big.accepted
    assert strong.rival == "tennis court" and not strong.accepted


def test_checker_mends_a_piece_of_an_object_and_rejects_a_speck_of_ground(example_checker):
    checker, objects = example_checker
    tanks = objects[objects["category"] == "storage tank"]
    smallest = float(tanks.geometry.area.min())
    sized = CandidateChecker(
        checker.scene, checker.model, checker.statistics, checker.vocabulary, 320,
        areas={"storage tank": (smallest, 10 * smallest)},
    )  # fmt: skip
    tank = tanks.geometry.iloc[0]
    piece = tank.centroid.buffer(0.15 * smallest**0.5)  # a few per cent of the tank
    bounds = box(*checker.scene.dataset.bounds)
    ground = next(
        point.buffer(0.15 * smallest**0.5)
        for point in (
            bounds.centroid,
            *(bounds.exterior.interpolate(f, normalized=True) for f in (0.1, 0.3)),
        )
        if objects.distance(point).min() > 60
    )
    regions = [Region(piece, 1.0, 1.0, piece.area), Region(ground, 1.0, 1.0, ground.area)]
    sized(regions, "white storage tank")
    mended, speck = regions
    assert mended.mended_from == piece.area and mended.verdict.accepted
    assert mended.geometry.intersection(tank).area / mended.geometry.union(tank).area > 0.7
    assert speck.mended_from is None and speck.verdict.too_small and not speck.verdict.accepted
    assert sized.regions_checked == 2 and sized.forwards == 2 * len(sized.vocabulary)


def test_a_mended_region_takes_in_the_other_pieces_of_its_object():
    whole = Region(box(0, 0, 20, 10), 0.9, 0.9, 200.0, mended_from=4.0)  # grown from a speck
    piece = Region(box(12, 0, 20, 10), 0.9, 0.9, 80.0)  # another piece the pass found
    other = Region(box(100, 0, 110, 10), 0.9, 0.9, 100.0)
    ranking = rank_regions(parse_sentence("the smallest building"), [whole, piece, other], FRAME)
    assert ranking.chosen == [2]
    assert ranking.reasons[1] == "rejected: part of a larger candidate (200.0 m²)"


def test_a_check_without_sizes_keeps_the_median_rule_one_with_sizes_mends_the_speck():
    regions = [Region(box(100 * i, 0, 100 * i + 10, 10), 0.9, 0.95, 100.0) for i in range(4)]
    regions.append(Region(box(900, 0, 902, 2), 0.9, 0.95, 4.0))  # a speck of a building
    asked = []

    def check(found, description):  # reads every region as a building, sizes unknown
        asked.extend(found)
        for region in found:
            region.verdict = Verdict(description, {description: 0.9})

    query = parse_sentence("the smallest building")
    kept = rank_regions(query, regions, FRAME, check=check)  # median rule on by default
    assert kept.chosen == [0] and regions[4] not in asked
    assert kept.reasons[4].startswith("rejected: a fragment")

    def mend(found, description):  # knows sizes: the speck is grown to its building
        for region in found:
            if region.area_m2 < 80:
                region.mended_from, region.area_m2 = region.area_m2, 90.0
                region.geometry = box(895, 0, 904, 10)
            region.verdict = Verdict(description, {description: 0.9}, 0.5, region.area_m2, AREAS)

    for region in regions:
        region.verdict = None
    mended = rank_regions(query, regions, FRAME, check=mend, fragments=False)
    assert mended.chosen == [4] and regions[4].mended_from == 4.0
