"""The scene pipeline: raster -> tiles -> model -> stitched probabilities -> raster / polygons.

:func:`predict_scene` is the one tiling loop of the project: it reads block-aligned strips,
normalizes tiles with the scene's statistics, batches them through the model and streams the
blended rows to a sink. :func:`segment` wraps it with output handling: work files beside the
targets, a COG and/or polygons at the end, provenance sidecars, and nothing left behind on error.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

import rrsis_geo
from rrsis_geo.errors import InputError, OutputError
from rrsis_geo.geo.normalization import (
    NormalizationSpec,
    SceneStatistics,
    compute_scene_statistics,
)
from rrsis_geo.geo.reading import OpenedScene, StripReader, has_nodata, open_scene
from rrsis_geo.geo.stitching import RowSink, StreamingStitcher
from rrsis_geo.geo.tiling import Tile, TileGrid
from rrsis_geo.geo.vectorize import VECTOR_DRIVERS, VectorOptions, polygonize, write_polygons
from rrsis_geo.geo.writers import (
    WORK_BLOCK,
    RasterEncoding,
    TiledRasterWriter,
    atomic_output,
    check_output_path,
    temporary_sibling,
    write_cog,
)
from rrsis_geo.inference.model import SegmentationModel, as_prediction

__all__ = [
    "RASTER_SUFFIXES",
    "SegmentOptions",
    "SegmentResult",
    "TileCounts",
    "default_output_paths",
    "predict_scene",
    "segment",
]

RASTER_SUFFIXES = (".tif", ".tiff")
GDAL_CACHE_BYTES = 64 * 1024 * 1024
ProgressCallback = Callable[[int, int], None]
"""Called with ``(tiles done, tiles in the grid)`` as tiles complete."""


@dataclass
class TileCounts:
    """What the tiling loop did.

    Attributes:
        total: Tiles in the grid.
        predicted: Tiles sent to the model.
        skipped_nodata: Tiles without a single valid pixel (no model call).
        batches: Model calls.
        presence_max: Highest per-tile presence score, when the model gives one.
        model_seconds: Time spent inside the model's ``predict``.
    """

    total: int = 0
    predicted: int = 0
    skipped_nodata: int = 0
    batches: int = 0
    presence_max: float | None = None
    model_seconds: float = 0.0


def predict_scene(
    scene: OpenedScene,
    model: SegmentationModel,
    encoded: Any,
    grid: TileGrid,
    statistics: SceneStatistics,
    sink: RowSink,
    batch_size: int = 8,
    progress: ProgressCallback | None = None,
    block_rows: int = WORK_BLOCK,
) -> TileCounts:
    """Predict every tile of a scene and stream the blended probabilities to ``sink``.

    Args:
        scene: The opened scene (its ``dataset`` has the grid's size).
        model: Any :class:`~rrsis_geo.inference.model.SegmentationModel`.
        encoded: The expression, encoded once by ``model.encode_expression``.
        grid: The tile grid over ``scene.dataset``.
        statistics: The scene's normalization.
        sink: Receives finished rows (see :data:`~rrsis_geo.geo.stitching.RowSink`).
        batch_size: Tiles per model call.
        progress: Optional progress callback.
        block_rows: Rows are emitted in multiples of this (the writers' block height).

    Returns:
        Counts and timings of the loop.
    """
    dataset = scene.dataset
    size = grid.tile_size
    channels = len(scene.bands)
    reader = StripReader(dataset, scene.bands, read_masks=has_nodata(dataset, scene.bands))
    floating = np.issubdtype(np.dtype(dataset.dtypes[0]), np.floating)
    batch = np.zeros((max(1, batch_size), channels, size, size), dtype=np.float32)
    pending: list[tuple[Tile, np.ndarray | None]] = []  # valid mask None: all valid
    counts = TileCounts(total=len(grid))

    def flush() -> None:
        predicted = [tile for tile, _ in pending]
        if predicted:
            started = time.perf_counter()
            prediction = as_prediction(model.predict(batch[: len(predicted)], encoded))
            counts.model_seconds += time.perf_counter() - started
            probabilities = prediction.probabilities
            expected = (len(predicted), size, size)
            if probabilities.shape != expected:
                raise InputError(
                    f"the model returned probabilities of shape {probabilities.shape} for "
                    f"tiles of shape {batch[: len(predicted)].shape}; expected {expected}"
                )
            if prediction.presence is not None and prediction.presence.size:
                top = float(np.max(prediction.presence))
                counts.presence_max = max(top, counts.presence_max or top)
            for index, (tile, valid) in enumerate(pending):
                stitcher.add(tile, probabilities[index], valid)
            counts.predicted += len(predicted)
            counts.batches += 1
        pending.clear()
        if progress is not None:
            progress(counts.predicted + counts.skipped_nodata, counts.total)

    # GDAL decodes the next strip and encodes finished rows in two threads while numpy and the
    # model work on the current tiles: all three release the GIL.
    row_starts = grid.row_starts
    with ThreadPoolExecutor(1, "rrsis-read") as reader_thread, _BackgroundSink(sink) as writer:
        stitcher = StreamingStitcher(grid, writer, block_rows=block_rows)
        next_strip = reader_thread.submit(reader.read, row_starts[0], row_starts[0] + size)
        for tile in grid:
            if tile.col == 0:
                strip = next_strip.result()
                if tile.row + 1 < len(row_starts):
                    following = row_starts[tile.row + 1]
                    next_strip = reader_thread.submit(reader.read, following, following + size)
            valid = strip.valid(tile.x, tile.x + tile.width)
            pixels = strip.pixels(tile.x, tile.x + tile.width)
            if floating:
                finite = np.isfinite(pixels).all(axis=0)
                valid = finite if valid is None else valid & finite
            if valid is not None and valid.all():
                valid = None
            if valid is not None and not valid.any():
                counts.skipped_nodata += 1
                continue
            slot = batch[len(pending)]
            if tile.height < size or tile.width < size:
                slot.fill(0.0)
            statistics.apply(pixels, out=slot[:, : tile.height, : tile.width])
            if valid is not None:
                slot[:, : tile.height, : tile.width][:, ~valid] = 0.0
            pending.append((tile, valid))
            if len(pending) == batch.shape[0]:
                flush()
        flush()
        stitcher.close()
    return counts


class _BackgroundSink:
    """Hands finished rows to ``sink`` in one background thread, in order, one block ahead."""

    def __init__(self, sink: RowSink) -> None:
        self._sink = sink
        self._pool = ThreadPoolExecutor(1, "rrsis-write")
        self._pending: Future[None] | None = None

    def __call__(self, first_row: int, rows: np.ndarray) -> None:
        self._wait()  # re-raises a write error here, and bounds memory to two blocks
        self._pending = self._pool.submit(self._sink, first_row, rows)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __enter__(self) -> _BackgroundSink:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)


@dataclass
class SegmentOptions:
    """Options of :func:`segment`; None means "what the model declares".

    Attributes:
        bands: 1-based bands in model order.
        tile_size: Tile side in pixels.
        overlap: Pixels shared by consecutive tiles.
        margin: Pixels discarded on interior tile sides.
        batch_size: Tiles per model call.
        threshold: Probability at or above which a pixel is foreground.
        gsd: Ground resolution to resample to (metres per pixel); 0 keeps the native one.
        percentiles: Force a percentile stretch with these percentiles.
        raster_kind: ``"probability"``, ``"binary"`` or ``"float32"`` for raster outputs.
        vector: Polygon clean-up options.
        overwrite: Replace existing outputs.
    """

    bands: tuple[int, ...] | None = None
    tile_size: int | None = None
    overlap: int | None = None
    margin: int | None = None
    batch_size: int = 8
    threshold: float | None = None
    gsd: float | None = None
    percentiles: tuple[float, float] | None = None
    raster_kind: str = "probability"
    vector: VectorOptions = field(default_factory=VectorOptions)
    overwrite: bool = False


@dataclass
class SegmentResult:
    """What :func:`segment` did; also the content of the JSON sidecar and of ``--json``."""

    input: str
    expression: str
    model: str
    outputs: list[str]
    threshold: float
    bands: list[int]
    grid: dict[str, int]
    normalization: dict[str, Any]
    tiles: dict[str, Any]
    polygons: int | None
    timings: dict[str, float]
    resampled: bool
    command: list[str]
    versions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def output_kind(path: Path) -> str:
    """``"raster"`` or ``"vector"`` from the extension.

    Raises:
        OutputError: For any other extension.
    """
    suffix = path.suffix.lower()
    if suffix in RASTER_SUFFIXES:
        return "raster"
    if suffix in VECTOR_DRIVERS:
        return "vector"
    known = ", ".join((*RASTER_SUFFIXES, *VECTOR_DRIVERS))
    raise OutputError(f"unsupported output format {path.suffix or path.name!r}: use one of {known}")


def default_output_paths(input_path: Path, expression: str) -> list[Path]:
    """Outputs next to the input when none are given: a probability COG and a GeoPackage."""
    slug = "".join(c if c.isalnum() else "_" for c in expression.lower()).strip("_")
    slug = "_".join(part for part in slug.split("_") if part)[:48] or "expression"
    return [
        input_path.with_name(f"{input_path.stem}.{slug}{suffix}") for suffix in (".tif", ".gpkg")
    ]


def segment(
    input_path: str | Path,
    expression: str,
    model: SegmentationModel,
    outputs: Sequence[str | Path] = (),
    options: SegmentOptions | None = None,
    progress: ProgressCallback | None = None,
    command: Sequence[str] | None = None,
) -> SegmentResult:
    """Segment the object an expression refers to in a raster and write the outputs.

    Args:
        input_path: Any raster GDAL reads.
        expression: The referring expression.
        model: A loaded model.
        outputs: Files to write: ``.tif`` (COG) and/or vector files (``.gpkg``, ``.geojson``,
            ``.fgb``, ``.parquet``, ``.shp``). Default: :func:`default_output_paths`.
        options: Tiling, threshold and output options.
        progress: Optional progress callback.
        command: The command line to record in the sidecar.

    Returns:
        What was done; also written as ``<output>.json`` beside every output.

    Raises:
        InputError: Bad input, bands, expression or model.
        OutputError: Outputs that exist or cannot be written.
    """
    started = time.perf_counter()
    options = options or SegmentOptions()
    input_path = Path(input_path)
    expression = " ".join(expression.split())
    if not expression:
        raise InputError("the expression is empty")
    metadata = model.metadata
    threshold = metadata.threshold if options.threshold is None else options.threshold
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")
    if options.raster_kind not in ("probability", "binary", "float32"):
        raise InputError(f"unknown raster output kind {options.raster_kind!r}")
    targets = [Path(p) for p in outputs] or default_output_paths(input_path, expression)
    kinds = {target: output_kind(target) for target in targets}
    if len(set(targets)) != len(targets):
        raise OutputError("the same output is given twice")
    for target in targets:
        check_output_path(target, options.overwrite)

    timings: dict[str, float] = {}
    gsd = metadata.gsd if options.gsd is None else (options.gsd or None)
    # GDAL's block cache defaults to 5% of RAM and fills with written blocks; the pipeline reads
    # and writes whole block rows once each, so a small cache loses nothing and bounds memory.
    with rasterio.Env(**_gdal_config()):
        with open_scene(input_path, options.bands, metadata.in_channels, gsd) as scene:
            dataset = scene.dataset
            tile_size = options.tile_size or metadata.tile_size
            # The model's overlap and margin suit its own tile size; a smaller tile chosen by the
            # user keeps them only as far as they fit.
            overlap = options.overlap
            if overlap is None:
                overlap = min(metadata.overlap, tile_size // 4)
            margin = options.margin
            if margin is None:
                margin = min(metadata.margin, overlap // 2)
            try:
                grid = TileGrid(dataset.height, dataset.width, tile_size, overlap, margin)
            except ValueError as error:
                raise InputError(str(error)) from None
            spec = metadata.normalization
            if options.percentiles is not None:
                base = spec or NormalizationSpec()
                spec = NormalizationSpec(
                    percentiles=options.percentiles, mean=base.mean, std=base.std
                )
            step = time.perf_counter()
            statistics = compute_scene_statistics(dataset, scene.bands, spec)
            timings["statistics"] = time.perf_counter() - step

            step = time.perf_counter()
            encoded = model.encode_expression(expression)
            timings["encode_expression"] = time.perf_counter() - step

            tags = {
                "RRSIS_EXPRESSION": expression,
                "RRSIS_MODEL": metadata.name,
                "RRSIS_THRESHOLD": f"{threshold:g}",
                "RRSIS_VERSION": rrsis_geo.__version__,
            }
            raster_targets = [t for t in targets if kinds[t] == "raster"]
            vector_targets = [t for t in targets if kinds[t] == "vector"]
            with _work_rasters(
                targets[0],
                dataset,
                options.raster_kind if raster_targets else None,
                bool(vector_targets),
                threshold,
                tags,
            ) as work:
                step = time.perf_counter()
                counts = predict_scene(
                    scene,
                    model,
                    encoded,
                    grid,
                    statistics,
                    work.write_rows,
                    options.batch_size,
                    progress,
                )
                work.close()
                timings["tiles"] = time.perf_counter() - step
                timings["model"] = counts.model_seconds

                # Every output is finished under a temporary name first and all are renamed
                # together at the end: a failure anywhere leaves none of them behind.
                with contextlib.ExitStack() as commit:
                    temporaries = {
                        target: commit.enter_context(atomic_output(target, options.overwrite))
                        for target in targets
                    }
                    step = time.perf_counter()
                    for target in raster_targets:
                        write_cog(
                            work.paths[options.raster_kind],
                            temporaries[target],
                            work.encodings[options.raster_kind],
                        )
                    timings["cog"] = time.perf_counter() - step
                    polygons = None
                    if vector_targets:
                        step = time.perf_counter()
                        candidates = polygonize(
                            work.paths["binary"], work.probability_path, options.vector
                        )
                        attributes = {
                            "expression": expression,
                            "model": metadata.name,
                            "threshold": threshold,
                        }
                        for target in vector_targets:
                            write_polygons(
                                candidates,
                                dataset.crs,
                                temporaries[target],
                                attributes,
                                layer_name=target.stem,
                            )
                        polygons = len(candidates)
                        timings["vectorize"] = time.perf_counter() - step
            crs_grid = {
                "height": grid.height,
                "width": grid.width,
                "tile_size": grid.tile_size,
                "overlap": grid.overlap,
                "margin": grid.margin,
            }
            resampled = scene.resampled
            bands = list(scene.bands)
    timings["total"] = time.perf_counter() - started
    result = SegmentResult(
        input=str(input_path),
        expression=expression,
        model=metadata.name,
        outputs=[str(t) for t in targets],
        threshold=threshold,
        bands=bands,
        grid=crs_grid,
        normalization=statistics.to_dict(),
        tiles={
            "total": counts.total,
            "predicted": counts.predicted,
            "skipped_nodata": counts.skipped_nodata,
            "batches": counts.batches,
            "presence_max": counts.presence_max,
        },
        polygons=polygons,
        timings={k: round(v, 4) for k, v in timings.items()},
        resampled=resampled,
        command=list(command) if command is not None else list(sys.argv),
        versions=_versions(),
    )
    for target in targets:
        sidecar = target.with_name(target.name + ".json")
        with atomic_output(sidecar, overwrite=True) as temporary:
            temporary.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


class _WorkRasters:
    """Temporary full-resolution rasters the stitcher streams into, one per encoding needed."""

    def __init__(self) -> None:
        self.writers: dict[str, TiledRasterWriter] = {}
        self.paths: dict[str, Path] = {}
        self.encodings: dict[str, RasterEncoding] = {}

    @property
    def probability_path(self) -> Path:
        """The work raster holding probabilities (float32 when written, else uint8)."""
        return self.paths.get("float32", self.paths.get("probability", Path()))

    def write_rows(self, first_row: int, probabilities: np.ndarray) -> None:
        for writer in self.writers.values():
            writer.write_rows(first_row, probabilities)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


@contextlib.contextmanager
def _work_rasters(
    beside: Path,
    dataset: Any,
    raster_kind: str | None,
    vector: bool,
    threshold: float,
    tags: dict[str, str],
) -> Iterator[_WorkRasters]:
    kinds: list[str] = []
    if raster_kind is not None:
        kinds.append(raster_kind)
    if vector:
        kinds.append("binary")
        if raster_kind not in ("probability", "float32"):
            kinds.append("probability")
    work = _WorkRasters()
    try:
        for kind in dict.fromkeys(kinds):
            encoding = RasterEncoding(kind, threshold)
            path = temporary_sibling(beside, ".tif")
            work.paths[kind] = path
            work.encodings[kind] = encoding
            try:
                work.writers[kind] = TiledRasterWriter(
                    path,
                    dataset.width,
                    dataset.height,
                    dataset.crs,
                    dataset.transform,
                    encoding,
                    tags,
                )
            except Exception as error:
                raise OutputError(f"cannot write beside {beside}: {error}") from None
        yield work
    finally:
        work.close()
        for path in work.paths.values():
            for leftover in (path, path.with_name(path.name + ".aux.xml")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


def _gdal_config() -> dict[str, Any]:
    if "GDAL_CACHEMAX" in os.environ:
        return {}
    return {"GDAL_CACHEMAX": GDAL_CACHE_BYTES}


def _versions() -> dict[str, str]:
    versions = {
        "rrsis_geo": rrsis_geo.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = str(torch.__version__)
    return versions
