"""Polygons from the stitched raster: polygonize once, sieve, score, simplify, write.

Polygonizing happens once, on the whole stitched mask (per-tile vectorizing duplicates objects
in overlaps). GDAL's polygonizer reads the mask file line by line, so memory follows the size of
the objects, not of the scene. Small blobs and small holes are removed on the polygons (a
sieve in vector form), then each polygon is scored from the probability raster under it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import rasterio.features
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import Polygon, shape

from rrsis_geo.errors import OutputError
from rrsis_geo.geo.formats import OUTPUT_FORMATS, VECTOR, suffixes
from rrsis_geo.geo.writers import PROBABILITY_SCALE

__all__ = ["VECTOR_DRIVERS", "Candidate", "VectorOptions", "polygonize", "write_polygons"]

VECTOR_DRIVERS = {suffix: OUTPUT_FORMATS[suffix].driver for suffix in suffixes(VECTOR)}
"""Output extensions written as polygons, and the driver of each (from the format registry)."""


@dataclass(frozen=True)
class VectorOptions:
    """Polygon clean-up.

    Attributes:
        sieve_pixels: Polygons and holes smaller than this many pixels are removed.
        simplify_pixels: Douglas-Peucker tolerance in pixels (0 keeps pixel edges).
        min_area_m2: Polygons smaller than this many square metres are dropped.
    """

    sieve_pixels: int = 16
    simplify_pixels: float = 1.0
    min_area_m2: float = 0.0


@dataclass
class Candidate:
    """One connected region of the thresholded mask.

    Attributes:
        geometry: Polygon in the raster's CRS.
        score_mean: Mean probability under the polygon.
        score_max: Highest probability under the polygon.
        area_m2: Area in square metres.
    """

    geometry: Polygon
    score_mean: float
    score_max: float
    area_m2: float


def polygonize(
    mask_path: Path,
    probability_path: Path,
    options: VectorOptions,
) -> list[Candidate]:
    """Connected foreground regions of a binary mask raster, scored and cleaned.

    Args:
        mask_path: Single-band uint8 raster: 1 foreground, 0 background, anything else nodata.
        probability_path: Raster of the same grid with the probabilities (uint8 scaled by 254,
            or float32).
        options: Clean-up options.

    Returns:
        Candidates ordered by decreasing mean score.
    """
    candidates: list[Candidate] = []
    with rasterio.open(mask_path) as mask_ds, rasterio.open(probability_path) as prob_ds:
        pixel_area = abs(mask_ds.transform.a * mask_ds.transform.e)
        tolerance = options.simplify_pixels * abs(mask_ds.transform.a)
        crs = mask_ds.crs
        band = rasterio.band(mask_ds, 1)
        smallest = options.sieve_pixels * pixel_area
        for geometry in _foreground_polygons(band, mask_ds.transform, smallest):
            geometry = _drop_small_holes(geometry, smallest)
            if geometry.area < smallest:
                continue
            score_mean, score_max = _scores(prob_ds, geometry)
            simplified = (
                geometry.simplify(tolerance, preserve_topology=True) if tolerance else geometry
            )
            candidates.append(Candidate(simplified, score_mean, score_max, 0.0))
    areas = areas_m2([c.geometry for c in candidates], crs)
    kept = []
    for candidate, area in zip(candidates, areas, strict=True):
        candidate.area_m2 = area
        if area >= options.min_area_m2:
            kept.append(candidate)
    kept.sort(key=lambda c: (-c.score_mean, -c.area_m2))
    return kept


def _foreground_polygons(band: Any, transform: Any, smallest: float) -> Iterator[Polygon]:
    # The band serves as its own mask: 0 (background) is excluded; nodata (255) regions come
    # out with their value and are dropped here. A noisy map has 100 times more specks than
    # regions: a speck whose outer ring alone is under ``smallest`` is dropped before shapely
    # builds it (holes only make a polygon smaller).
    for geojson, value in rasterio.features.shapes(
        band, mask=band, connectivity=8, transform=transform
    ):
        if value == 1 and _ring_area(geojson["coordinates"][0]) >= smallest:
            yield shape(geojson)


def _ring_area(ring: Sequence[Sequence[float]]) -> float:
    """Area inside a closed ring of ``(x, y)`` points (the shoelace formula)."""
    xy = np.asarray(ring, dtype=np.float64)
    x, y = xy[:, 0], xy[:, 1]
    return abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))) / 2.0


def _drop_small_holes(polygon: Polygon, min_area: float) -> Polygon:
    holes = [ring for ring in polygon.interiors if Polygon(ring).area >= min_area]
    if len(holes) == len(polygon.interiors):
        return polygon
    return Polygon(polygon.exterior, holes)


def _scores(dataset: Any, geometry: Polygon) -> tuple[float, float]:
    window = pixel_window(geometry, dataset.transform)
    window = window.intersection(Window(0, 0, dataset.width, dataset.height))
    values = dataset.read(1, window=window)
    inside = rasterio.features.geometry_mask(
        [geometry], values.shape, dataset.window_transform(window), invert=True
    )
    picked = values[inside].astype(np.float64)
    if dataset.dtypes[0] == "uint8":
        picked = picked[picked <= PROBABILITY_SCALE] / PROBABILITY_SCALE
    picked = picked[np.isfinite(picked)]
    if picked.size == 0:
        return 0.0, 0.0
    top = float(picked.max())
    return min(float(picked.mean()), top), top


def pixel_window(geometry: Any, transform: Any) -> Window:
    """The pixel window around a map geometry, for any geotransform (rotated or south-up too).

    rasterio's ``from_bounds`` assumes a north-up grid; the corners of the geometry's bounds
    are mapped through the inverse transform instead.
    """
    inverse = ~transform
    minx, miny, maxx, maxy = geometry.bounds
    corners = [inverse * xy for xy in ((minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy))]
    cols, rows = zip(*corners, strict=True)
    col0, row0 = math.floor(min(cols)), math.floor(min(rows))
    return Window(col0, row0, math.ceil(max(cols)) - col0, math.ceil(max(rows)) - row0)


def areas_m2(geometries: list[Polygon], crs: CRS | None) -> list[float]:
    """Areas in square metres.

    Geographic CRSs (and Web Mercator, whose areas grow with latitude) are projected to an
    estimated UTM zone first; other projected CRSs use their own unit.
    """
    if not geometries:
        return []
    if crs is None:
        return [g.area for g in geometries]
    import geopandas as gpd

    series = gpd.GeoSeries(geometries, crs=crs)
    if crs.is_geographic or crs.to_epsg() in (3857, 900913):
        return [float(a) for a in series.to_crs(series.estimate_utm_crs()).area]
    factor = crs.linear_units_factor[1] if crs.is_projected else 1.0
    return [float(a) * factor * factor for a in series.area]


class ScoredPolygon(Protocol):
    """What :func:`write_polygons` writes: a polygon with its scores and area."""

    geometry: Polygon
    score_mean: float
    score_max: float
    area_m2: float


def write_polygons(
    candidates: Sequence[ScoredPolygon],
    crs: CRS | None,
    path: Path,
    attributes: dict[str, Any],
    layer_name: str = "referents",
    columns: dict[str, Sequence[Any]] | None = None,
) -> None:
    """Write candidates with their attributes to a vector file (format from the extension).

    ``path`` is written as is; wrap the call in
    :func:`~rrsis_geo.geo.writers.atomic_output`.

    GeoJSON is written in EPSG:4326 as RFC 7946 requires; other formats keep the raster's CRS.
    Columns: ``rank`` (1 = highest mean score), ``score_mean``, ``score_max``, ``area_m2``,
    then ``columns`` (one value per polygon, e.g. ``chosen`` and ``reason`` of a candidate
    layer), then ``attributes`` (the same for every polygon: expression, model, threshold...).
    """
    import geopandas as gpd
    import pyogrio

    suffix = path.suffix.lower()
    driver = VECTOR_DRIVERS.get(suffix)
    if driver is None:
        raise OutputError(f"unsupported vector format {path.suffix!r}")
    table: dict[str, Any] = {
        "rank": np.arange(1, len(candidates) + 1, dtype=np.int32),
        "score_mean": np.array([c.score_mean for c in candidates], dtype=np.float64),
        "score_max": np.array([c.score_max for c in candidates], dtype=np.float64),
        "area_m2": np.array([c.area_m2 for c in candidates], dtype=np.float64),
    }
    table.update(columns or {})
    for key, value in attributes.items():
        table[key] = [value] * len(candidates)
    frame = gpd.GeoDataFrame(
        table, geometry=[c.geometry for c in candidates], crs=crs.to_wkt() if crs else None
    )
    if driver == "GeoJSON" and crs is not None:
        frame = frame.to_crs("EPSG:4326")
    if driver == "GeoParquet":
        frame.to_parquet(path)
        return
    pyogrio.write_dataframe(
        frame,
        path,
        driver=driver,
        layer=layer_name if driver == "GPKG" else None,
        geometry_type="Polygon",
        layer_options={"RFC7946": "YES"} if driver == "GeoJSON" else None,
    )
