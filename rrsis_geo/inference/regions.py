"""Regions: the connected parts of a stitched probability map, as candidates in map coordinates.

The stitched map is one raster over the whole scene, so an object that a tile seam cut in two
is one connected part of it and becomes one region: regions are found once, after stitching,
never per tile. Each region keeps its polygon in the raster's CRS, its scores, its area in m²
and the highest presence score of the tiles whose cores it touches (what rejects a tile that
does not hold the target).

:class:`SceneFrame` is the metric, north-up frame in which the referring strategies compare
regions: the raster's own CRS when it is projected (whatever the geotransform's rotation, map
coordinates are north up), a local UTM zone when it is geographic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from rrsis_geo.geo.tiling import TileGrid
from rrsis_geo.geo.vectorize import Candidate, VectorOptions, polygonize

__all__ = [
    "AREA_TOLERANCE",
    "RIVAL_SCORE",
    "PresenceMap",
    "Region",
    "SceneFrame",
    "Verdict",
    "find_regions",
]


AREA_TOLERANCE = 0.8
"""A region passes the size check down to this share of its category's smallest trained area:
a mask runs a little inside its object's edge, so the smallest object's mask is a little smaller
than the object."""

RIVAL_SCORE = 0.2
"""A region under its category's smallest area that reads at least this much as a category of
its size (a bus read as a building) is taken for that one (see :attr:`Verdict.rival`)."""


@dataclass(frozen=True)
class Verdict:
    """What a region reads as when the model is asked for each category it knows.

    Attributes:
        category: The category the region was found as (its pass's description names it).
        scores: Mean probability over the region, per category of the model's vocabulary,
            each read on the same chip centred on the region; empty when the region was
            rejected by its size before any was read.
        threshold: The score its own category needs (the model's foreground threshold): a
            region the model, looking straight at it, does not mark is a fragment.
        area_m2: The region's area; None: not known.
        areas: ``(smallest, largest)`` area in m² of each category's objects in the model's
            training data (``ModelMetadata.category_areas_m2``); empty: no size check.
    """

    category: str
    scores: dict[str, float]
    threshold: float = 0.5
    area_m2: float | None = None
    areas: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def smallest_m2(self) -> float | None:
        """The smallest trained area of the region's category, if known."""
        known = self.areas.get(self.category)
        return known[0] if known else None

    @property
    def too_small(self) -> bool:
        """True when the region is far under the smallest object of its category (a speck)."""
        smallest = self.smallest_m2
        if self.area_m2 is None or smallest is None:
            return False
        return self.area_m2 < AREA_TOLERANCE * smallest

    @property
    def rival(self) -> str | None:
        """Another category a region under its own category's smallest area is taken for.

        An undersized region must read as nothing else: not as a category whose trained sizes
        fit it at :data:`RIVAL_SCORE` (an 85 m² "building" that also reads as a vehicle is a
        bus), nor as any other category at the threshold.
        """
        smallest, area = self.smallest_m2, self.area_m2
        if area is None or smallest is None or area >= smallest:
            return None

        def fits(category: str) -> bool:
            low, high = self.areas.get(category, (0.0, math.inf))
            return AREA_TOLERANCE * low <= area <= high / AREA_TOLERANCE

        rivals = [
            c
            for c, score in self.scores.items()
            if c != self.category
            and (score >= self.threshold or (score >= RIVAL_SCORE and fits(c)))
        ]
        return max(rivals, key=lambda c: self.scores[c], default=None)

    @property
    def reads_as(self) -> str:
        """The category with the highest score (the region's own on a tie or when unread)."""
        return max(
            self.scores, key=lambda c: (self.scores[c], c == self.category), default=self.category
        )

    @property
    def accepted(self) -> bool:
        """True when the region reads as its own category, at threshold, and has its size."""
        own = self.scores.get(self.category, 0.0)
        sized = not self.too_small and self.rival is None
        return sized and self.reads_as == self.category and own >= self.threshold

    @property
    def reason(self) -> str:
        """Why the region was rejected (empty when accepted)."""
        if self.accepted:
            return ""
        if self.too_small:
            return (
                f"rejected: {self.area_m2:.1f} m² is far under the smallest {self.category} "
                f"the model knows ({self.smallest_m2:.1f} m²)"
            )
        rival = self.rival
        if rival is not None:
            return (
                f"rejected: {self.area_m2:.1f} m², under the smallest {self.category} "
                f"({self.smallest_m2:.1f} m²), also reads as {rival} ({self.scores[rival]:.2f})"
            )
        other = self.reads_as
        if other == self.category:
            return (
                f"rejected: reads as {other} only {self.scores[other]:.2f} < "
                f"{self.threshold:g} on a chip centred on it"
            )
        return (
            f"rejected: reads as {other} ({self.scores[other]:.2f}) more than "
            f"{self.category} ({self.scores[self.category]:.2f})"
        )


@dataclass
class Region(Candidate):
    """One candidate: a connected part of the thresholded map, with its tiles' presence.

    Attributes:
        presence: Highest presence score of the tiles under the region; None when the model
            gives no presence. (The polygon, scores and area are :class:`Candidate`'s.)
        verdict: How the region reads against the model's other categories, once checked
            (:mod:`~rrsis_geo.inference.verification`); None until then.
        mended_from: The area (m²) the region had before the check mended it: the pass found a
            piece of an object, the model centred on it the whole (None: not mended).
    """

    presence: float | None = None
    verdict: Verdict | None = None
    mended_from: float | None = None

    @property
    def reads_as(self) -> tuple[str | None, float | None]:
        """What the check read the region as, and that category's score; Nones unchecked."""
        if self.verdict is None:
            return None, None
        category = self.verdict.reads_as
        return category, self.verdict.scores.get(category)

    @property
    def centroid(self) -> tuple[float, float]:
        """Centroid ``(x, y)`` in the raster's CRS."""
        point = self.geometry.centroid
        return float(point.x), float(point.y)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the raster's CRS."""
        minx, miny, maxx, maxy = self.geometry.bounds
        return float(minx), float(miny), float(maxx), float(maxy)


class PresenceMap:
    """The presence score of every tile, read back by where a region lies.

    A tile's score stands for its core: the pixels it alone decides after the margins are
    discarded, approximated by the grid cell between the midpoints of its overlaps.

    Args:
        grid: The tile grid of the pass.
    """

    def __init__(self, grid: TileGrid) -> None:
        self.grid = grid
        self.scores = np.full((len(grid.row_starts), len(grid.col_starts)), np.nan, np.float32)

    def record(self, row: int, col: int, presence: float) -> None:
        """Store one tile's presence score."""
        self.scores[row, col] = presence

    @property
    def recorded(self) -> bool:
        """True once any tile's presence was recorded (the model gives presence)."""
        return bool(np.isfinite(self.scores).any())

    def _cells(self, starts: list[int], low: float, high: float) -> range:
        half = self.grid.overlap / 2
        edges = [start + half for start in starts[1:]]
        first = int(np.searchsorted(edges, low, side="right"))
        last = int(np.searchsorted(edges, high, side="right"))
        return range(first, last + 1)

    def under(self, pixel_bounds: tuple[float, float, float, float]) -> float | None:
        """Highest score of the tiles whose cores meet ``(x0, y0, x1, y1)`` in pixels."""
        x0, y0, x1, y1 = pixel_bounds
        rows = self._cells(self.grid.row_starts, y0, y1)
        cols = self._cells(self.grid.col_starts, x0, x1)
        values = self.scores[rows.start : rows.stop, cols.start : cols.stop]
        if values.size == 0 or np.isnan(values).all():
            return None
        return float(np.nanmax(values))


def find_regions(
    mask_path: Path,
    probability_path: Path,
    options: VectorOptions,
    presence: PresenceMap | None = None,
) -> list[Region]:
    """The regions of a stitched map, best mean score first.

    Args:
        mask_path: The stitched binary work raster (1 foreground).
        probability_path: The stitched probabilities on the same grid.
        options: Polygon clean-up (sieve, simplification, minimum area).
        presence: The pass's per-tile presence scores, when the model gives them.
    """
    import rasterio

    with rasterio.open(mask_path) as dataset:
        inverse = ~dataset.transform
    regions = []
    for candidate in polygonize(mask_path, probability_path, options):
        score = None
        if presence is not None:
            corners = [inverse * xy for xy in box(*candidate.geometry.bounds).exterior.coords]
            xs, ys = zip(*corners, strict=True)
            score = presence.under((min(xs), min(ys), max(xs), max(ys)))
        regions.append(
            Region(
                candidate.geometry,
                candidate.score_mean,
                candidate.score_max,
                candidate.area_m2,
                score,
            )
        )
    return regions


@dataclass
class SceneFrame:
    """The scene in a metric, north-up frame: where places, distances and extremes are measured.

    Attributes:
        crs: The raster's CRS (None: pixel coordinates, treated as metres).
        metric_crs: The frame's CRS: the raster's when projected, else a local UTM zone.
        footprint: The raster's footprint polygon in the frame.
        unit: Metres per unit of a projected ``crs``.
    """

    crs: CRS | None
    metric_crs: CRS | None
    footprint: Polygon
    unit: float = 1.0

    @classmethod
    def from_dataset(cls, dataset: Any) -> SceneFrame:
        """The frame of an open rasterio dataset (any geotransform, any CRS)."""
        transform = dataset.transform
        corners = [
            transform * (x, y)
            for x, y in (
                (0, 0),
                (dataset.width, 0),
                (dataset.width, dataset.height),
                (0, dataset.height),
            )
        ]
        return cls.from_footprint(Polygon(corners), dataset.crs)

    @classmethod
    def from_footprint(cls, footprint: Polygon, crs: CRS | None) -> SceneFrame:
        """The frame of a footprint given in ``crs``."""
        if crs is None:
            return cls(None, None, footprint)
        if crs.is_geographic:
            import geopandas as gpd

            series = gpd.GeoSeries([footprint], crs=crs)
            metric = series.estimate_utm_crs()
            frame = cls(crs, CRS.from_user_input(metric), footprint)
            frame.footprint = frame.to_metric([footprint])[0]
            return frame
        unit = crs.linear_units_factor[1] if crs.is_projected else 1.0
        frame = cls(crs, crs, footprint, unit)
        frame.footprint = frame.to_metric([footprint])[0]
        return frame

    def to_metric(self, geometries: list[BaseGeometry]) -> list[BaseGeometry]:
        """Geometries of the raster's CRS in the frame (metres, north up)."""
        if not geometries or self.crs is None:
            return list(geometries)
        import shapely.affinity

        if self.crs.is_geographic:
            import geopandas as gpd

            return list(gpd.GeoSeries(geometries, crs=self.crs).to_crs(self.metric_crs))
        if self.unit == 1.0:
            return list(geometries)
        return [shapely.affinity.scale(g, self.unit, self.unit, origin=(0, 0)) for g in geometries]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the footprint in the frame."""
        minx, miny, maxx, maxy = self.footprint.bounds
        return float(minx), float(miny), float(maxx), float(maxy)
