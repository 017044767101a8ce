"""Choosing the referent among a scene's regions, by what the sentence asks.

:func:`rank_regions` is the scene-level resolver: it takes the reading of a sentence
(:class:`~rrsis_geo.inference.sentence.SceneQuery`), every region that matched its target
description over the whole scene, and for relations the regions of the anchor, and ranks them
in a metric, north-up frame (:class:`~rrsis_geo.inference.regions.SceneFrame`): areas in m²,
northings and eastings in metres, distances in metres. It never sees tiles: "the largest" is
the largest of the scene.

Regions whose presence (the model's "the target is in this tile") is below
:data:`PRESENCE_THRESHOLD` are not matches: they are ranked after every match and never chosen,
so an absent target gives no referent rather than the least unlikely blob. Regions the check
of :mod:`~rrsis_geo.inference.verification` rejects (they read as another category of the
model's vocabulary) are not matches either; the ranking asks for the check of the regions it
is about to choose, and a rejected one gives its place to the next.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from rrsis_geo.inference.regions import Region, SceneFrame
from rrsis_geo.inference.sentence import SceneQuery

__all__ = [
    "MEASURE_UNITS",
    "PRESENCE_THRESHOLD",
    "STRATEGY_FUNCTIONS",
    "Answer",
    "CheckRegions",
    "Ranking",
    "RunPass",
    "ScenePasses",
    "chooses_among_regions",
    "map_answer",
    "rank_regions",
    "scene_strategy",
    "tile_strategy",
]

PRESENCE_THRESHOLD = 0.5
"""A region whose tiles all say the target is absent below this is not a candidate."""

FRAGMENT_SHARE = 0.1
"""A match under this share of the matches' median area is a fragment, not a candidate."""

FRAGMENT_MIN_MATCHES = 3
"""Fewer matches than this have no meaningful median: none is a fragment."""

ANCHOR_INSIDE = 0.5
"""An anchor region with at least this share of its area inside a target region is part of it."""

MEASURE_UNITS = {
    "area": "m2",
    "northing": "m",
    "easting": "m",
    "centre_distance": "m",
    "region": "m",
    "anchor_distance": "m",
    "score": "",
}
"""The unit of each measure's values (``score``: the model's own choice, mean probability)."""

NINTH_NAMES = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)


@dataclass
class Ranking:
    """The regions in the order the sentence asks, and the referents.

    Attributes:
        measure: What was ranked by (a key of :data:`MEASURE_UNITS`).
        order: Region indices, best first; matches before rejected regions.
        values: The measure of each region (by region index); None where it has none.
        chosen: Indices of the referents, in rank order; empty when none was found.
        reasons: Why each region (by index) was or was not chosen.
        note: Why nothing was chosen, when nothing was.
    """

    measure: str
    order: list[int]
    values: list[float | None]
    chosen: list[int]
    reasons: list[str]
    note: str = ""
    ranks: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ranks = [0] * len(self.values)
        for place, index in enumerate(self.order):
            self.ranks[index] = place + 1

    def summary(self, regions: Sequence[Region], top: int = 5) -> dict[str, Any]:
        """JSON-ready: the measure, the choice and the first ``top`` candidates."""
        return {
            "measure": self.measure,
            "unit": MEASURE_UNITS[self.measure],
            "candidates": len(self.order),
            "matches": sum(1 for r in self.reasons if not r.startswith("rejected")),
            "rejected": sum(1 for r in regions if r.verdict and not r.verdict.accepted),
            "chosen": [self.ranks[i] for i in self.chosen],
            "note": self.note,
            "top": [
                {
                    "rank": self.ranks[i],
                    "chosen": i in self.chosen,
                    "value": self.values[i],
                    "score_mean": round(regions[i].score_mean, 4),
                    "presence": regions[i].presence,
                    "area_m2": round(regions[i].area_m2, 2),
                    "centroid": list(regions[i].centroid),
                    "reads_as": regions[i].reads_as[0],
                    "mended_from_m2": regions[i].mended_from,
                    "reason": self.reasons[i],
                }
                for i in self.order[:top]
            ],
        }


def _is_match(region: Region) -> bool:
    present = region.presence is None or region.presence >= PRESENCE_THRESHOLD
    return present and (region.verdict is None or region.verdict.accepted)


def _ninth_centre(frame: SceneFrame, cell: tuple[int, int]) -> tuple[float, float]:
    west, south, east, north = frame.bounds
    row, col = cell
    return west + (col + 0.5) * (east - west) / 3, north - (row + 0.5) * (north - south) / 3


def _ninth_of(frame: SceneFrame, x: float, y: float) -> tuple[int, int]:
    west, south, east, north = frame.bounds
    col = min(2, max(0, int(3 * (x - west) / max(east - west, 1e-9))))
    row = min(2, max(0, int(3 * (north - y) / max(north - south, 1e-9))))
    return row, col


def _measure_values(
    query: SceneQuery,
    regions: Sequence[Region],
    metric: list[BaseGeometry],
    frame: SceneFrame,
    anchors: list[BaseGeometry],
) -> list[float]:
    centroids = [(g.centroid.x, g.centroid.y) for g in metric]
    if query.measure == "area":
        return [r.area_m2 for r in regions]
    if query.measure == "northing":
        return [y for _, y in centroids]
    if query.measure == "easting":
        return [x for x, _ in centroids]
    if query.measure in ("centre_distance", "region"):
        if query.measure == "region" and query.region is not None:
            cx, cy = _ninth_centre(frame, query.region)
        else:
            centre = frame.footprint.centroid
            cx, cy = centre.x, centre.y
        return [math.hypot(x - cx, y - cy) for x, y in centroids]
    if query.measure == "anchor_distance":
        return [min(g.distance(a) for a in anchors) for g in metric]
    return [r.score_mean for r in regions]


CheckRegions = Callable[[Sequence[Region], str], None]
"""Gives regions their :class:`~rrsis_geo.inference.regions.Verdict`:
``check(regions, description)`` (see :class:`~rrsis_geo.inference.verification.CandidateChecker`).
"""


def rank_regions(
    query: SceneQuery,
    regions: Sequence[Region],
    frame: SceneFrame,
    anchors: Sequence[Region] | None = None,
    check: CheckRegions | None = None,
    fragments: bool = True,
) -> Ranking:
    """Rank the regions of a scene by what the sentence asks and choose its referent(s).

    With ``check``, the matches ranked up to the last referent (and for relations the anchor
    nearest each referent) are checked before the choice stands: a rejected one stops being a
    match, a piece the check mended to its whole object takes in the other pieces of it, and
    the ranking is made again, until every region that decides it has been checked. Each round
    checks at least one new region, so this ends; only the regions about to be chosen cost a
    check. Fragments (matches under :data:`FRAGMENT_SHARE` of the matches' median area) are no
    candidates, unless the check judges sizes by what the model was trained on: then a speck
    goes to the check, which mends it to its object or rejects it.

    Args:
        query: How the sentence was read.
        regions: Every region that matched the target description, over the whole scene.
        frame: The scene's metric, north-up frame.
        anchors: For relations, the regions of the anchor ("the road").
        check: Checks regions of a description; None: no check.
        fragments: Drop fragments by the median rule (False when ``check`` judges the
            description's sizes, see :meth:`ScenePasses.judges_size`).

    Returns:
        The ranking; ``chosen`` is empty when no region matches (target absent), when a
        relation's anchor was not found, or when the ordinal is past the last match.
    """
    asked: set[int] = set()
    while True:
        ranking = _rank_once(query, regions, frame, anchors, fragments)
        if check is None:
            return ranking
        targets = [r for r in _deciding(ranking, regions) if id(r) not in asked]
        chosen = [regions[i] for i in ranking.chosen]
        nearest = _nearest_anchors(query, chosen, regions, anchors, frame)
        nearest = [a for a in nearest if id(a) not in asked]
        if not targets and not nearest:
            return ranking
        asked.update(id(r) for r in [*targets, *nearest])
        check(targets, query.description)
        if nearest and query.anchor:
            check(nearest, query.anchor)


def _deciding(ranking: Ranking, regions: Sequence[Region]) -> list[Region]:
    """The matches that decide the choice: every one ranked up to the last referent.

    "The third from the bottom" is third only if the two before it are objects too.
    """
    if not ranking.chosen:
        return []
    last = ranking.ranks[ranking.chosen[-1]]
    rejected = ("rejected", "outside")
    return [regions[i] for i in ranking.order[:last] if not ranking.reasons[i].startswith(rejected)]


def _anchor_matches(
    query: SceneQuery, regions: Sequence[Region], anchors: Sequence[Region] | None
) -> list[Region]:
    """The anchors that match and are not mostly inside a matching target region.

    An object is not its own anchor: an "airplane" found on a ship's deck is part of a ship
    candidate, and would put that ship at 0 m from "the airplane". (When the anchor is the
    target's own description, "the ship closest to the ship", every anchor is a target.)
    """
    targets = [r.geometry for r in regions if _is_match(r) and query.anchor != query.description]
    tree = STRtree(targets)
    found = []
    for anchor in anchors or []:
        if not _is_match(anchor):
            continue
        shape = anchor.geometry
        inside = [targets[i].intersection(shape).area for i in tree.query(shape)]
        if not shape.area or max(inside, default=0.0) < ANCHOR_INSIDE * shape.area:
            found.append(anchor)
    return found


def _nearest_anchors(
    query: SceneQuery,
    chosen: Sequence[Region],
    regions: Sequence[Region],
    anchors: Sequence[Region] | None,
    frame: SceneFrame,
) -> list[Region]:
    """The matching anchor nearest each chosen region (relations only)."""
    matches = _anchor_matches(query, regions, anchors)
    if query.measure != "anchor_distance" or not matches or not chosen:
        return []
    anchor_metric = frame.to_metric([a.geometry for a in matches])
    found: list[Region] = []
    for target in frame.to_metric([r.geometry for r in chosen]):
        index = min(range(len(matches)), key=lambda i: target.distance(anchor_metric[i]))
        if all(matches[index] is not known for known in found):
            found.append(matches[index])
    return found


def _rank_once(
    query: SceneQuery,
    regions: Sequence[Region],
    frame: SceneFrame,
    anchors: Sequence[Region] | None,
    fragments: bool = True,
) -> Ranking:
    measure = query.measure if query.kind != "description" and query.measure else "score"
    if query.kind == "size" and query.measure is None:
        measure = "score"  # "all storage tanks": every match, best score first
    matches = [i for i, r in enumerate(regions) if _is_match(r)]
    pieces = _parts(regions, matches)
    if fragments and query.kind != "description":
        pieces.update(_fragments(regions, matches))
    matches = [i for i in matches if i not in pieces]
    anchor_matches = _anchor_matches(query, regions, anchors)
    metric = frame.to_metric([r.geometry for r in regions])
    note = ""
    if measure == "anchor_distance" and not anchor_matches:
        values: list[float | None] = [None] * len(regions)
        note = f"anchor not found: no {query.anchor!r} in the scene"
        order = sorted(range(len(regions)), key=lambda i: -regions[i].score_mean)
        return Ranking(measure, order, values, [], _reasons(regions, [], values, note), note)
    anchor_metric = frame.to_metric([a.geometry for a in anchor_matches])
    raw = _measure_values(query, regions, metric, frame, anchor_metric)
    descending = query.descending if measure != "score" else True
    outside = [False] * len(regions)
    if measure == "region" and query.region is not None:
        outside = [_ninth_of(frame, g.centroid.x, g.centroid.y) != query.region for g in metric]

    def key(index: int) -> tuple[bool, bool, float]:
        value = raw[index]
        return (index not in matches, outside[index], -value if descending else value)

    order = sorted(range(len(regions)), key=key)
    ranked_matches = [i for i in order if i in matches]
    if query.count is None and measure == "region":
        # "all ships on the left side": those in that ninth, not every ship.
        ranked_matches = [i for i in ranked_matches if not outside[i]]
    start = query.ordinal - 1
    stop = None if query.count is None else start + query.count
    chosen = ranked_matches[start:stop]
    if not matches:
        note = "no referent found: nothing in the scene matches the description"
    elif not chosen:
        note = f"no referent found: only {len(ranked_matches)} candidates match"
    values = [round(v, 3) for v in raw]
    reasons = _reasons(regions, chosen, list(values), note, query, outside, pieces)
    return Ranking(measure, order, list(values), chosen, reasons, note)


def _fragments(regions: Sequence[Region], matches: list[int]) -> dict[int, str]:
    """The matches too small to be objects of the category, with why.

    A description mask leaves specks (an edge, a roof light) that no check rejects, and a speck
    is what "the smallest" and often "the northernmost" would choose. Objects of one category
    in one scene differ in size, but not a hundredfold from their median: a match under
    :data:`FRAGMENT_SHARE` of the matches' median area is a piece, not an object.
    """
    if len(matches) < FRAGMENT_MIN_MATCHES:
        return {}
    median = statistics.median(regions[i].area_m2 for i in matches)
    return {
        i: f"rejected: a fragment ({regions[i].area_m2:.1f} m² < {FRAGMENT_SHARE:.0%} of the "
        f"matches' median {median:.1f} m²)"
        for i in matches
        if regions[i].area_m2 < FRAGMENT_SHARE * median
    }


def _parts(regions: Sequence[Region], matches: list[int]) -> dict[int, str]:
    """Matches that are part of a mended match (or that a mended match is part of).

    A mended region grew to the whole object its piece belongs to; another piece of that object
    is then no candidate of its own. Of two overlapping matches, the smaller is part of the
    larger when at least :data:`ANCHOR_INSIDE` of it lies inside.
    """
    mended = [i for i in matches if regions[i].mended_from is not None]
    if not mended:
        return {}
    tree = STRtree([regions[i].geometry for i in matches])
    parts = {}
    for index in mended:
        shape = regions[index].geometry
        for other in (matches[j] for j in tree.query(shape)):
            small, large = sorted((index, other), key=lambda i: regions[i].area_m2)
            if other == index or small in parts:
                continue
            piece = regions[small].geometry
            if piece.intersection(regions[large].geometry).area >= ANCHOR_INSIDE * piece.area:
                parts[small] = (
                    f"rejected: part of a larger candidate ({regions[large].area_m2:.1f} m²)"
                )
    return parts


def _reasons(
    regions: Sequence[Region],
    chosen: list[int],
    values: list[float | None],
    note: str,
    query: SceneQuery | None = None,
    outside: list[bool] | None = None,
    rejected: dict[int, str] | None = None,
) -> list[str]:
    reasons = []
    for index, region in enumerate(regions):
        if rejected and index in rejected:
            reasons.append(rejected[index])
        elif region.presence is not None and region.presence < PRESENCE_THRESHOLD:
            reasons.append(f"rejected: presence {region.presence:.2f} < {PRESENCE_THRESHOLD}")
        elif region.verdict is not None and not region.verdict.accepted:
            reasons.append(region.verdict.reason)
        elif index in chosen:
            words = query.words if query is not None and query.words else "best score"
            reasons.append(f"chosen: {words}")
        elif outside is not None and outside[index] and query is not None and query.region:
            row, col = query.region
            reasons.append(f"outside the {NINTH_NAMES[row][col]} of the scene")
        elif note:
            reasons.append(note)
        else:
            reasons.append("ranked after the referent")
    return reasons


RunPass = Callable[[str, bool], list[Region]]
"""Runs (or reuses) the pass of a sentence: ``run_pass(sentence, instances)`` -> its regions.
``instances`` asks the model for every instance of a description rather than its own choice."""


class ScenePasses(Protocol):
    """What a strategy is given: passes over the scene, and a check of their regions."""

    def __call__(self, sentence: str, instances: bool) -> list[Region]:
        """The regions of the pass of ``sentence`` (see :data:`RunPass`)."""

    def check(self, regions: Sequence[Region], description: str) -> None:
        """Give regions of ``description`` their verdict (see :data:`CheckRegions`)."""

    def prefetch(self, keys: Sequence[tuple[str, bool]]) -> None:
        """Run the passes of these ``(sentence, instances)`` together (one tiling loop)."""

    def judges_size(self, description: str) -> bool:
        """True when :meth:`check` knows the trained sizes of the description's category."""


@dataclass
class Answer:
    """A strategy's answer to one sentence.

    Attributes:
        query: How the sentence was read.
        sentence: The sentence of the pass whose map the outputs are made from.
        instances: Whether that pass asked for every instance.
        regions: The regions of that pass (raster CRS).
        ranking: Their ranking and the referents.
        anchors: The anchor's regions, for relations.
        restrict_raster: The raster outputs keep only the referents' pixels (the pass found
            every instance; only the chosen ones are the answer).
        crs: The CRS of the geometries, when known.
    """

    query: SceneQuery
    sentence: str
    instances: bool
    regions: list[Region]
    ranking: Ranking
    anchors: list[Region] = field(default_factory=list)
    restrict_raster: bool = False
    crs: Any = None

    @property
    def chosen(self) -> list[BaseGeometry]:
        """The referents' polygons, in rank order (empty: no referent found)."""
        return [self.regions[i].geometry for i in self.ranking.chosen]


def scene_strategy(query: SceneQuery, passes: ScenePasses, frame: SceneFrame) -> Answer:
    """Answer over the whole scene.

    A sentence with scene-level words is split: its description ("the storage tank") is one
    pass that finds every instance in the scene, the anchor of a relation another, and the
    regions are ranked by what the words ask, each referent checked against the model's other
    categories before it is chosen. A sentence without such words is the model's own choice:
    one pass of the whole sentence, its best region the referent.
    """
    if not chooses_among_regions(query):
        regions = passes(query.text, False)
        return Answer(query, query.text, False, regions, rank_regions(query, regions, frame))
    if query.anchor_sentence:
        passes.prefetch([(query.model_sentence, True), (query.anchor_sentence, True)])
    regions = passes(query.model_sentence, True)
    anchors = passes(query.anchor_sentence, True) if query.anchor_sentence else []
    fragments = not passes.judges_size(query.description)
    ranking = rank_regions(query, regions, frame, anchors, passes.check, fragments)
    return Answer(query, query.model_sentence, True, regions, ranking, anchors, True)


def chooses_among_regions(query: SceneQuery) -> bool:
    """True when the scene strategy chooses the referent among the regions of a description.

    A sentence without scene-level words is the model's own choice, one pass of the whole
    sentence, as in the per-tile strategy.
    """
    return not (query.kind == "description" or (query.measure is None and query.count == 1))


def map_answer(query: SceneQuery) -> Answer:
    """The answer of a run that writes only the model's probability map of the whole sentence.

    No region is found (on a large, noisy map that costs far more than the tiles) and none is
    chosen: the raster is the answer, as in the per-tile strategy.
    """
    note = "no referent chosen: only the probability map was asked for (add a vector output)"
    return Answer(query, query.text, False, [], Ranking("score", [], [], [], [], note))


def tile_strategy(query: SceneQuery, passes: ScenePasses, frame: SceneFrame) -> Answer:
    """The per-tile behaviour: every tile answers the whole sentence; every region is kept."""
    regions = passes(query.text, False)
    order = list(range(len(regions)))  # regions come best mean score first
    values: list[float | None] = [round(r.score_mean, 4) for r in regions]
    reasons = ["per-tile answer (strategy tile)"] * len(regions)
    note = "" if regions else "no referent found: the model marked nothing"
    ranking = Ranking("score", order, values, list(order), reasons, note)
    return Answer(query, query.text, False, regions, ranking)


STRATEGY_FUNCTIONS: dict[str, Callable[[SceneQuery, ScenePasses, SceneFrame], Answer]] = {
    "scene": scene_strategy,
    "tile": tile_strategy,
}
"""The referring strategies by name (``--strategy``)."""
