"""How a referring sentence is read for scene-level referring.

:func:`parse_sentence` splits a sentence into the target description the model segments
("white storage tank") and the scene-level words that choose among the candidates
("the second largest"). Matching is case-insensitive; the article, a trailing full stop,
"in/of the image", "in the scene", "on the map", "that is", "which is", "located" and
"positioned" are ignored around the scene words. The grammar, tried in this order (the first
pattern that leaves a non-empty description wins):

- prefix: "all/every/each X" asks for every referent (count None); a count word or digit
  ("the three ...", "the 3 ...") asks for that many. Either makes the description singular.
- order: "the ORD X from the left/right/top/bottom/north/south/east/west (edge)".
- size: "(ORD) largest/biggest/smallest/tiniest X" -> area.
- extreme: "(ORD) northernmost/.../top-most/uppermost/bottom-most/lowest/leftmost/rightmost X".
- proximity to the scene: "X closest to / nearest to / farthest from the top (edge)" is an
  extreme; "... the centre/center/middle" is the distance to the scene centre (kind region);
  "... the top right corner" is that ninth (kind region).
- region: "X at/in/on/near/towards the top right (corner/side/part) / centre / left".
- relation: "X closest to / nearest (to) / next to / near / beside / farthest from ANCHOR"
  -> distance to the anchor; "the closest X to ANCHOR" is read as "X closest to ANCHOR".
- anything else: kind "description", the model's own choice.

Image words mean the scene as a north-up map shows it: top is north, right is east.
Everything here is deterministic and pure Python.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

KINDS = ("description", "size", "extreme", "order", "region", "relation")
MEASURES = ("area", "northing", "easting", "centre_distance", "region", "anchor_distance")

_ORDINAL_WORDS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5,
    "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
}  # fmt: skip
_COUNT_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_ORD = r"(?:" + "|".join(_ORDINAL_WORDS) + r"|[1-9]\d*(?:st|nd|rd|th))"
_COUNT = r"(?:" + "|".join(_COUNT_WORDS) + r"|[1-9]\d*)"
_SCENE = r"(?:image|scene|map|picture|photo|photograph)"
_EDGE = r"(?:edge|side|border|boundary|margin|corner|part|half|area|portion|region|section|end)"
_VERTICAL = r"(?:northern|southern|north|south|central|centre|center|middle|upper|lower|top|bottom)"
_HORIZONTAL = r"(?:eastern|western|east|west|central|centre|center|middle|left|right)"
# A place in the scene: "top right", "top-right", "northwest", "centre", "left", "bottom".
_AREA = rf"(?:(?P<v>{_VERTICAL})(?:[- ]?(?P<h>{_HORIZONTAL}))?|(?P<h2>{_HORIZONTAL}))"
_DIRECTION = r"(?:north|south|east|west|top|upper|bottom|lower|left|right)"
# "the image centre", "the scene's left edge": the scene word before the area is not a target.
_THE_AREA = rf"(?:the\s+)?(?:{_SCENE}(?:'s)?\s+)?(?:very\s+|far\s+)?{_AREA}(?:[- ]hand)?"

# Direction word -> (measure, descending); image words are map words for a north-up scene.
_DIRECTIONS = {
    "north": ("northing", True), "top": ("northing", True), "upper": ("northing", True),
    "south": ("northing", False), "bottom": ("northing", False), "lower": ("northing", False),
    "lowest": ("northing", False),
    "east": ("easting", True), "right": ("easting", True),
    "west": ("easting", False), "left": ("easting", False),
}  # fmt: skip
_ROWS = {"top": 0, "upper": 0, "north": 0, "northern": 0, "bottom": 2, "lower": 2, "south": 2,
         "southern": 2}  # fmt: skip
_COLS = {"left": 0, "west": 0, "western": 0, "right": 2, "east": 2, "eastern": 2}
_ROW_NAMES = ("top", "middle", "bottom")
_COL_NAMES = ("left", "centre", "right")

_FILLER_SCENE = re.compile(rf"\b(?:in|of|on|within)\s+(?:the|this)\s+(?:given\s+)?{_SCENE}\b")
_FILLER_WORDS = r"(?:(?:that|which)\s+(?:is|are)|located|positioned|situated|lying)"
_IRREGULAR_PLURALS = {
    "buses": "bus", "people": "person", "men": "man", "women": "woman", "children": "child",
    "leaves": "leaf", "geese": "goose", "mice": "mouse", "feet": "foot", "teeth": "tooth",
}  # fmt: skip
# Words that end in "s" in the singular: "every bus", "all tennis", "all grass".
_S_SINGULARS = ("bus", "gas", "grass", "glass", "lens", "campus", "chassis", "series", "species")
_HEAD_BREAKS = {"of", "with", "on", "in", "at", "near", "from", "by", "for", "along"}


@dataclass(frozen=True)
class SceneQuery:
    """How one referring sentence is read for scene-level referring.

    Attributes:
        text: The sentence, whitespace-normalized.
        description: The target description without article, scene words and punctuation
            ("white storage tank"); singular when the sentence asks for several.
        kind: One of :data:`KINDS`; "description" means no scene-level words.
        measure: One of :data:`MEASURES`; None for kind "description" and for "all X".
        descending: True: highest value first (largest area, highest northing or easting,
            farthest from).
        ordinal: 1-based place in the ranking ("the second largest" = 2).
        count: Referents wanted: 1, N ("the three largest"), None for all ("all ships").
        region: (row, col) of the scene's 3x3 ninths, north up: (0, 0) top left ...
            (1, 1) centre ... (2, 2) bottom right; None unless measure is "region".
        anchor: The anchor description of a relation ("road"), else None.
        words: The scene-level words as matched ("second largest", "closest to the pier").
    """

    text: str
    description: str
    kind: str
    measure: str | None
    descending: bool = False
    ordinal: int = 1
    count: int | None = 1
    region: tuple[int, int] | None = None
    anchor: str | None = None
    words: str = ""

    def __post_init__(self) -> None:
        # Others build queries by hand (tests, the plugin): a typo must fail here, not
        # silently rank by nothing later.
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {KINDS}")
        if self.measure is not None and self.measure not in MEASURES:
            raise ValueError(f"measure {self.measure!r} is not one of {MEASURES}")
        if self.ordinal < 1 or (self.count is not None and self.count < 1):
            raise ValueError("ordinal and count start at 1")

    @property
    def model_sentence(self) -> str:
        """The sentence the model reads for the candidate pass, as the training data has it."""
        return f"The {self.description}."

    @property
    def anchor_sentence(self) -> str | None:
        """The sentence of the anchor's candidate pass, or None without an anchor."""
        return f"The {self.anchor}." if self.anchor else None

    def explain(self) -> str:
        """How the sentence was read, one short line per fact (for ``--explain``)."""
        lines = [f'target: "{self.description}"']
        if self.kind == "description":
            lines.append("no scene-level words: the model's own choice")
            return "\n".join(lines)
        lines.append(f'scene words: "{self.words}"')
        lines.extend(_measure_lines(self))
        lines.append(_referent_line(self.ordinal, self.count))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Every field plus ``model_sentence`` and ``anchor_sentence``, JSON-ready."""
        data = dataclasses.asdict(self)
        data["region"] = list(self.region) if self.region is not None else None
        data["model_sentence"] = self.model_sentence
        data["anchor_sentence"] = self.anchor_sentence
        return data


def _measure_lines(query: SceneQuery) -> list[str]:
    """The explain lines of what is ranked and in which order."""
    first = "farthest first" if query.descending else "closest first"
    if query.measure == "area":
        return [f"ranked by: area, {'largest' if query.descending else 'smallest'} first"]
    if query.measure == "northing":
        side = "northernmost (top)" if query.descending else "southernmost (bottom)"
        return [f"ranked by: northing (north up), {side} first"]
    if query.measure == "easting":
        side = "easternmost (right)" if query.descending else "westernmost (left)"
        return [f"ranked by: easting (north up), {side} first"]
    if query.measure == "centre_distance":
        return [f"ranked by: distance from the scene centre in metres, {first}"]
    if query.measure == "region" and query.region is not None:
        return [
            f"region: {ninth_name(query.region)} ninth of the scene (north up)",
            f"ranked by: in that ninth first, then distance from its centre in metres, {first}",
        ]
    if query.measure == "anchor_distance":
        return [f'anchor: "{query.anchor}" (distance in metres, {first})']
    return ["ranked by: nothing, every candidate of the target"]  # "all ships"


def _referent_line(ordinal: int, count: int | None) -> str:
    """The explain line of which places of the ranking are the referents."""
    if count is None:
        return "referents: all of them"
    if count == 1:
        return f"referent: {ordinal_name(ordinal)}"
    if ordinal == 1:
        return f"referents: the {count} first"
    return f"referents: {count} from the {ordinal_name(ordinal)}"


def ordinal_name(number: int) -> str:
    """``1`` -> ``"1st"``, ``12`` -> ``"12th"``, ``23`` -> ``"23rd"``."""
    if number % 100 in (11, 12, 13):
        return f"{number}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def ninth_name(region: tuple[int, int]) -> str:
    """(0, 2) -> ``"top right"``, (1, 1) -> ``"centre"``, (1, 0) -> ``"middle left"``."""
    row, col = region
    if (row, col) == (1, 1):
        return "centre"
    return f"{_ROW_NAMES[row]} {_COL_NAMES[col]}"


@dataclass(frozen=True)
class _Match:
    """What one grammar pattern found: the reading and the spans of its words in the body."""

    kind: str
    measure: str | None
    spans: tuple[tuple[int, int], ...]
    descending: bool = False
    ordinal: int = 1
    region: tuple[int, int] | None = None
    anchor: str | None = None


def _ordinal(word: str | None) -> int:
    """An ordinal word or "2nd"-style number as an int; 1 when absent."""
    if not word:
        return 1
    return _ORDINAL_WORDS.get(word) or int(re.sub(r"\D", "", word))


def _area(match: re.Match[str]) -> tuple[int, int, list[str]]:
    """(row, col, direction words) of an :data:`_AREA` match; centre words give row/col 1."""
    vertical, horizontal = match.group("v"), match.group("h") or match.group("h2")
    row = _ROWS.get(vertical or "", 1)
    col = _COLS.get(horizontal or "", 1)
    words = [w for w in (vertical, horizontal) if w and (w in _ROWS or w in _COLS)]
    # "northern" / "western" name the same direction as "north" / "west".
    return row, col, [w.removesuffix("ern") for w in words]


_ORDER_RE = re.compile(
    rf"^(?:(?P<ord1>{_ORD})\s+(?P<noun1>.+?)|(?P<noun2>.+?)\s+(?P<ord2>{_ORD}))"
    rf"\s+from\s+(?:the\s+)?(?:{_SCENE}(?:'s)?\s+)?(?:very\s+|far\s+)?(?P<dir>{_DIRECTION})"
    rf"(?:[- ]hand)?(?:\s+{_EDGE})?$"
)


def _match_order(body: str) -> _Match | None:
    """Order from a side: "the second ship from the left", "the ship second from the top"."""
    found = _ORDER_RE.match(body)
    if not found:
        return None
    measure, descending = _DIRECTIONS[found.group("dir")]
    spans: tuple[tuple[int, int], ...]
    if found.group("ord1"):
        spans = ((found.start("ord1"), found.end("ord1")), (found.end("noun1"), found.end()))
        ordinal = _ordinal(found.group("ord1"))
    else:
        spans = ((found.start("ord2"), found.end()),)
        ordinal = _ordinal(found.group("ord2"))
    return _Match("order", measure, spans, descending, ordinal)


_SIZE_RE = re.compile(rf"\b(?:(?P<ord>{_ORD})[- ]+)?(?P<size>largest|biggest|smallest|tiniest)\b")


def _match_size(body: str) -> _Match | None:
    """Size: "(second) largest / biggest / smallest / tiniest"."""
    found = _SIZE_RE.search(body)
    if not found:
        return None
    descending = found.group("size") in ("largest", "biggest")
    return _Match("size", "area", (found.span(),), descending, _ordinal(found.group("ord")))


_EXTREME_RE = re.compile(
    rf"\b(?:(?P<ord>{_ORD})[- ]+)?(?:(?P<dir>{_DIRECTION})(?:ern)?[- ]?most|(?P<low>lowest))\b"
)


def _match_extreme(body: str) -> _Match | None:
    """Extreme: "(second) northernmost / topmost / uppermost / lowest / leftmost / rightmost"."""
    found = _EXTREME_RE.search(body)
    if not found:
        return None
    measure, descending = _DIRECTIONS[found.group("dir") or found.group("low")]
    return _Match("extreme", measure, (found.span(),), descending, _ordinal(found.group("ord")))


_PROXIMITY_RE = re.compile(
    rf"\b(?:(?P<ord>{_ORD})[- ]+)?(?P<rel>(?:closest|nearest)(?:\s+to)?"
    rf"|(?:farthest|furthest)(?:\s+away)?\s+from)\s+{_THE_AREA}(?:\s+{_EDGE})?$"
)


def _match_proximity(body: str) -> _Match | None:
    """Nearness to the scene: "closest to the top (edge)", "... the centre", "... a corner"."""
    found = _PROXIMITY_RE.search(body)
    if not found:
        return None
    far = found.group("rel").startswith(("farthest", "furthest"))
    row, col, directions = _area(found)
    ordinal, spans = _ordinal(found.group("ord")), (found.span(),)
    if not directions:  # the centre: nearness to the scene's middle
        return _Match("region", "centre_distance", spans, far, ordinal)
    if len(directions) == 1:  # an edge: the object closest to it is the extreme toward it
        measure, toward = _DIRECTIONS[directions[0]]
        return _Match("extreme", measure, spans, toward != far, ordinal)
    # A corner: its ninth; "farthest from" a corner is the opposite corner's ninth.
    region = (2 - row, 2 - col) if far else (row, col)
    return _Match("region", "region", spans, False, ordinal, region)


_REGION_RE = re.compile(
    r"\b(?:at|in|on|to|towards?|near(?:\s+to)?|close\s+to|next\s+to|around|within|along)\s+"
    rf"{_THE_AREA}(?:\s+{_EDGE})?$"
)


def _match_region(body: str) -> _Match | None:
    """Region: "at the top right (corner)", "in the centre", "on the left side"."""
    found = _REGION_RE.search(body)
    if not found:
        return None
    row, col, _ = _area(found)
    return _Match("region", "region", (found.span(),), region=(row, col))


_RELATION_RE = re.compile(
    rf"\b(?:(?P<ord>{_ORD})[- ]+)?(?P<rel>(?:closest|nearest|next|close|near|adjacent)\s+to"
    r"|beside|nearest|closest|near|(?:farthest|furthest)(?:\s+away)?\s+from"
    r"|most\s+distant\s+from)\s+(?:(?:the|a|an)\s+)?(?P<anchor>.+)$"
)
# Anchors that are the scene itself: "closest to the edge" has no measure, it is no relation.
_SCENE_ANCHOR_RE = re.compile(
    rf"^(?:{_SCENE}(?:'s)?\s*)?(?:{_EDGE}s?|centre|center|middle)?$|^{_SCENE}\b"
)


def _match_relation(body: str) -> _Match | None:
    """Relation: "closest to / nearest (to) / next to / near / beside / farthest from X"."""
    found = _RELATION_RE.search(body)
    if not found or _SCENE_ANCHOR_RE.match(found.group("anchor")):
        return None
    far = found.group("rel").startswith(("farthest", "furthest", "most"))
    ordinal = _ordinal(found.group("ord"))
    anchor = found.group("anchor")
    return _Match("relation", "anchor_distance", (found.span(),), far, ordinal, None, anchor)


_MATCHERS = (
    _match_order,
    _match_size,
    _match_extreme,
    _match_proximity,
    _match_region,
    _match_relation,
)
_PREFIX_ALL_RE = re.compile(r"^(?P<all>all|every|each)(?:\s+of)?(?:\s+the)?\s+(?=\S)")
_PREFIX_COUNT_RE = re.compile(rf"^(?P<count>{_COUNT})\s+(?=\S)")
_FRONT_SUPERLATIVE_RE = re.compile(
    rf"^(?:(?P<ord>{_ORD})\s+)?(?P<sup>closest|nearest|farthest|furthest)\s+(?P<noun>.+?)"
    r"\s+(?P<prep>to|from)\s+(?P<rest>.+)$"
)


def _clean(text: str) -> str:
    """Lower case without punctuation, scene fillers ("in the image") and leading article."""
    body = text.lower().replace(",", " ")
    body = re.sub(r"[\"“”]", "", body)
    body = re.sub(r"[.!?;:]+(?:\s|$)", " ", body)
    body = _FILLER_SCENE.sub(" ", body)
    body = " ".join(body.split())
    return re.sub(r"^(?:the|a|an)\s+", "", body)


def _take_prefix(body: str) -> tuple[str, int | None, str]:
    """Split "all X" / "every X" / "three X" into (X, count, prefix word)."""
    found = _PREFIX_ALL_RE.match(body)
    if found:
        return body[found.end() :], None, found.group("all")
    found = _PREFIX_COUNT_RE.match(body)
    if found:
        word = found.group("count")
        return body[found.end() :], _COUNT_WORDS.get(word) or int(word), word
    return body, 1, ""


def _front_superlative(body: str) -> str:
    """Move a front superlative: "closest ship to the road" -> "ship closest to the road"."""
    found = _FRONT_SUPERLATIVE_RE.match(body)
    if not found:
        return body
    ordinal = f"{found.group('ord')} " if found.group("ord") else ""
    sup, prep = found.group("sup"), found.group("prep")
    return f"{found.group('noun')} {ordinal}{sup} {prep} {found.group('rest')}"


def _without(body: str, spans: tuple[tuple[int, int], ...]) -> tuple[str, str]:
    """(body without the spans, the spans' words); fillers next to the words go too."""
    kept, words, start = [], [], 0
    for begin, end in sorted(spans):
        kept.append(body[start:begin])
        words.append(body[begin:end])
        start = end
    kept.append(body[start:])
    rest = " ".join(" ".join(kept).split())
    # "the tank that is located in the centre": "that is located" belonged to the scene words.
    rest = re.sub(rf"(?:\s*\b{_FILLER_WORDS})+$", "", rest)
    rest = re.sub(rf"^(?:{_FILLER_WORDS}\b\s*)+", "", rest)
    rest = re.sub(r"^(?:(?:the|a|an)\s+)+", "", rest).strip()
    return rest, " ".join(" ".join(words).split())


def singular(phrase: str) -> str:
    """The phrase with its head noun singular: "storage tanks" -> "storage tank".

    The head is the word before the first preposition ("tanks of oil"), else the last word.
    """
    words = phrase.split()
    head = next((i - 1 for i, w in enumerate(words) if i > 0 and w in _HEAD_BREAKS), -1)
    words[head] = _singular_word(words[head])
    return " ".join(words)


def _singular_word(word: str) -> str:
    """One English plural made singular by the few rules the target nouns need."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(_S_SINGULARS) or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"  # factories -> factory
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]  # benches -> bench, boxes -> box
    return word[:-1] if word.endswith("s") and len(word) > 2 else word


def parse_sentence(text: str) -> SceneQuery:
    """Read a referring sentence: its target description and its scene-level words.

    Args:
        text: The referring expression, e.g. "The second largest storage tank.".

    Returns:
        The reading; kind "description" (measure None, the whole description) when the
        sentence has none of the scene-level words.

    Raises:
        ValueError: The text is empty or only whitespace.
    """
    normalized = " ".join(text.split())
    if not normalized:
        raise ValueError("the sentence is empty: nothing to refer to")
    whole = _clean(normalized)
    body, count, prefix = _take_prefix(whole)
    body = _front_superlative(body)
    several = count != 1
    for matcher in _MATCHERS:
        found = matcher(body)
        if found is None:
            continue
        description, words = _without(body, found.spans)
        if not description:
            continue  # "the nearest ship": the words name no target apart from the scene word
        return SceneQuery(
            text=normalized,
            description=singular(description) if several else description,
            kind=found.kind,
            measure=found.measure,
            descending=found.descending,
            ordinal=found.ordinal,
            count=count,
            region=found.region,
            anchor=found.anchor,
            words=f"{prefix} {words}".strip(),
        )
    if count is None and body:  # "all storage tanks": every candidate, none ranked
        return SceneQuery(normalized, singular(body), "size", None, count=None, words=prefix)
    return SceneQuery(normalized, whole or normalized.lower(), "description", None)
