"""Choosing the referent among a scene's regions, by what the sentence asks.

:func:`rank_regions` is the scene-level resolver: it takes the reading of a sentence
(:class:`~rrsis_geo.inference.sentence.SceneQuery`), every region that matched its target
description over the whole scene, and for relations the regions of the anchor, and ranks them
in a metric, north-up frame (:class:`~rrsis_geo.inference.regions.SceneFrame`): areas in m²,
northings and eastings in metres, distances in metres. It never sees tiles: "the largest" is
the largest of the scene.

Regions whose presence (the model's "the target is in this tile") is below
:data:`PRESENCE_THRESHOLD` are not matches: they are ranked after every match and never chosen,
so an absent target gives no referent rather than the least unlikely blob.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shapely.geometry.base import BaseGeometry

from rrsis_geo.inference.regions import Region, SceneFrame
from rrsis_geo.inference.sentence import SceneQuery

__all__ = [
    "MEASURE_UNITS",
    "PRESENCE_THRESHOLD",
    "STRATEGY_FUNCTIONS",
    "Answer",
    "Ranking",
    "RunPass",
    "rank_regions",
    "scene_strategy",
    "tile_strategy",
]

PRESENCE_THRESHOLD = 0.5
"""A region whose tiles all say the target is absent below this is not a candidate."""

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
                    "reason": self.reasons[i],
                }
                for i in self.order[:top]
            ],
        }


def _is_match(region: Region) -> bool:
    return region.presence is None or region.presence >= PRESENCE_THRESHOLD


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


def rank_regions(
    query: SceneQuery,
    regions: Sequence[Region],
    frame: SceneFrame,
    anchors: Sequence[Region] | None = None,
) -> Ranking:
    """Rank the regions of a scene by what the sentence asks and choose its referent(s).

    Args:
        query: How the sentence was read.
        regions: Every region that matched the target description, over the whole scene.
        frame: The scene's metric, north-up frame.
        anchors: For relations, the regions of the anchor ("the road").

    Returns:
        The ranking; ``chosen`` is empty when no region matches (target absent), when a
        relation's anchor was not found, or when the ordinal is past the last match.
    """
    measure = query.measure if query.kind != "description" and query.measure else "score"
    if query.kind == "size" and query.measure is None:
        measure = "score"  # "all storage tanks": every match, best score first
    matches = [i for i, r in enumerate(regions) if _is_match(r)]
    anchor_matches = [a for a in anchors or [] if _is_match(a)]
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
    reasons = _reasons(regions, chosen, list(values), note, query, outside)
    return Ranking(measure, order, list(values), chosen, reasons, note)


def _reasons(
    regions: Sequence[Region],
    chosen: list[int],
    values: list[float | None],
    note: str,
    query: SceneQuery | None = None,
    outside: list[bool] | None = None,
) -> list[str]:
    reasons = []
    for index, region in enumerate(regions):
        if not _is_match(region):
            reasons.append(f"rejected: presence {region.presence:.2f} < {PRESENCE_THRESHOLD}")
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


def scene_strategy(query: SceneQuery, run_pass: RunPass, frame: SceneFrame) -> Answer:
    """Answer over the whole scene.

    A sentence with scene-level words is split: its description ("the storage tank") is one
    pass that finds every instance in the scene, the anchor of a relation another, and the
    regions are ranked by what the words ask. A sentence without such words is the model's own
    choice: one pass of the whole sentence, its best region the referent.
    """
    if query.kind == "description" or (query.measure is None and query.count == 1):
        regions = run_pass(query.text, False)
        return Answer(query, query.text, False, regions, rank_regions(query, regions, frame))
    regions = run_pass(query.model_sentence, True)
    anchors = run_pass(query.anchor_sentence, True) if query.anchor_sentence else []
    ranking = rank_regions(query, regions, frame, anchors)
    return Answer(query, query.model_sentence, True, regions, ranking, anchors, True)


def tile_strategy(query: SceneQuery, run_pass: RunPass, frame: SceneFrame) -> Answer:
    """The per-tile behaviour: every tile answers the whole sentence; every region is kept."""
    regions = run_pass(query.text, False)
    order = list(range(len(regions)))  # regions come best mean score first
    values: list[float | None] = [round(r.score_mean, 4) for r in regions]
    reasons = ["per-tile answer (strategy tile)"] * len(regions)
    note = "" if regions else "no referent found: the model marked nothing"
    ranking = Ranking("score", order, values, list(order), reasons, note)
    return Answer(query, query.text, False, regions, ranking)


STRATEGY_FUNCTIONS: dict[str, Callable[[SceneQuery, RunPass, SceneFrame], Answer]] = {
    "scene": scene_strategy,
    "tile": tile_strategy,
}
"""The referring strategies by name (``--strategy``)."""
