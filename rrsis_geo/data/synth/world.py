"""A synthetic overhead world: textured ground, roads, water and objects, drawn as pixels.

One function, :func:`render_world`, lays out and draws a frame of any size (a 512 x 512 chip
or an 8192 x 8192 scene); the geometry of every object is a shapely polygon in pixel
coordinates (x right, y down), and its mask is that polygon rasterized by GDAL, so pixels,
masks and exported polygons agree by construction. Everything is drawn from one
``numpy.random.Generator``: the same seed gives the same bytes.

Scale: :data:`GSD` metres per pixel; object sizes are drawn in metres, roughly as the
RISBench categories appear in 0.3 m imagery, but bigger at the small end (vehicles are vans,
trucks and buses) so that every object stays several pixels wide at the model's input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from PIL import Image
from shapely.geometry import LineString, Polygon
from shapely.geometry.base import BaseGeometry

__all__ = [
    "CATEGORIES",
    "GSD",
    "Road",
    "World",
    "WorldObject",
    "category_areas_m2",
    "render_world",
]

GSD = 0.3
"""Ground resolution of the synthetic world in metres per pixel."""

CATEGORIES = (
    "storage tank",
    "building",
    "airplane",
    "ship",
    "vehicle",
    "swimming pool",
    "tennis court",
)
"""Object categories, named as RISBench names them."""

# Named colours per category (RGB); expressions use the names.
PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "storage tank": {"white": (232, 232, 226), "gray": (150, 152, 156), "beige": (206, 190, 150)},
    "building": {
        "red": (168, 62, 48),
        "gray": (128, 128, 132),
        "white": (226, 224, 218),
        "brown": (120, 84, 56),
        "blue": (60, 96, 160),
    },
    "airplane": {"white": (236, 236, 236), "gray": (160, 164, 170)},
    "ship": {
        "white": (236, 236, 232),
        "gray": (136, 140, 146),
        "red": (176, 52, 44),
        "black": (40, 40, 44),
    },
    "vehicle": {
        "white": (236, 236, 236),
        "red": (196, 40, 36),
        "blue": (40, 70, 170),
        "black": (30, 30, 34),
        "yellow": (226, 190, 40),
    },
    "swimming pool": {"blue": (40, 130, 210), "turquoise": (60, 190, 200)},
    "tennis court": {"green": (60, 140, 80), "blue": (50, 90, 160), "red": (176, 88, 60)},
}

# How often each category is drawn, relative to the others.
CATEGORY_WEIGHTS = {
    "storage tank": 1.4,
    "building": 1.2,
    "airplane": 0.8,
    "ship": 1.0,
    "vehicle": 1.0,
    "swimming pool": 0.8,
    "tennis court": 0.6,
}

GROUND_COLOURS = {
    "grass": (96, 124, 70),
    "soil": (150, 128, 98),
    "concrete": (168, 166, 160),
    "field": (120, 132, 80),
}
WATER_COLOUR = (38, 74, 96)
ROAD_COLOUR = (92, 92, 94)


@dataclass
class WorldObject:
    """One object of a frame.

    Attributes:
        object_id: 1-based id, unique in the frame (the value of its pixels in the label map).
        category: One of :data:`CATEGORIES`.
        colour: Colour name from the category's palette.
        polygon: Outline in pixel coordinates.
        length_m: Longest side (or diameter) in metres.
        angle: Orientation of the long axis in degrees, 0 = horizontal, counter-clockwise.
    """

    object_id: int
    category: str
    colour: str
    polygon: Polygon
    length_m: float
    angle: float

    @property
    def area_px(self) -> float:
        """Polygon area in pixels."""
        return float(self.polygon.area)

    @property
    def centre(self) -> tuple[float, float]:
        """Centroid ``(x, y)`` in pixels."""
        point = self.polygon.centroid
        return float(point.x), float(point.y)


@dataclass
class Road:
    """A straight road: its centre line in pixel coordinates and its width in pixels."""

    line: LineString
    width: float


@dataclass
class World:
    """A rendered frame.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        labels: ``(H, W)`` uint16: the ``object_id`` of each object's pixels, 0 elsewhere.
        objects: The objects, in drawing order.
        roads: The roads.
        water: Where water is, ``(H, W)`` bool.
    """

    image: np.ndarray
    labels: np.ndarray
    objects: list[WorldObject] = field(default_factory=list)
    roads: list[Road] = field(default_factory=list)
    water: np.ndarray | None = None

    def mask(self, object_id: int, *others: int) -> np.ndarray:
        """Boolean mask of one object, or of several (all False for 0, the id of no object)."""
        if not object_id:
            return np.zeros(self.labels.shape, bool)
        return np.isin(self.labels, (object_id, *others)) if others else self.labels == object_id


def render_world(
    rng: np.random.Generator,
    height: int,
    width: int,
    object_density: float = 1.0,
    focus: tuple[str, ...] | None = None,
) -> World:
    """Lay out and draw a frame.

    Args:
        rng: Source of every random choice.
        height: Rows.
        width: Columns.
        object_density: Objects per 512 x 512 pixels, relative to a chip's 3 to 7.
        focus: Categories that get several instances (default: one or two drawn at random),
            so that superlatives and ordinals have something to compare.
    """
    image = _ground(rng, height, width)
    water = _water(rng, height, width)
    image[water] = _textured(rng, WATER_COLOUR, 6, water.sum())
    roads = _roads(rng, height, width)
    road_mask = np.zeros((height, width), bool)
    for road in roads:
        this_road = _rasterize(road.line.buffer(road.width / 2, cap_style="flat"), height, width)
        this_road &= ~water
        image[this_road] = _textured(rng, ROAD_COLOUR, 4, this_road.sum())
        _dashes(image, road, this_road)
        road_mask |= this_road

    area_chips = height * width / 512**2
    count = max(1, round(rng.integers(3, 8) * area_chips * object_density))
    if focus is None:
        focus = tuple(rng.choice(CATEGORIES, size=rng.integers(1, 3), replace=False).tolist())
    objects: list[WorldObject] = []
    occupied: list[BaseGeometry] = []
    labels = np.zeros((height, width), np.uint16)
    light = rng.uniform(0, 2 * math.pi)
    names = list(CATEGORIES)
    weights = np.array([CATEGORY_WEIGHTS[c] * (4.0 if c in focus else 1.0) for c in names])
    attempts = 0
    while len(objects) < count and attempts < count * 40:
        attempts += 1
        category = str(rng.choice(names, p=weights / weights.sum()))
        if category == "ship" and not water.any():
            continue
        placed = _place(rng, category, height, width, water, road_mask, roads, occupied)
        if placed is None:
            continue
        polygon, length_m, angle = placed
        colour = str(rng.choice(list(PALETTES[category])))
        obj = WorldObject(len(objects) + 1, category, colour, polygon, length_m, angle)
        _draw(rng, image, labels, obj, light)
        objects.append(obj)
        occupied.append(polygon.buffer(6))
    return World(image=image, labels=labels, objects=objects, roads=roads, water=water)


# --- ground ----------------------------------------------------------------------------------


def _noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth value noise in about [-1, 1], with features ``cell`` pixels across."""
    rows, cols = height // cell + 2, width // cell + 2
    coarse = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
    big = Image.fromarray(coarse, mode="F").resize(
        (cols * cell, rows * cell), Image.Resampling.BICUBIC
    )
    return np.asarray(big)[:height, :width]


def _textured(
    rng: np.random.Generator, colour: tuple[int, int, int], amplitude: float, count: int
) -> np.ndarray:
    """``count`` pixels of ``colour`` with per-pixel grain."""
    grain = rng.normal(0, amplitude, (int(count), 1))
    return np.clip(np.asarray(colour, np.float32) + grain, 0, 255).astype(np.uint8)


def _ground(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = str(rng.choice(list(GROUND_COLOURS)))
    base = np.asarray(GROUND_COLOURS[kind], np.float32) * rng.uniform(0.85, 1.15, 3)
    shade = 18 * _noise(rng, height, width, 96) + 8 * _noise(rng, height, width, 12)
    image = base + shade[..., None] + rng.normal(0, 5, (height, width, 1))
    if kind == "field":
        # A patchwork of parcels, each with its own crop colour and furrow direction.
        parcel = max(96, min(height, width) // 3)
        for y0 in range(0, height, parcel):
            for x0 in range(0, width, parcel):
                tint = rng.uniform(-30, 30, 3)
                angle = rng.uniform(0, math.pi)
                ys, xs = np.mgrid[y0 : min(y0 + parcel, height), x0 : min(x0 + parcel, width)]
                furrows = 10 * np.sin((xs * math.cos(angle) + ys * math.sin(angle)) / 2.5)
                image[y0 : y0 + parcel, x0 : x0 + parcel] += tint + furrows[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _water(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A body of water with a wavy shore over part of the frame (or none)."""
    water = np.zeros((height, width), bool)
    bodies = rng.poisson(0.6 * max(1.0, height * width / 2048**2))
    if height * width <= 1024**2:
        bodies = int(rng.random() < 0.45)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    size = float(max(height, width))
    for _ in range(bodies):
        angle = rng.uniform(0, 2 * math.pi)
        along = xs * math.cos(angle) + ys * math.sin(angle)
        centre = rng.uniform(0.2, 0.8) * width * math.cos(angle) + rng.uniform(
            0.2, 0.8
        ) * height * math.sin(angle)
        shore = 0.06 * size * _noise(rng, height, width, max(32, int(size // 6)))
        if height * width <= 1024**2:
            water |= along + shore > centre
        else:
            # Large frames get lakes: the half-plane limited to a disc.
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            radius = rng.uniform(0.08, 0.2) * size
            water |= (np.hypot(xs - cx, ys - cy) + shore) < radius
    return water


def _roads(rng: np.random.Generator, height: int, width: int) -> list[Road]:
    roads = []
    count = rng.poisson(0.8 * max(1.0, math.sqrt(height * width) / 1024))
    diagonal = math.hypot(height, width)
    for _ in range(min(count, 12)):
        angle = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        dx, dy = math.cos(angle) * diagonal, math.sin(angle) * diagonal
        line = LineString([(cx - dx, cy - dy), (cx + dx, cy + dy)])
        roads.append(Road(line=line, width=float(rng.uniform(8, 12) / GSD / 2)))
    return roads


def _dashes(image: np.ndarray, road: Road, road_mask: np.ndarray) -> None:
    """A dashed white centre line, drawn on the road's own pixels."""
    ys, xs = np.nonzero(road_mask)
    (ax, ay), (bx, by) = road.line.coords[0], road.line.coords[-1]
    ux, uy = (bx - ax) / road.line.length, (by - ay) / road.line.length
    along = (xs + 0.5 - ax) * ux + (ys + 0.5 - ay) * uy
    across = -(xs + 0.5 - ax) * uy + (ys + 0.5 - ay) * ux
    dash = (np.abs(across) < 0.8) & (np.mod(along, 24.0) < 12.0)
    image[ys[dash], xs[dash]] = (210, 210, 200)


def _rasterize(geometry: BaseGeometry, height: int, width: int) -> np.ndarray:
    """Pixels whose centre is inside ``geometry`` (GDAL's rule, as for every mask here)."""
    if geometry.is_empty:
        return np.zeros((height, width), bool)
    return rasterio.features.rasterize(
        [(geometry, 1)], out_shape=(height, width), transform=Affine.identity(), dtype="uint8"
    ).astype(bool)


def _window(
    geometry: BaseGeometry, height: int, width: int, pad: int = 0
) -> tuple[tuple[slice, slice], BaseGeometry]:
    """The frame window around ``geometry`` (plus ``pad``), and the geometry in its pixels."""
    minx, miny, maxx, maxy = geometry.bounds
    x0, y0 = max(0, int(minx) - pad), max(0, int(miny) - pad)
    x1, y1 = min(width, int(maxx) + pad + 1), min(height, int(maxy) + pad + 1)
    local = shapely.affinity.translate(geometry, -x0, -y0)
    return (slice(y0, y1), slice(x0, x1)), local


# --- objects ---------------------------------------------------------------------------------

# Size ranges in metres: (min, max) of the long side or diameter.
SIZES_M = {
    "storage tank": (12.0, 40.0),
    "building": (14.0, 42.0),
    "airplane": (24.0, 52.0),
    "ship": (24.0, 80.0),
    "vehicle": (6.0, 14.0),
    "swimming pool": (8.0, 22.0),
    "tennis court": (34.0, 38.0),
}


def _shape(rng: np.random.Generator, category: str, length: float) -> Polygon:
    """Outline centred on the origin, long axis along x, in pixels."""
    if category == "storage tank":
        return shapely.Point(0, 0).buffer(length / 2, quad_segs=16)
    if category == "airplane":
        half, span = length / 2, length * rng.uniform(0.85, 1.05)
        body = length * 0.06
        outline = [
            (half, 0),
            (half * 0.8, body),
            (0.15 * length, body),
            (-0.05 * length, span / 2),
            (-0.16 * length, span / 2),
            (-0.08 * length, body),
            (-0.38 * length, body),
            (-0.46 * length, span / 5),
            (-half, span / 5),
            (-half * 0.92, 0),
        ]
        outline += [(x, -y) for x, y in reversed(outline[1:-1])]
        return Polygon(outline)
    if category == "ship":
        half, beam = length / 2, length * rng.uniform(0.14, 0.2) / 2
        return Polygon(
            [(half, 0), (half * 0.6, beam), (-half, beam), (-half, -beam), (half * 0.6, -beam)]
        )
    ratio = {
        "building": (0.45, 0.95),
        "vehicle": (0.35, 0.45),
        "swimming pool": (0.4, 0.65),
        "tennis court": (0.5, 0.55),
    }[category]
    width = length * rng.uniform(*ratio)
    return shapely.box(-length / 2, -width / 2, length / 2, width / 2)


class _EndOfRange:
    """Stands in for the generator in :func:`_shape`: every proportion at one end of its range."""

    def __init__(self, high: bool) -> None:
        self.high = high

    def uniform(self, low: float, high: float) -> float:
        return high if self.high else low


def category_areas_m2() -> dict[str, tuple[float, float]]:
    """``(smallest, largest)`` area in m² an object of each category can have in this world.

    The outline at the short end of :data:`SIZES_M` with every proportion (width, wing span,
    beam) at its low end, and at the long end with every one at its high end: a shape's area
    grows with each of them. A model trained on this world declares these
    (``category_areas_m2`` in its config), so that the scene strategy knows a speck from the
    smallest storage tank.
    """
    areas = {}
    for category, (low, high) in SIZES_M.items():
        ends = [
            _shape(cast(np.random.Generator, _EndOfRange(big)), category, length / GSD).area
            for big, length in ((False, low), (True, high))
        ]
        areas[category] = (round(ends[0] * GSD**2, 1), round(ends[1] * GSD**2, 1))
    return areas


def _place(
    rng: np.random.Generator,
    category: str,
    height: int,
    width: int,
    water: np.ndarray,
    road_mask: np.ndarray,
    roads: list[Road],
    occupied: list[BaseGeometry],
) -> tuple[Polygon, float, float] | None:
    low, high = SIZES_M[category]
    length_m = float(rng.uniform(low, high))
    angle = float(rng.uniform(0, 180)) if category != "storage tank" else 0.0
    if category in ("building", "tennis court", "swimming pool") and rng.random() < 0.6:
        angle = float(rng.choice([0.0, 90.0]))  # most are aligned with a street grid
    shape = _shape(rng, category, length_m / GSD)
    if category == "vehicle" and roads and rng.random() < 0.7:
        # On a road, along it.
        road = roads[int(rng.integers(len(roads)))]
        point = road.line.interpolate(float(rng.uniform(0, road.line.length)))
        (x0, y0), (x1, y1) = road.line.coords[0], road.line.coords[-1]
        angle = math.degrees(math.atan2(-(y1 - y0), x1 - x0)) % 180
        offset = rng.choice([-1, 1]) * road.width / 4
        normal = math.radians(angle + 90)
        cx, cy = point.x + offset * math.cos(normal), point.y - offset * math.sin(normal)
    else:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    # Pixel y runs down, so a counter-clockwise angle on the ground is clockwise here.
    polygon = shapely.affinity.translate(shapely.affinity.rotate(shape, -angle), cx, cy)
    minx, miny, maxx, maxy = polygon.bounds
    if minx < 3 or miny < 3 or maxx > width - 3 or maxy > height - 3:
        return None
    if any(polygon.intersects(other) for other in occupied):
        return None
    window, local = _window(polygon, height, width)
    probe = _rasterize(local, window[0].stop - window[0].start, window[1].stop - window[1].start)
    if not probe.any():
        return None
    on_water = water[window][probe].mean()
    if category == "ship":
        if on_water < 1.0:
            return None
    elif on_water > 0.0:
        return None
    if category != "vehicle" and road_mask[window][probe].any():
        return None
    return polygon, length_m, angle


def _draw(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    obj: WorldObject,
    light: float,
) -> None:
    """Shadow, body with shading and details, and the object's label pixels."""
    height, width = labels.shape
    polygon = obj.polygon
    category = obj.category
    raised = {
        "storage tank": 0.5,
        "building": 0.35,
        "airplane": 0.12,
        "ship": 0.1,
        "vehicle": 0.2,
        "swimming pool": 0.0,
        "tennis court": 0.0,
    }[category]
    window, local = _window(polygon, height, width, pad=int(raised * obj.length_m / GSD) + 4)
    shape = (window[0].stop - window[0].start, window[1].stop - window[1].start)
    body = _rasterize(local, *shape)
    patch = image[window].astype(np.float32)
    if raised:
        distance = raised * obj.length_m / GSD
        shadow = shapely.affinity.translate(
            local, distance * math.cos(light), distance * math.sin(light)
        )
        dark = _rasterize(shadow, *shape) & ~body
        patch[dark] *= 0.55
    colour = np.asarray(PALETTES[category][obj.colour], np.float32)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    cx, cy = local.centroid.x, local.centroid.y
    if category == "storage tank":
        radius = obj.length_m / GSD / 2
        r = np.hypot(xs + 0.5 - cx, ys + 0.5 - cy) / radius
        shading = 1.0 - 0.12 * r + 0.08 * np.cos(np.arctan2(ys - cy, xs - cx) - light)
        rim = (r > 0.86) & (r < 0.94)
        layer = colour * shading[..., None]
        layer[rim] *= 0.8
    elif category == "building":
        # Two roof halves lit differently along the ridge.
        angle = math.radians(obj.angle)
        across = -(xs - cx) * math.sin(angle) - (ys - cy) * math.cos(angle)
        layer = colour * np.where(across > 0, 1.08, 0.9)[..., None]
    elif category == "tennis court":
        layer = np.broadcast_to(colour, (*shape, 3)).copy()
        inner = _rasterize(local.buffer(-0.12 * obj.length_m / GSD * 0.5), *shape)
        lines = inner & ~_rasterize(local.buffer(-0.12 * obj.length_m / GSD * 0.5 - 1.2), *shape)
        angle = math.radians(obj.angle)
        along = (xs - cx) * math.cos(angle) - (ys - cy) * math.sin(angle)
        lines |= inner & (np.abs(along) < 0.8)
        layer[lines] = 235
    elif category == "swimming pool":
        layer = np.broadcast_to(colour, (*shape, 3)).copy()
        edge = body & ~_rasterize(local.buffer(-1.5), *shape)
        layer[edge] = 228
    else:
        layer = colour * (1.0 + 0.05 * rng.normal(size=(*shape, 1)))
    grain = rng.normal(0, 3, (*shape, 1))
    patch[body] = (layer + grain)[body]
    image[window] = np.clip(patch, 0, 255).astype(np.uint8)
    labels[window][body] = obj.object_id
