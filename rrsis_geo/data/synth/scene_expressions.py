"""Scene-level sentences for a synthetic frame, each with its referent: the scene referring test.

Five kinds, read by the grammar of :mod:`rrsis_geo.inference.sentence`, about one target
category of the frame (so that one pass of the model over the scene serves them all) and, for
relations, one anchor category:

- ``size``: "The largest storage tank.", "The second largest ...", "The smallest ...";
- ``extreme``: "The northernmost ...", "The westernmost ...", "The topmost ...",
  "The rightmost ...";
- ``order``: "The second ... from the left.", "The first ... from the top.",
  "The third ... from the north.";
- ``region``: "The ... at the top right of the image.", "The ... in the centre of the scene.",
  "The ... closest to the centre of the image.";
- ``relation``: "The ... closest to the airplane.", "The ... farthest from the airplane."
  (the anchor is the category with the fewest instances that gives a clear answer, the
  distance measured to its nearest instance; never a vehicle: too small to be found reliably;
  never a road: the model does not segment roads).

The frame is north up (row 0 is north, the top of the image). A sentence is only emitted when
its referent wins by a margin that survives an imperfect mask: areas by :data:`AREA_MARGIN`
over the next one; places and distances by :data:`PLACE_MARGIN` of the frame side and at least
:data:`MIN_GAP_PX` pixels, on both sides of the referent for ordinals; a ninth of the frame
holds the referent alone, its centroid more than :data:`NINTH_INSET` of the ninth's side from
the ninth's borders. Vehicles get no size sentences (a few pixels of mask error is a large
share of their area).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from rrsis_geo.data.synth.world import World, WorldObject

__all__ = [
    "AREA_MARGIN",
    "MIN_GAP_PX",
    "NINTH_INSET",
    "PLACE_MARGIN",
    "SCENE_KINDS",
    "SceneExpression",
    "make_scene_expressions",
]

SCENE_KINDS = ("size", "extreme", "order", "region", "relation")
"""The kinds of scene-level sentence, as :class:`SceneExpression.kind` names them."""

AREA_MARGIN = 1.2
"""The referent's area over (or under) the next one's by at least this factor."""

PLACE_MARGIN = 0.01
"""Positions and distances apart by at least this share of the frame side ..."""

MIN_GAP_PX = 40.0
"""... and by at least this many pixels."""

RELATION_RATIO = 1.3
"""The nearest object's distance to the anchor is below the next one's by this factor."""

NINTH_INSET = 0.1
"""A region referent's centroid is this share of a ninth's side inside the ninth's borders."""

MIN_INSTANCES = 3
"""Target categories have at least this many instances (ranking few is no test)."""

ORDINAL_WORDS = ("first", "second", "third")
NINTHS = {
    (0, 0): "at the top left of the image", (0, 1): "at the top of the image",
    (0, 2): "at the top right of the image", (1, 0): "on the left side of the image",
    (1, 1): "in the centre of the scene", (1, 2): "on the right side of the image",
    (2, 0): "at the bottom left of the image", (2, 1): "at the bottom of the image",
    (2, 2): "at the bottom right of the image",
}  # fmt: skip
# Per direction: the map word and the image word of the extreme, and of "from the ...".
EXTREME_WORDS = {
    "north": ("northernmost", "topmost"),
    "south": ("southernmost", "bottommost"),
    "east": ("easternmost", "rightmost"),
    "west": ("westernmost", "leftmost"),
}
FROM_WORDS = {
    "north": ("north", "top"),
    "south": ("south", "bottom"),
    "east": ("east", "right"),
    "west": ("west", "left"),
}


@dataclass(frozen=True)
class SceneExpression:
    """A scene-level sentence and what it refers to.

    Attributes:
        text: The sentence.
        kind: One of :data:`SCENE_KINDS`.
        object_ids: The referent(s), ids of :class:`~rrsis_geo.data.synth.world.WorldObject`.
        category: The target category.
        anchor_category: The anchor's category, for relations (None otherwise).
    """

    text: str
    kind: str
    object_ids: tuple[int, ...]
    category: str
    anchor_category: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (``object_ids`` as a list)."""
        data = asdict(self)
        data["object_ids"] = list(self.object_ids)
        return data


Value = Callable[[WorldObject], float]


def _clear_winner(
    objects: list[WorldObject], value: Value, rank: int, gap: float
) -> WorldObject | None:
    """The object at ``rank`` (0 = highest value) when its neighbours in rank are ``gap`` away.

    The object ranked after it must exist: "the largest" of one object is no test.
    """
    ranked = sorted(objects, key=value, reverse=True)
    if rank >= len(ranked) - 1:
        return None
    values = [value(o) for o in ranked]
    if values[rank] - values[rank + 1] < gap or (rank and values[rank - 1] - values[rank] < gap):
        return None
    return ranked[rank]


def _size(objects: list[WorldObject], category: str) -> list[SceneExpression]:
    def log_area(obj: WorldObject) -> float:
        return math.log(obj.area_px)

    gap = math.log(AREA_MARGIN)
    found = []
    for rank, text in ((0, "The largest {}."), (1, "The second largest {}.")):
        winner = _clear_winner(objects, log_area, rank, gap)
        if winner is not None:
            found.append(
                SceneExpression(text.format(category), "size", (winner.object_id,), category)
            )
    for rank, text in ((0, "The smallest {}."), (1, "The second smallest {}.")):
        winner = _clear_winner(objects, lambda o: -log_area(o), rank, gap)
        if winner is not None:
            found.append(
                SceneExpression(text.format(category), "size", (winner.object_id,), category)
            )
    return found


def _directions() -> dict[str, Value]:
    """Per direction, a value that is highest for the object farthest toward it (north up)."""
    return {
        "north": lambda o: -o.centre[1],
        "south": lambda o: o.centre[1],
        "east": lambda o: o.centre[0],
        "west": lambda o: -o.centre[0],
    }


def _extreme(
    rng: np.random.Generator, objects: list[WorldObject], category: str, gap: float
) -> list[SceneExpression]:
    found = []
    for direction, value in _directions().items():
        word = EXTREME_WORDS[direction][int(rng.integers(2))]
        winner = _clear_winner(objects, value, 0, gap)
        if winner is not None:
            found.append(
                SceneExpression(f"The {word} {category}.", "extreme", (winner.object_id,), category)
            )
    return found


def _order(
    rng: np.random.Generator, objects: list[WorldObject], category: str, gap: float
) -> list[SceneExpression]:
    found = []
    for direction, value in _directions().items():
        for rank in range(len(ORDINAL_WORDS)):
            word = FROM_WORDS[direction][int(rng.integers(2))]
            winner = _clear_winner(objects, value, rank, gap)
            if winner is not None:
                text = f"The {ORDINAL_WORDS[rank]} {category} from the {word}."
                found.append(SceneExpression(text, "order", (winner.object_id,), category))
    return found


def _region(
    objects: list[WorldObject], category: str, gap: float, height: int, width: int
) -> list[SceneExpression]:
    ninth_h, ninth_w = height / 3, width / 3
    cells: dict[tuple[int, int], list[WorldObject]] = {}
    for obj in objects:
        x, y = obj.centre
        cells.setdefault((min(2, int(y // ninth_h)), min(2, int(x // ninth_w))), []).append(obj)
    found = []
    for cell, members in sorted(cells.items()):
        x, y = members[0].centre
        inside = (
            min(x % ninth_w, ninth_w - x % ninth_w) > NINTH_INSET * ninth_w
            and min(y % ninth_h, ninth_h - y % ninth_h) > NINTH_INSET * ninth_h
        )
        if len(members) == 1 and inside:
            text = f"The {category} {NINTHS[cell]}."
            found.append(SceneExpression(text, "region", (members[0].object_id,), category))
    cx, cy = width / 2, height / 2
    winner = _clear_winner(
        objects, lambda o: -math.hypot(o.centre[0] - cx, o.centre[1] - cy), 0, gap
    )
    if winner is not None:
        text = f"The {category} closest to the centre of the image."
        found.append(SceneExpression(text, "region", (winner.object_id,), category))
    return found


def _anchor_categories(world: World, category: str) -> list[str]:
    """Anchor categories, fewest instances first: any but the target's and vehicles (tiny)."""
    counts: dict[str, int] = {}
    for obj in world.objects:
        counts[obj.category] = counts.get(obj.category, 0) + 1
    return sorted(
        (c for c in counts if c not in (category, "vehicle")), key=lambda c: (counts[c], c)
    )


def _relation(
    objects: list[WorldObject], world: World, category: str, gap: float
) -> list[SceneExpression]:
    for anchor_category in _anchor_categories(world, category):
        anchors = [o for o in world.objects if o.category == anchor_category]

        # "closest to the airplane" with several airplanes: to the nearest one.
        def distance(obj: WorldObject, anchors: list[WorldObject] = anchors) -> float:
            return min(float(obj.polygon.distance(a.polygon)) for a in anchors)

        found = []
        ranked = sorted(distance(o) for o in objects)
        nearest = _clear_winner(objects, lambda o: -distance(o), 0, gap)
        if nearest is not None and ranked[1] >= RELATION_RATIO * ranked[0]:
            text = f"The {category} closest to the {anchor_category}."
            found.append(
                SceneExpression(text, "relation", (nearest.object_id,), category, anchor_category)
            )
        farthest = _clear_winner(objects, distance, 0, gap)
        if farthest is not None:
            text = f"The {category} farthest from the {anchor_category}."
            found.append(
                SceneExpression(text, "relation", (farthest.object_id,), category, anchor_category)
            )
        if found:
            return found  # one anchor per frame: one more pass of the model, not one per anchor
    return []


def _sentences(
    rng: np.random.Generator, world: World, category: str
) -> dict[str, list[SceneExpression]]:
    """Every qualifying sentence about ``category``, by kind."""
    height, width = world.labels.shape
    gap = max(PLACE_MARGIN * max(height, width), MIN_GAP_PX)
    objects = [o for o in world.objects if o.category == category]
    return {
        "size": _size(objects, category) if category != "vehicle" else [],
        "extreme": _extreme(rng, objects, category, gap),
        "order": _order(rng, objects, category, gap),
        "region": _region(objects, category, gap, height, width),
        "relation": _relation(objects, world, category, gap),
    }


def make_scene_expressions(
    rng: np.random.Generator, world: World, per_kind: int = 3, category: str | None = None
) -> list[SceneExpression]:
    """Unambiguous scene-level sentences about one category of ``world``, by kind.

    Up to ``per_kind`` sentences of each kind, in the order of :data:`SCENE_KINDS`.

    Args:
        rng: Chooses the wording (map or image words) and among the sentences that qualify.
        world: The frame (north up).
        per_kind: Sentences per kind (fewer when not enough are unambiguous).
        category: The target category; default: of the categories with at least
            :data:`MIN_INSTANCES` instances, vehicles aside (10 to 20 px wide at the default
            model's resolution, too small to rank reliably), the one whose sentences cover the
            most kinds, then the most sentences, then has the most instances (decided from the
            ground truth alone).

    Returns:
        The sentences; empty when no category qualifies.
    """
    if category is None:
        counts: dict[str, int] = {}
        for obj in world.objects:
            counts[obj.category] = counts.get(obj.category, 0) + 1
        options = {
            c: _sentences(rng, world, c)
            for c in sorted(counts)
            if counts[c] >= MIN_INSTANCES and c != "vehicle"
        }
        if not options:
            return []

        def coverage(name: str) -> tuple[int, int, int]:
            found = options[name].values()
            kinds = sum(1 for f in found if f)
            return kinds, sum(min(per_kind, len(f)) for f in found), counts[name]

        by_kind = options[max(options, key=coverage)]
    else:
        by_kind = _sentences(rng, world, category)
    chosen = []
    for kind in SCENE_KINDS:
        found = list({e.text: e for e in by_kind[kind]}.values())
        for index in sorted(rng.permutation(len(found))[:per_kind].tolist()):
            chosen.append(found[index])
    return chosen
