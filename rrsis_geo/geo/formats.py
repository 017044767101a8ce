"""The output formats, keyed by file suffix: the one list the writers, the CLI and QGIS read.

A suffix says what is written: a raster (a Cloud Optimized GeoTIFF of the stitched map) or
polygons (one feature per referent or candidate) through a GDAL vector driver. The CLI's help,
``rrsis formats`` and the QGIS provider's list of vector outputs are all made from
:data:`OUTPUT_FORMATS`; adding a format is one entry here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rrsis_geo.errors import OutputError

__all__ = [
    "OUTPUT_FORMATS",
    "RASTER",
    "VECTOR",
    "OutputFormat",
    "output_format",
    "suffixes",
]

RASTER = "raster"
VECTOR = "vector"


@dataclass(frozen=True)
class OutputFormat:
    """One output format.

    Attributes:
        suffix: Lower-case file suffix with its dot, e.g. ``".gpkg"``.
        kind: :data:`RASTER` or :data:`VECTOR`.
        driver: The GDAL driver that writes it (``"GeoParquet"`` is written by geopandas).
        description: What a user gets, in a few words.
    """

    suffix: str
    kind: str
    driver: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    entry.suffix: entry
    for entry in (
        OutputFormat(".tif", RASTER, "COG", "probability raster (Cloud Optimized GeoTIFF)"),
        OutputFormat(".tiff", RASTER, "COG", "probability raster (Cloud Optimized GeoTIFF)"),
        OutputFormat(".gpkg", VECTOR, "GPKG", "polygons (GeoPackage)"),
        OutputFormat(".geojson", VECTOR, "GeoJSON", "polygons (GeoJSON, EPSG:4326)"),
        OutputFormat(".fgb", VECTOR, "FlatGeobuf", "polygons (FlatGeobuf)"),
        OutputFormat(".shp", VECTOR, "ESRI Shapefile", "polygons (Shapefile)"),
        OutputFormat(".parquet", VECTOR, "GeoParquet", "polygons (GeoParquet)"),
    )
}
"""Every output format, by suffix."""


def suffixes(kind: str | None = None) -> tuple[str, ...]:
    """The suffixes of one kind (:data:`RASTER` or :data:`VECTOR`), or of all formats."""
    return tuple(s for s, entry in OUTPUT_FORMATS.items() if kind in (None, entry.kind))


def output_format(path: str | Path, kind: str | None = None) -> OutputFormat:
    """The format a path's suffix names.

    Args:
        path: The output path.
        kind: Only accept formats of this kind (e.g. :data:`VECTOR` for a candidate layer).

    Raises:
        OutputError: For an unknown suffix, or one of another kind.
    """
    path = Path(path)
    entry = OUTPUT_FORMATS.get(path.suffix.lower())
    if entry is None or (kind is not None and entry.kind != kind):
        known = " ".join(suffixes(kind))
        raise OutputError(
            f"unsupported output format {path.suffix or path.name!r} for {path.name}: "
            f"use one of {known}"
        )
    return entry
