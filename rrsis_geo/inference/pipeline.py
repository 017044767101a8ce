"""The scene pipeline, as stages: plan -> tiles -> model -> stitched map -> regions -> referent.

- :func:`check_run`: the input's header, options, outputs and the sentence's reading checked
  before any model is loaded (one :class:`RunCheck`); :func:`plan_run` adds what the model
  decides (one :class:`RunPlan`).
- :func:`predict_scene`: the one tiling loop of the project; it reads block-aligned strips,
  normalizes tiles with the scene's statistics, batches them through the model and streams the
  blended rows to a sink.
- :class:`PassRunner`: one pass of a sentence = :func:`predict_scene` into work rasters, then
  the stitched map's regions (:func:`~rrsis_geo.inference.regions.find_regions`).
- a referring strategy (:data:`~rrsis_geo.inference.referring.STRATEGY_FUNCTIONS`) asks for
  the passes it needs and chooses the referent among the regions.
- :func:`write_outputs`: the writers, by suffix, all renamed together when complete.

:func:`segment` is their composition for one sentence and its outputs;
:func:`refer_sentences` answers many sentences about one scene, sharing passes, writing nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

import rrsis_geo
from rrsis_geo.errors import InputError, OutputError, RrsisWarning
from rrsis_geo.geo.formats import RASTER, VECTOR, output_format
from rrsis_geo.geo.normalization import (
    NormalizationSpec,
    SceneStatistics,
    compute_scene_statistics,
    spec_for_dtype,
)
from rrsis_geo.geo.reading import (
    MAX_UPSAMPLING,
    OpenedScene,
    SceneHeader,
    StripReader,
    has_nodata,
    open_scene,
    read_header,
)
from rrsis_geo.geo.stitching import RowSink, StreamingStitcher
from rrsis_geo.geo.tiling import Tile, TileGrid
from rrsis_geo.geo.vectorize import VectorOptions, write_polygons
from rrsis_geo.geo.writers import (
    WORK_BLOCK,
    RasterEncoding,
    TiledRasterWriter,
    atomic_output,
    check_output_path,
    keep_under,
    sidecar_path,
    temporary_sibling,
    write_cog,
    write_failure,
)
from rrsis_geo.inference.model import (
    ModelMetadata,
    SegmentationModel,
    TilePrediction,
    encode_sentence,
    predict_many,
)
from rrsis_geo.inference.referring import (
    STRATEGY_FUNCTIONS,
    Answer,
    chooses_among_regions,
    map_answer,
)
from rrsis_geo.inference.regions import PresenceMap, Region, SceneFrame, find_regions
from rrsis_geo.inference.resume import (
    ResumeState,
    describe_pass,
    grid_key,
    input_fingerprint,
    remove_state,
    work_raster_path,
)
from rrsis_geo.inference.sentence import SceneQuery, parse_sentence
from rrsis_geo.inference.verification import CandidateChecker

__all__ = [
    "STRATEGIES",
    "EmptySceneWarning",
    "PassRunner",
    "RunCheck",
    "RunPlan",
    "ScenePass",
    "SegmentOptions",
    "SegmentResult",
    "SharedSentence",
    "TileCounts",
    "check_run",
    "default_output_paths",
    "open_passes",
    "plan_run",
    "predict_scene",
    "refer_sentences",
    "scene_grid",
    "segment",
    "write_outputs",
]

GDAL_CACHE_BYTES = 64 * 1024 * 1024


class EmptySceneWarning(RrsisWarning):
    """Every pixel of the scene is nodata: no tile was predicted."""


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
        resumed: Tiles not predicted again because a resumed pass had their rows already.
    """

    total: int = 0
    predicted: int = 0
    skipped_nodata: int = 0
    batches: int = 0
    presence_max: float | None = None
    model_seconds: float = 0.0
    resumed: int = 0


@dataclass(frozen=True)
class SharedSentence:
    """Another sentence predicted on the same tiles in the same loop as the first.

    The tiles are read, normalized and (with a model that has ``predict_many``) seen by the
    vision encoder once for all sentences: a relation's description and anchor cost one loop.

    Attributes:
        encoded: The sentence, encoded by the model.
        sink: Receives its finished rows.
        presence: Receives its per-tile presence scores, when the model gives them.
    """

    encoded: Any
    sink: RowSink
    presence: PresenceMap | None = None


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
    presence: PresenceMap | None = None,
    shared: Sequence[SharedSentence] = (),
    start_row: int = 0,
) -> TileCounts:
    """Predict every tile of a scene and stream the blended probabilities to ``sink``.

    Args:
        scene: The opened scene (its ``dataset`` has the grid's size).
        model: Any :class:`~rrsis_geo.inference.model.SegmentationModel`.
        encoded: The expression, encoded once by ``model.encode_expression``.
        grid: The tile grid over ``scene.dataset``.
        statistics: The scene's normalization.
        sink: Receives finished rows (see :data:`~rrsis_geo.geo.stitching.RowSink`).
        batch_size: Tile-sentence pairs per model call: with ``shared`` sentences a call holds
            ``batch_size // (1 + len(shared))`` tiles, so that its memory and cost stay those of
            one sentence's call (on a CPU a batch twice as large costs more than twice).
        progress: Optional progress callback.
        block_rows: Rows are emitted in multiples of this (the writers' block height).
        presence: Receives each tile's presence score, when the model gives one.
        shared: More sentences predicted in the same loop, each into its own sink.
        start_row: Rows above this one are final already (a resumed pass, a multiple of
            ``block_rows``): the loop starts at the first tile row reaching it and emits only
            the rows from it on, exactly as an uninterrupted loop would have.

    Returns:
        Counts and timings of the loop (tiles counted once, whatever the sentences).
    """
    dataset = scene.dataset
    size = grid.tile_size
    channels = len(scene.bands)
    reader = StripReader(dataset, scene.bands, read_masks=has_nodata(dataset, scene.bands))
    floating = np.issubdtype(np.dtype(dataset.dtypes[0]), np.floating)
    sentences = [SharedSentence(encoded, sink, presence), *shared]
    tiles_per_call = max(1, batch_size // len(sentences))
    batch = np.zeros((tiles_per_call, channels, size, size), dtype=np.float32)
    pending: list[tuple[Tile, np.ndarray | None]] = []  # valid mask None: all valid
    counts = TileCounts(total=len(grid))
    first = grid.first_row_reaching(start_row)
    counts.resumed = first * len(grid.col_starts)

    def flush() -> None:
        predicted = [tile for tile, _ in pending]
        if predicted:
            started = time.perf_counter()
            predictions = predict_many(
                model, batch[: len(predicted)], [s.encoded for s in sentences]
            )
            counts.model_seconds += time.perf_counter() - started
            for prediction, sentence, stitcher in zip(
                predictions, sentences, stitchers, strict=True
            ):
                _stitch(prediction, sentence.presence, stitcher, pending, counts, size)
            counts.predicted += len(predicted)
            counts.batches += 1
        pending.clear()
        if progress is not None:
            progress(counts.predicted + counts.skipped_nodata + counts.resumed, counts.total)

    # GDAL decodes the next strip and encodes finished rows in two threads while numpy and the
    # model work on the current tiles: all three release the GIL.
    row_starts = grid.row_starts
    with ThreadPoolExecutor(1, "rrsis-read") as reader_thread, contextlib.ExitStack() as writers:
        stitchers = [
            StreamingStitcher(
                grid, writers.enter_context(_BackgroundSink(s.sink)), block_rows, start_row
            )
            for s in sentences
        ]
        if first < len(row_starts):
            top = row_starts[first]
            next_strip = reader_thread.submit(reader.read, top, top + size)
        for tile in grid:
            if tile.row < first:
                continue
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
        for stitcher in stitchers:
            stitcher.close()
    return counts


def _stitch(
    prediction: TilePrediction,
    presence: PresenceMap | None,
    stitcher: StreamingStitcher,
    pending: list[tuple[Tile, np.ndarray | None]],
    counts: TileCounts,
    size: int,
) -> None:
    """One sentence's predictions for the pending tiles into its stitcher and presence map."""
    probabilities = prediction.probabilities
    expected = (len(pending), size, size)
    if probabilities.shape != expected:
        raise InputError(
            f"the model returned probabilities of shape {probabilities.shape} for "
            f"{len(pending)} tiles of {size} x {size} pixels; expected {expected}"
        )
    if prediction.presence is not None and prediction.presence.size:
        top = float(np.max(prediction.presence))
        counts.presence_max = max(top, counts.presence_max or top)
        if presence is not None:
            for (tile, _), score in zip(pending, prediction.presence, strict=True):
                presence.record(tile.row, tile.col, float(score))
    for index, (tile, valid) in enumerate(pending):
        stitcher.add(tile, probabilities[index], valid)


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


STRATEGIES = ("scene", "tile")
"""``scene``: the sentence is answered over the whole scene (regions ranked by what it asks);
``tile``: the model's per-tile answer to the whole sentence, every region written (as before)."""


@dataclass
class SegmentOptions:
    """Options of :func:`segment`; None means "what the model declares".

    Attributes:
        bands: 1-based bands in model order.
        tile_size: Tile side in pixels.
        overlap: Pixels shared by consecutive tiles.
        margin: Pixels discarded on interior tile sides.
        batch_size: Tile-sentence pairs per model call (see :func:`predict_scene`).
        threshold: Probability at or above which a pixel is foreground.
        gsd: Ground resolution to resample to (metres per pixel); 0 keeps the native one.
        max_upsampling: The largest factor a scene coarser than ``gsd`` is upsampled by
            (:func:`~rrsis_geo.geo.reading.resampled_size`); more is refused.
        percentiles: Force a percentile stretch with these percentiles.
        raster_kind: ``"probability"``, ``"binary"`` or ``"float32"`` for raster outputs.
        vector: Polygon clean-up options.
        overwrite: Replace existing outputs.
        strategy: One of :data:`STRATEGIES`.
        candidates: A vector file to write every candidate to, ranked, with why it was or was
            not chosen.
        vocabulary: The categories the scene strategy checks candidates against; None: the
            model's (``ModelMetadata.vocabulary``), empty: no check.
        resume: Keep the first pass's finished rows beside the first output while it runs,
            and continue from them when a state of the same run is there
            (:mod:`~rrsis_geo.inference.resume`); an interrupted run keeps them.
    """

    bands: tuple[int, ...] | None = None
    tile_size: int | None = None
    overlap: int | None = None
    margin: int | None = None
    batch_size: int = 8
    threshold: float | None = None
    gsd: float | None = None
    max_upsampling: float = MAX_UPSAMPLING
    percentiles: tuple[float, float] | None = None
    raster_kind: str = "probability"
    vector: VectorOptions = field(default_factory=VectorOptions)
    overwrite: bool = False
    strategy: str = "scene"
    candidates: Path | None = None
    vocabulary: tuple[str, ...] | None = None
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as text, tuples as lists), as recorded in the sidecar."""
        return json.loads(json.dumps(asdict(self), default=str))

    def threshold_of(self, metadata: ModelMetadata) -> float:
        """The foreground threshold with a model of ``metadata``."""
        return metadata.threshold if self.threshold is None else self.threshold

    def gsd_of(self, metadata: ModelMetadata) -> float | None:
        """The resolution to resample to with a model of ``metadata`` (None: native)."""
        return metadata.gsd if self.gsd is None else (self.gsd or None)

    def vocabulary_of(self, metadata: ModelMetadata) -> tuple[str, ...]:
        """The categories candidates are checked against with a model of ``metadata``."""
        return tuple(metadata.vocabulary if self.vocabulary is None else self.vocabulary)


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
    strategy: str = "scene"
    reading: dict[str, Any] = field(default_factory=dict)
    choice: dict[str, Any] = field(default_factory=dict)
    referent_found: bool | None = True
    """None: not decided, only the probability map was asked for (no region was found)."""
    passes: list[dict[str, Any]] = field(default_factory=list)
    model_sha256: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """The :class:`SegmentOptions` as given (:meth:`SegmentOptions.to_dict`), so that a later
    run can tell whether these outputs answer the same request (``rrsis batch`` skips them)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class SegmentRequest:
    """One whole :func:`segment` call as the CLI builds it from ``rrsis segment``'s options.

    Attributes:
        input_path: The raster.
        expression: The referring expression.
        outputs: Files to write; empty: :func:`default_output_paths`.
        model: The ``--model`` value (:func:`~rrsis_geo.inference.model.load_model`).
        device: The ``--device`` value.
        options: Everything else.
    """

    input_path: Path
    expression: str
    outputs: tuple[Path, ...]
    model: str
    device: str
    options: SegmentOptions

    def output_paths(self) -> list[Path]:
        """The outputs this request writes, candidate layer included."""
        paths = list(self.outputs) or default_output_paths(self.input_path, self.expression)
        candidates = self.options.candidates
        return [*paths, *([candidates] if candidates is not None else [])]


def output_kind(path: Path) -> str:
    """``"raster"`` or ``"vector"`` from the extension (see :data:`OUTPUT_FORMATS`).

    Raises:
        OutputError: For any other extension.
    """
    return output_format(path).kind


def default_output_paths(
    input_path: Path,
    expression: str,
    suffixes: Sequence[str] = (".tif", ".gpkg"),
    folder: Path | None = None,
) -> list[Path]:
    """Outputs when none are given: ``INPUT_STEM.<expression slug><suffix>`` for each suffix.

    Args:
        input_path: The raster.
        expression: The referring expression (its words make the slug).
        suffixes: One output per suffix; by default a probability COG and a GeoPackage.
        folder: Where they go; by default next to the input.
    """
    slug = "".join(c if c.isalnum() else "_" for c in expression.lower()).strip("_")
    slug = "_".join(part for part in slug.split("_") if part)[:48] or "expression"
    folder = input_path.parent if folder is None else folder
    return [folder / f"{input_path.stem}.{slug}{suffix}" for suffix in suffixes]


@dataclass(frozen=True)
class RunCheck:
    """What a run was checked for before any model is loaded (:func:`check_run`).

    Attributes:
        input_path: The raster.
        header: What its header says.
        expression: The sentence, whitespace-normalized.
        query: How the sentence is read.
        targets: Outputs, each with its kind (``"raster"`` / ``"vector"``).
        candidates: The candidate layer, if asked for.
        options: The options as given.
    """

    input_path: Path
    header: SceneHeader
    expression: str
    query: SceneQuery
    targets: dict[Path, str]
    candidates: Path | None
    options: SegmentOptions

    def paths(self, kind: str) -> list[Path]:
        """The targets of one kind."""
        return [target for target, found in self.targets.items() if found == kind]


@dataclass(frozen=True)
class RunPlan(RunCheck):
    """A checked run with what the model decides (:func:`plan_run`): all that will run.

    Attributes:
        threshold: Foreground threshold.
        gsd: Ground resolution to resample to, or None.
    """

    threshold: float
    gsd: float | None

    @property
    def strategy(self) -> str:
        """One of :data:`STRATEGIES`."""
        return self.options.strategy

    @property
    def needs_regions(self) -> bool:
        """False when only the probability map of the whole sentence will be written."""
        if self.paths(VECTOR) or self.candidates is not None:
            return True
        return self.strategy == "scene" and chooses_among_regions(self.query)


def check_run(
    input_path: str | Path,
    expression: str,
    outputs: Sequence[str | Path],
    options: SegmentOptions,
) -> RunCheck:
    """Check the input, every option and every output that do not depend on the model.

    Reads only the raster's header (and one pixel, see
    :func:`~rrsis_geo.geo.reading.read_header`); writes nothing. The CLI calls it before it
    loads the model, so that a bad argument costs no model load.

    Raises:
        InputError: Empty expression, missing or unreadable raster, unknown band, bad
            threshold, raster kind or strategy.
        OutputError: Unknown suffix, duplicate, existing or unwritable output.
    """
    input_path = Path(input_path)
    expression = " ".join(expression.split())
    if not expression:
        raise InputError("the expression is empty")
    if options.threshold is not None:
        _check_threshold(options.threshold)
    if options.raster_kind not in ("probability", "binary", "float32"):
        raise InputError(f"unknown raster output kind {options.raster_kind!r}")
    if options.strategy not in STRATEGIES:
        raise InputError(
            f"unknown strategy {options.strategy!r}: use one of {', '.join(STRATEGIES)}"
        )
    if options.max_upsampling < 1.0:
        raise InputError(f"max_upsampling must be at least 1, got {options.max_upsampling}")
    header = read_header(input_path, options.bands)
    paths = [Path(p) for p in outputs] or default_output_paths(input_path, expression)
    targets = {path: output_format(path).kind for path in paths}
    if options.candidates is not None:
        output_format(options.candidates, VECTOR)
    every = [*paths, *([options.candidates] if options.candidates is not None else [])]
    if len(set(every)) != len(every):
        raise OutputError("the same output is given twice")
    for target in every:
        check_output_path(target, options.overwrite)
    query = parse_sentence(expression)
    return RunCheck(input_path, header, expression, query, targets, options.candidates, options)


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")


def plan_run(checked: RunCheck, metadata: ModelMetadata) -> RunPlan:
    """Decide what will run from a checked run and the model's metadata; reads nothing.

    Raises:
        InputError: A threshold the model declares out of (0, 1).
    """
    options = checked.options
    threshold = options.threshold_of(metadata)
    _check_threshold(threshold)
    checks = {f.name: getattr(checked, f.name) for f in fields(RunCheck)}
    return RunPlan(**checks, threshold=threshold, gsd=options.gsd_of(metadata))


def scene_grid(dataset: Any, metadata: ModelMetadata, options: SegmentOptions) -> TileGrid:
    """The tile grid over a scene: the options' sizes, else the model's (as far as they fit).

    Raises:
        InputError: Sizes that make no grid.
    """
    tile_size = options.tile_size or metadata.tile_size
    # The model's overlap and margin suit its own tile size; a smaller tile chosen by the user
    # keeps them only as far as they fit.
    overlap = options.overlap
    if overlap is None:
        overlap = min(metadata.overlap, tile_size // 4)
    margin = options.margin
    if margin is None:
        margin = min(metadata.margin, overlap // 2)
    try:
        return TileGrid(dataset.height, dataset.width, tile_size, overlap, margin)
    except ValueError as error:
        raise InputError(str(error)) from None


def scene_statistics(
    dataset: Any,
    bands: Sequence[int],
    metadata: ModelMetadata,
    options: SegmentOptions,
    name: str = "the scene",
) -> SceneStatistics:
    """The scene's normalization: the model's, or a forced percentile stretch.

    A model's fixed range applies to scenes of the pixel type it describes; others get their
    percentile stretch to the model's range, with a warning
    (:func:`~rrsis_geo.geo.normalization.spec_for_dtype`).
    """
    spec = metadata.normalization
    if options.percentiles is not None:
        base = spec or NormalizationSpec()
        spec = NormalizationSpec(percentiles=options.percentiles, mean=base.mean, std=base.std)
    else:
        spec = spec_for_dtype(spec, dataset.dtypes[0], name)
    return compute_scene_statistics(dataset, bands, spec)


@dataclass
class ScenePass:
    """One tiling pass of one sentence over the scene, and the regions of its stitched map.

    Regions are found when first asked for: a run that writes only the probability map of a
    sentence without scene-level words needs none, and on a noisy map of a large scene they
    cost far more than the tiles.

    Attributes:
        sentence: What the model read.
        instances: True when the model was asked for every instance (a description pass).
        work: The stitched work rasters (removed when the run ends).
        counts: What the tiling loop did.
        seconds: Wall time of the pass (the tiling loop, then the regions once found).
        find: Finds the regions of the stitched map.
    """

    sentence: str
    instances: bool
    work: _WorkRasters
    counts: TileCounts
    seconds: float
    find: Callable[[], list[Region]]
    _regions: list[Region] | None = None

    @property
    def regions(self) -> list[Region]:
        """The connected regions, best mean score first (found now if not yet)."""
        if self._regions is None:
            started = time.perf_counter()
            self._regions = self.find()
            self.seconds += time.perf_counter() - started
        return self._regions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``regions`` None: not asked for)."""
        return {
            "sentence": self.sentence,
            "instances": self.instances,
            "tiles_predicted": self.counts.predicted,
            "batches": self.counts.batches,
            "regions": None if self._regions is None else len(self._regions),
            "seconds": round(self.seconds, 4),
        }


class PassRunner:
    """Runs the passes a strategy asks for over one opened scene, each sentence at most once.

    A pass keeps its work rasters until the runner's ``stack`` closes, so that the outputs can
    be written from the pass the strategy chose.

    Args:
        scene: The opened scene.
        model: The model.
        grid: The tile grid.
        statistics: The scene's normalization.
        threshold: Foreground threshold.
        vector: Polygon clean-up options (regions are polygons).
        raster_kind: The raster encoding the outputs want, or None when no raster is written.
        stack: Owns the work rasters.
        beside: Work rasters are written beside this path.
        tags: Metadata tags of the work rasters.
        batch_size: Tile-sentence pairs per model call (see :func:`predict_scene`).
        progress: Optional progress callback (per pass).
        vocabulary: The categories :meth:`check` tells apart (empty: no check).
        areas: The trained area range of each category (``ModelMetadata.category_areas_m2``).
        resume_key: Resume the first pass from its saved state beside ``beside``
            (:mod:`~rrsis_geo.inference.resume`); this is the run's part of the state's key.
            None: every pass runs from the top and keeps nothing.
    """

    def __init__(
        self,
        scene: OpenedScene,
        model: SegmentationModel,
        grid: TileGrid,
        statistics: SceneStatistics,
        threshold: float,
        vector: VectorOptions,
        raster_kind: str | None,
        stack: contextlib.ExitStack,
        beside: Path,
        tags: dict[str, str],
        batch_size: int = 8,
        progress: ProgressCallback | None = None,
        vocabulary: Sequence[str] = (),
        areas: Mapping[str, tuple[float, float]] | None = None,
        resume_key: dict[str, str] | None = None,
    ) -> None:
        self.scene, self.model, self.grid, self.statistics = scene, model, grid, statistics
        self.threshold, self.vector, self.raster_kind = threshold, vector, raster_kind
        self.stack, self.beside, self.tags = stack, beside, tags
        self.batch_size, self.progress = batch_size, progress
        self.passes: dict[tuple[str, bool], ScenePass] = {}
        self.encode_seconds = 0.0
        self.statistics_seconds = 0.0
        self._said_empty = False
        self.resume_key = resume_key
        self.checker = CandidateChecker(
            scene, model, statistics, vocabulary, grid.tile_size, batch_size, threshold, areas
        )

    def _resume_state(
        self, todo: Sequence[tuple[str, bool]], kinds: Sequence[str]
    ) -> ResumeState | None:
        """The saved state of the run's first loop (its passes together) when it resumes."""
        if self.resume_key is None or self.passes:
            return None
        key = {
            **self.resume_key,
            "pass": " and ".join(describe_pass(*each) for each in todo),
            **grid_key(self.grid, self.scene.bands),
        }
        return ResumeState.open(self.beside, key, kinds, len(todo))

    def check(self, regions: Sequence[Region], description: str) -> None:
        """Check regions of ``description`` against the vocabulary (:class:`CandidateChecker`)."""
        if self.checker.vocabulary:
            self.checker(regions, description)

    def judges_size(self, description: str) -> bool:
        """True when :meth:`check` knows the trained sizes of the description's category."""
        return bool(self.checker.vocabulary) and self.checker.judges_size(description)

    def __call__(self, sentence: str, instances: bool) -> list[Region]:
        """The regions of ``sentence``; ``instances`` asks the model for every instance."""
        return self.run(sentence, instances).regions

    def run(self, sentence: str, instances: bool) -> ScenePass:
        """The pass of ``sentence`` (run now, or the one already run)."""
        self.prefetch([(sentence, instances)])
        return self.passes[(sentence, instances)]

    def prefetch(self, keys: Sequence[tuple[str, bool]]) -> None:
        """Run the passes of ``(sentence, instances)`` not run yet, all in one tiling loop.

        The tiles are read and normalized once for all of them and, with a model that has
        ``predict_many``, seen by its vision encoder once (a relation's description and
        anchor; every description of :func:`refer_sentences`).
        """
        todo = list(dict.fromkeys(k for k in keys if k not in self.passes))
        if not todo:
            return
        started = time.perf_counter()
        encodings = [encode_sentence(self.model, *key) for key in todo]
        self.encode_seconds += time.perf_counter() - started
        kinds = _work_kinds(self.raster_kind, True)
        state = self._resume_state(todo, kinds)
        works = [
            self.stack.enter_context(
                _work_rasters(
                    self.beside, self.scene.dataset, kinds, self.threshold, self.tags, state,
                    index,
                )
            )
            for index in range(len(todo))
        ]  # fmt: skip
        presences = [PresenceMap(self.grid) for _ in todo]
        sinks: list[RowSink] = [work.write_rows for work in works]
        if state is not None:
            for presence, saved in zip(presences, state.presence, strict=True):
                for row, col, score in saved:
                    presence.record(int(row), int(col), score)
            sinks = _Checkpoint(state, works, presences).sinks()
        shared = [
            SharedSentence(e, sink, p)
            for e, sink, p in zip(encodings[1:], sinks[1:], presences[1:], strict=True)
        ]
        counts = predict_scene(
            self.scene, self.model, encodings[0], self.grid, self.statistics, sinks[0],
            self.batch_size, self.progress, presence=presences[0], shared=shared,
            start_row=state.rows_done if state is not None else 0,
        )  # fmt: skip
        if counts.total and counts.skipped_nodata == counts.total and not self._said_empty:
            self._said_empty = True
            warnings.warn(
                f"{self.scene.path.name} has no valid pixel (all nodata): nothing to segment, "
                "the outputs are empty",
                EmptySceneWarning,
                stacklevel=2,
            )
        seconds = time.perf_counter() - started
        for (sentence, instances), work, presence in zip(todo, works, presences, strict=True):
            work.close()
            recorded = presence if presence.recorded else None
            find = functools.partial(
                find_regions, work.paths["binary"], work.probability_path, self.vector, recorded
            )
            self.passes[(sentence, instances)] = ScenePass(
                sentence, instances, work, counts, seconds / len(todo), find
            )


def segment(
    input_path: str | Path,
    expression: str,
    model: SegmentationModel,
    outputs: Sequence[str | Path] = (),
    options: SegmentOptions | None = None,
    progress: ProgressCallback | None = None,
    command: Sequence[str] | None = None,
    checked: RunCheck | None = None,
) -> SegmentResult:
    """Segment the object an expression refers to in a raster and write the outputs.

    The stages, in the order data flows: :func:`check_run` and :func:`plan_run` (input header,
    options and outputs checked, the sentence read), the scene opened with its grid and
    statistics, the strategy's passes (:class:`PassRunner`: tiles -> model -> stitched map ->
    regions), the referent chosen (:mod:`~rrsis_geo.inference.referring`), and the writers
    (:func:`write_outputs`).

    Args:
        input_path: Any raster GDAL reads.
        expression: The referring expression.
        model: A loaded model.
        outputs: Files to write, by suffix (:data:`~rrsis_geo.geo.formats.OUTPUT_FORMATS`):
            ``.tif`` (COG) and/or vector files. Default: :func:`default_output_paths`.
        options: Strategy, tiling, threshold and output options.
        progress: Optional progress callback.
        command: The command line to record in the sidecar.
        checked: The :func:`check_run` of these arguments when the caller made it already
            (the CLI, before loading the model); None checks them here.

    Returns:
        What was done; also written as ``<output>.json`` beside every output.

    Raises:
        InputError: Bad input, bands, expression or model.
        OutputError: Outputs that exist or cannot be written.
    """
    started = time.perf_counter()
    input_path = Path(input_path)
    options = options or SegmentOptions()
    metadata = model.metadata
    if checked is None:
        checked = check_run(input_path, expression, outputs, options)
    plan = plan_run(checked, metadata)
    timings: dict[str, float] = {}
    tags = {
        "RRSIS_EXPRESSION": plan.expression,
        "RRSIS_MODEL": metadata.name,
        "RRSIS_THRESHOLD": f"{plan.threshold:g}",
        "RRSIS_VERSION": rrsis_geo.__version__,
    }
    raster_kind = options.raster_kind if plan.paths(RASTER) else None
    beside = next(iter(plan.targets))
    resume_key = _resume_key(plan, metadata, raster_kind) if options.resume else None
    with open_passes(
        input_path, model, options, plan.threshold, plan.gsd, beside, raster_kind, tags,
        progress, resume_key,
    ) as runner:  # fmt: skip
        dataset, grid, statistics = runner.scene.dataset, runner.grid, runner.statistics
        timings["statistics"] = runner.statistics_seconds
        step = time.perf_counter()
        if plan.needs_regions:
            frame = SceneFrame.from_dataset(dataset)
            answer = STRATEGY_FUNCTIONS[plan.strategy](plan.query, runner, frame)
        else:
            answer = map_answer(plan.query)
        chosen_pass = runner.run(answer.sentence, answer.instances)
        timings["passes"] = time.perf_counter() - step
        timings["encode_expression"] = runner.encode_seconds
        timings["check"] = runner.checker.seconds
        polygons = write_outputs(
            plan, answer, chosen_pass, dataset, metadata, runner.stack, timings
        )
        remove_state(beside)
        passes = list(runner.passes.values())
        bands, resampled = list(runner.scene.bands), runner.scene.resampled
    timings["total"] = time.perf_counter() - started
    result = SegmentResult(
        input=str(input_path),
        expression=plan.expression,
        model=metadata.name,
        outputs=[str(t) for t in [*plan.targets, *([plan.candidates] if plan.candidates else [])]],
        threshold=plan.threshold,
        bands=bands,
        grid={
            "height": grid.height,
            "width": grid.width,
            "tile_size": grid.tile_size,
            "overlap": grid.overlap,
            "margin": grid.margin,
        },
        normalization=statistics.to_dict(),
        tiles={
            **_tile_summary(passes),
            "checked_regions": runner.checker.regions_checked,
            "check_forwards": runner.checker.forwards,
        },
        polygons=polygons,
        timings={k: round(v, 4) for k, v in timings.items()},
        resampled=resampled,
        command=list(command) if command is not None else list(sys.argv),
        versions=_versions(),
        strategy=plan.strategy,
        reading=plan.query.to_dict(),
        choice=answer.ranking.summary(answer.regions),
        referent_found=bool(answer.ranking.chosen) if plan.needs_regions else None,
        passes=[p.to_dict() for p in passes],
        model_sha256=metadata.sha256,
        options=options.to_dict(),
    )
    for target in result.outputs:
        sidecar = sidecar_path(Path(target))
        try:
            with atomic_output(sidecar, overwrite=True) as temporary:
                temporary.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as error:  # a full disk, or a folder put in its way since check_run
            what = f"{sidecar.name} (the outputs themselves are complete)"
            raise write_failure(sidecar, what, error) from None
    return result


def _resume_key(plan: RunPlan, metadata: ModelMetadata, raster_kind: str | None) -> dict[str, str]:
    """The run's part of a resumable state's key: what its pixels depend on, but the grid."""
    percentiles = plan.options.percentiles
    return {
        "input": input_fingerprint(plan.input_path),
        "sentence": repr(plan.expression),
        "strategy": plan.strategy,
        "model": metadata.sha256 or metadata.name,
        "threshold": f"{plan.threshold:g}",
        "resolution": "native" if plan.gsd is None else f"{plan.gsd:g} m",
        "stretch": "the model's" if percentiles is None else f"percentiles {percentiles}",
        "raster kind": raster_kind or "none",
    }


def _tile_summary(passes: Sequence[ScenePass]) -> dict[str, Any]:
    presences = [p.counts.presence_max for p in passes if p.counts.presence_max is not None]
    return {
        "total": passes[0].counts.total if passes else 0,
        "predicted": sum(p.counts.predicted for p in passes),
        "skipped_nodata": passes[0].counts.skipped_nodata if passes else 0,
        "batches": sum(p.counts.batches for p in passes),
        "presence_max": max(presences) if presences else None,
        "passes": len(passes),
    }


def write_outputs(
    plan: RunPlan,
    answer: Answer,
    chosen_pass: ScenePass,
    dataset: Any,
    metadata: ModelMetadata,
    stack: contextlib.ExitStack,
    timings: dict[str, float],
) -> int | None:
    """Write every output of the plan from the chosen pass; all appear together or none.

    Rasters hold the chosen pass's probabilities, restricted to the referents when the
    strategy ranked regions of a description (the other instances are candidates, not the
    answer). Vector outputs hold the referents; the candidate layer every region.

    Returns:
        The number of polygons written to the vector outputs (None: no vector output).
    """
    work = chosen_pass.work
    kind = plan.options.raster_kind
    attributes = {
        "expression": plan.expression,
        "model": metadata.name,
        "threshold": plan.threshold,
    }
    chosen = [answer.regions[i] for i in answer.ranking.chosen]
    # Every output is finished under a temporary name first and all are renamed together at
    # the end: a failure anywhere leaves none of them behind.
    with contextlib.ExitStack() as commit:
        every = [*plan.targets, *([plan.candidates] if plan.candidates else [])]
        temporaries = {
            target: commit.enter_context(atomic_output(target, plan.options.overwrite))
            for target in every
        }
        step = time.perf_counter()
        if plan.paths(RASTER):
            source = work.paths[kind]
            if answer.restrict_raster:
                source = temporary_sibling(next(iter(plan.targets)), ".tif")
                stack.callback(_remove, source)
                keep_under(
                    work.paths[kind], source, [r.geometry for r in chosen], work.encodings[kind]
                )
            for target in plan.paths(RASTER):
                write_cog(source, temporaries[target], work.encodings[kind])
        timings["cog"] = time.perf_counter() - step
        step = time.perf_counter()
        for target in plan.paths(VECTOR):
            write_polygons(chosen, dataset.crs, temporaries[target], attributes, target.stem)
        if plan.candidates is not None:
            ranking = answer.ranking
            ordered = [answer.regions[i] for i in ranking.order]
            columns: dict[str, Sequence[Any]] = {
                "chosen": [i in ranking.chosen for i in ranking.order],
                "reason": [ranking.reasons[i] for i in ranking.order],
                "presence": [_number(answer.regions[i].presence) for i in ranking.order],
                "measure": [ranking.measure] * len(ordered),
                "value": [_number(ranking.values[i]) for i in ranking.order],
                "reads_as": [answer.regions[i].reads_as[0] or "" for i in ranking.order],
                "reads_as_score": [_number(answer.regions[i].reads_as[1]) for i in ranking.order],
                "mended_from_m2": [_number(answer.regions[i].mended_from) for i in ranking.order],
            }
            write_polygons(
                ordered,
                dataset.crs,
                temporaries[plan.candidates],
                attributes,
                plan.candidates.stem,
                columns,
            )
        timings["vectorize"] = time.perf_counter() - step
    return len(chosen) if plan.paths(VECTOR) else None


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".aux.xml")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def refer_sentences(
    input_path: str | Path,
    sentences: Sequence[str],
    model: SegmentationModel,
    options: SegmentOptions | None = None,
) -> list[Answer]:
    """Answer several sentences about one scene, writing nothing.

    The scene is opened and normalized once, and each distinct description (and anchor) is
    one pass shared by every sentence that needs it: "the largest storage tank" and "the
    northernmost storage tank" cost one pass of "The storage tank.".

    Args:
        input_path: Any raster GDAL reads.
        sentences: The sentences.
        model: A loaded model.
        options: Tiling and strategy options (outputs and candidates are ignored).

    Returns:
        One :class:`~rrsis_geo.inference.referring.Answer` per sentence, in order; its
        regions are in the raster's CRS (``Answer.crs``).
    """
    options = options or SegmentOptions()
    metadata = model.metadata
    threshold, gsd = options.threshold_of(metadata), options.gsd_of(metadata)
    with (
        tempfile.TemporaryDirectory(prefix="rrsis-refer-") as folder,
        open_passes(
            Path(input_path), model, options, threshold, gsd, Path(folder) / "work.tif"
        ) as runner,
    ):
        frame = SceneFrame.from_dataset(runner.scene.dataset)
        strategy = STRATEGY_FUNCTIONS[options.strategy]
        answers = []
        for sentence in sentences:
            answer = strategy(parse_sentence(" ".join(sentence.split())), runner, frame)
            answer.crs = runner.scene.dataset.crs
            answers.append(answer)
    return answers


@contextlib.contextmanager
def open_passes(
    input_path: Path,
    model: SegmentationModel,
    options: SegmentOptions,
    threshold: float,
    gsd: float | None,
    beside: Path,
    raster_kind: str | None = None,
    tags: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    resume_key: dict[str, str] | None = None,
) -> Iterator[PassRunner]:
    """The scene opened, gridded and normalized once, and a :class:`PassRunner` over it.

    Everything (the scene, the passes' work rasters) is closed when the block ends.

    Args:
        input_path: Any raster GDAL reads.
        model: A loaded model.
        options: Bands, tiling, normalization, polygon and check options.
        threshold: Foreground threshold.
        gsd: Ground resolution to resample to, or None for the native one.
        beside: Work rasters are written beside this path.
        raster_kind: The raster encoding the outputs want, or None when no raster is written.
        tags: Metadata tags of the work rasters.
        progress: Optional progress callback (per pass).
        resume_key: Resume the first pass (see :class:`PassRunner`); None: no resumable state.
    """
    metadata = model.metadata
    # GDAL's block cache defaults to 5% of RAM and fills with written blocks; the pipeline reads
    # and writes whole block rows once each, so a small cache loses nothing and bounds memory.
    with (
        rasterio.Env(**_gdal_config()),
        open_scene(
            input_path, options.bands, metadata.in_channels, gsd, options.max_upsampling
        ) as scene,
        contextlib.ExitStack() as stack,
    ):
        grid = scene_grid(scene.dataset, metadata, options)
        started = time.perf_counter()
        statistics = scene_statistics(
            scene.dataset, scene.bands, metadata, options, scene.path.name
        )
        runner = PassRunner(
            scene, model, grid, statistics, threshold, options.vector, raster_kind,
            stack, beside, tags or {}, options.batch_size, progress,
            options.vocabulary_of(metadata), metadata.category_areas_m2, resume_key,
        )  # fmt: skip
        runner.statistics_seconds = time.perf_counter() - started
        yield runner


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

    def flush(self) -> None:
        """Write every writer's rows so far to disk."""
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        """Close every writer; raise the first failure (a full disk) once all are closed."""
        failures = []
        for writer in self.writers.values():
            try:
                writer.close()
            except OutputError as error:
                failures.append(error)
        if failures:
            raise failures[0]


class _Checkpoint:
    """The sinks of a resumable loop's passes, saving the state as all of them advance.

    Each pass's sink writes its rows and flushes them to disk; the state records the rows
    that every pass has flushed (the slowest pass's end), with every pass's presence scores.
    The sinks run in their own threads (one per pass), hence the lock.
    """

    def __init__(
        self, state: ResumeState, works: Sequence[_WorkRasters], presences: Sequence[PresenceMap]
    ) -> None:
        self.state, self.works, self.presences = state, works, presences
        self._ends = [state.rows_done] * len(works)
        self._lock = threading.Lock()

    def sinks(self) -> list[RowSink]:
        """One sink per pass, in the order of ``works``."""
        return [functools.partial(self._write, index) for index in range(len(self.works))]

    def _write(self, index: int, first_row: int, probabilities: np.ndarray) -> None:
        work = self.works[index]
        work.write_rows(first_row, probabilities)
        work.flush()
        with self._lock:
            self._ends[index] = first_row + probabilities.shape[0]
            done = min(self._ends)
            if done > self.state.rows_done:
                cut = self.presences[0].grid.first_row_reaching(done)
                self.state.save(done, [presence.scores[:cut] for presence in self.presences])


def _work_kinds(raster_kind: str | None, vector: bool) -> list[str]:
    """The encodings of the work rasters a pass writes."""
    kinds: list[str] = []
    if raster_kind is not None:
        kinds.append(raster_kind)
    if vector:
        kinds.append("binary")
        if raster_kind not in ("probability", "float32"):
            kinds.append("probability")
    return list(dict.fromkeys(kinds))


@contextlib.contextmanager
def _work_rasters(
    beside: Path,
    dataset: Any,
    kinds: Sequence[str],
    threshold: float,
    tags: dict[str, str],
    state: ResumeState | None = None,
    index: int = 0,
) -> Iterator[_WorkRasters]:
    """Work rasters beside ``beside``, removed when the block ends.

    With a resumable ``state`` they have fixed names (:func:`work_raster_path` of pass
    ``index``), the ones with rows already final are reopened, and they are kept when the block
    fails or is interrupted.
    """
    work = _WorkRasters()
    failed = False
    try:
        for kind in kinds:
            encoding = RasterEncoding(kind, threshold)
            path = temporary_sibling(beside, ".tif") if state is None else None
            work.paths[kind] = path or work_raster_path(beside, kind, index)
            work.encodings[kind] = encoding
            try:
                if state is not None and state.rows_done:
                    work.writers[kind] = TiledRasterWriter.reopen(work.paths[kind], encoding)
                    continue
                work.writers[kind] = TiledRasterWriter(
                    work.paths[kind],
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
    except BaseException:
        failed = True
        raise
    finally:
        with contextlib.suppress(OutputError):  # said where the pass closed them
            work.close()
        if state is None or not failed:
            for path in work.paths.values():
                _remove(path)


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
