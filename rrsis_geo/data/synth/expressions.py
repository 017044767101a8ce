"""Referring expressions for a synthetic frame, each with the id of its referent.

Five kinds, in the style of the real RISBench sentences ("The ship that is closest to the top
edge of the image.", "The small, rectangular swimming pool."):

- ``attribute``: category with colour or shape ("The red building.");
- ``position``: place in the image ("The storage tank at the top left of the image.");
- ``relation``: nearest to another object or to the road ("The vehicle closest to the airplane.");
- ``superlative``: size and order ("The largest storage tank.", "The second ship from the left.");
- ``negative``: a category absent from the frame (referent 0, empty mask);
- ``every``: a bare category over a frame with several of it ("The ship."): every one is
  the referent. Only :func:`every_instance_expressions` makes it, for splits that ask for it:
  it teaches the mask *before* object selection, which a scene's description pass reads, to
  mark every instance rather than the most salient (docs/scene-referring.md).

An expression is only emitted when it is unambiguous with a margin: the referent must win by a
clear gap in size, distance or position, so that the mask is the one correct answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from rrsis_geo.data.synth.world import CATEGORIES, World, WorldObject

__all__ = ["EXPRESSION_TYPES", "Expression", "every_instance_expressions", "make_expressions"]

EXPRESSION_TYPES = ("attribute", "position", "relation", "superlative", "negative", "every")


@dataclass(frozen=True)
class Expression:
    """A sentence and what it refers to.

    Attributes:
        text: The sentence.
        kind: One of :data:`EXPRESSION_TYPES`.
        object_id: The referent's ``object_id``; 0 for a negative (nothing is referred to).
        category: The category the sentence names.
        others: The further referents of an ``every`` expression (empty for other kinds).
    """

    text: str
    kind: str
    object_id: int
    category: str
    others: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, with ``others`` only when there are any (as files had before it)."""
        data = asdict(self)
        if self.others:
            data["others"] = list(self.others)
        else:
            del data["others"]
        return data

    @property
    def referents(self) -> tuple[int, ...]:
        """Every ``object_id`` the sentence refers to (none for a negative)."""
        return (self.object_id, *self.others) if self.object_id else ()


def _sentence(rng: np.random.Generator, templates: list[str], **words: str) -> str:
    text = str(rng.choice(templates)).format(**words)
    return text[0].upper() + text[1:]


POSITIONS = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}  # fmt: skip


def _attribute(
    rng: np.random.Generator, target: WorldObject, same: list[WorldObject]
) -> str | None:
    others = [o for o in same if o is not target]
    cat = target.category
    if not others:
        return _sentence(
            rng,
            ["the {cat}.", "the {colour} {cat}.", "the {cat} in the image.", "the only {cat}."],
            cat=cat,
            colour=target.colour,
        )
    if all(o.colour != target.colour for o in others):
        return _sentence(
            rng,
            ["the {colour} {cat}.", "the {cat} that is {colour}.", "the {colour} colored {cat}."],
            cat=cat,
            colour=target.colour,
        )
    return None


def _position(
    rng: np.random.Generator,
    target: WorldObject,
    same: list[WorldObject],
    height: int,
    width: int,
) -> str | None:
    x, y = target.centre
    cell = (min(2, int(3 * y / height)), min(2, int(3 * x / width)))
    # The referent must sit clearly inside its ninth and be the only one of its kind there.
    fx, fy = 3 * x / width % 1, 3 * y / height % 1
    inside = 0.15 < fx < 0.85 or cell[1] != 1
    inside = inside and (0.15 < fy < 0.85 or cell[0] != 1)
    others = [o for o in same if o is not target]
    alone = all(
        (min(2, int(3 * o.centre[1] / height)), min(2, int(3 * o.centre[0] / width))) != cell
        for o in others
    )
    if inside and alone:
        where = POSITIONS[cell]
        return _sentence(
            rng,
            [
                "the {cat} at the {where} of the image.",
                "the {cat} located in the {where} of the image.",
                "the {cat} positioned at the {where} of the image.",
            ],
            cat=target.category,
            where=where if where != "center" else "center",
        )
    # Else, the edge it is closest to, when it beats every other of its kind by a clear gap.
    edges = {
        "top": lambda o: o.polygon.bounds[1],
        "bottom": lambda o: height - o.polygon.bounds[3],
        "left": lambda o: o.polygon.bounds[0],
        "right": lambda o: width - o.polygon.bounds[2],
    }
    for edge in rng.permutation(list(edges)):
        gap = edges[str(edge)]
        if others and all(gap(o) > gap(target) + 0.08 * min(height, width) for o in others):
            return _sentence(
                rng,
                [
                    "the {cat} that is closest to the {edge} edge of the image.",
                    "the {cat} nearest to the {edge} of the image.",
                ],
                cat=target.category,
                edge=str(edge),
            )
    return None


def _relation(
    rng: np.random.Generator,
    target: WorldObject,
    world: World,
    same: list[WorldObject],
    by_category: dict[str, list[WorldObject]],
) -> str | None:
    others = [o for o in same if o is not target]
    # Only an object alone of its category names one anchor ("the airplane"). Counted from
    # the category lists: counting over every object for each one is cubic on a large scene.
    anchors = [
        o
        for o in world.objects
        if o.category != target.category and len(by_category[o.category]) == 1
    ]

    def distance_to(anchor: WorldObject) -> Callable[[WorldObject], float]:
        return lambda o: float(o.polygon.distance(anchor.polygon))

    choices = [(f"the {a.category}", distance_to(a)) for a in anchors]
    if world.roads:
        choices.append(
            (
                "the road",
                lambda o: min(o.polygon.distance(r.line) - r.width / 2 for r in world.roads),
            )
        )
    if not others or not choices:
        return None
    for index in rng.permutation(len(choices)):
        anchor, distance = choices[int(index)]
        mine = distance(target)
        if all(distance(o) > 1.6 * mine + 10 for o in others):
            return _sentence(
                rng,
                [
                    "the {cat} closest to {anchor}.",
                    "the {cat} that is nearest to {anchor}.",
                    "the {cat} next to {anchor}.",
                ],
                cat=target.category,
                anchor=anchor,
            )
    return None


def _superlative(
    rng: np.random.Generator, target: WorldObject, same: list[WorldObject], width: int
) -> str | None:
    others = [o for o in same if o is not target]
    if not others:
        return None
    cat = target.category
    areas = sorted((o.area_px for o in others), reverse=True)
    sizes = [] if cat == "tennis court" else ["largest", "smallest"]
    orders = ["left", "right"]
    for kind in rng.permutation(sizes + orders):
        if kind == "largest" and target.area_px > 1.35 * areas[0]:
            return _sentence(rng, ["the largest {cat}.", "the biggest {cat}."], cat=cat)
        if kind == "smallest" and target.area_px * 1.35 < areas[-1]:
            return _sentence(rng, ["the smallest {cat}.", "the tiniest {cat}."], cat=cat)
        if kind in orders:
            sign = 1 if kind == "left" else -1
            ranked = sorted(same, key=lambda o: sign * o.centre[0])
            rank = ranked.index(target)
            xs = [sign * o.centre[0] for o in ranked]
            gaps = [b - a for a, b in itertools.pairwise(xs)]
            near = gaps[max(0, rank - 1) : rank + 1]
            if rank > 1 or (near and min(near) < 0.06 * width):
                continue
            if rank == 0:
                return _sentence(
                    rng,
                    ["the {side}most {cat}.", "the first {cat} from the {side}."],
                    cat=cat,
                    side=kind,
                )
            return _sentence(rng, ["the second {cat} from the {side}."], cat=cat, side=kind)
    return None


def _negative(rng: np.random.Generator, world: World) -> Expression | None:
    present = {o.category for o in world.objects}
    absent = [c for c in CATEGORIES if c not in present]
    if not absent:
        return None
    cat = str(rng.choice(absent))
    text = _sentence(
        rng,
        [
            "the {cat}.",
            "the largest {cat}.",
            "the {cat} at the top left of the image.",
            "the {cat} closest to the road.",
            "the white {cat}.",
        ],
        cat=cat,
    )
    return Expression(text, "negative", 0, cat)


def make_expressions(
    rng: np.random.Generator,
    world: World,
    per_kind: int = 1,
    negatives: float = 0.15,
) -> list[Expression]:
    """Unambiguous expressions for ``world``: up to ``per_kind`` of each positive kind.

    Referents are drawn without replacement within a kind, so a frame with several objects
    gives expressions about different objects.

    Args:
        rng: Source of every choice.
        world: The frame.
        per_kind: Expressions per kind (fewer when not enough are unambiguous).
        negatives: Probability of adding one negative expression.
    """
    height, width = world.labels.shape
    by_category: dict[str, list[WorldObject]] = {}
    for obj in world.objects:
        by_category.setdefault(obj.category, []).append(obj)
    makers: dict[str, Callable[[WorldObject], str | None]] = {
        "attribute": lambda t: _attribute(rng, t, by_category[t.category]),
        "position": lambda t: _position(rng, t, by_category[t.category], height, width),
        "relation": lambda t: _relation(rng, t, world, by_category[t.category], by_category),
        "superlative": lambda t: _superlative(rng, t, by_category[t.category], width),
    }
    expressions = []
    for kind, maker in makers.items():
        found = 0
        for index in rng.permutation(len(world.objects)):
            if found == per_kind:
                break
            target = world.objects[int(index)]
            text = maker(target)
            if text is not None:
                expressions.append(Expression(text, kind, target.object_id, target.category))
                found += 1
    if rng.random() < negatives:
        negative = _negative(rng, world)
        if negative is not None:
            expressions.append(negative)
    return expressions


def every_instance_expressions(rng: np.random.Generator, world: World) -> list[Expression]:
    """A bare category over every one of its objects, and a bare category the frame lacks.

    The first is an ``every`` expression for a category with two or more objects ("The
    ship.", every ship in the mask); the second a ``negative`` in the same words for an absent
    category ("The airplane." over ships, an empty mask). Both or neither: taught alone, the
    first makes a bare category mark whatever looks like it (a white ship read as "The
    airplane.", docs/scene-referring.md); the second teaches it to mark nothing else.
    """
    by_category: dict[str, list[int]] = {}
    for obj in world.objects:
        by_category.setdefault(obj.category, []).append(obj.object_id)
    several = sorted(c for c, ids in by_category.items() if len(ids) >= 2)
    absent = [c for c in CATEGORIES if c not in by_category]
    if not several or not absent:
        return []
    # Mostly the words the scene pipeline's description pass sends ("The ship.").
    templates = ["the {cat}.", "the {cat}.", "the {cat}s.", "all the {cat}s."]
    cat = str(rng.choice(several))
    first, *others = sorted(by_category[cat])
    every = Expression(_sentence(rng, templates, cat=cat), "every", first, cat, tuple(others))
    missing = str(rng.choice(absent))
    return [every, Expression(_sentence(rng, templates, cat=missing), "negative", 0, missing)]
