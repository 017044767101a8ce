"""Resuming interrupted passes from their last finished band of rows (``rrsis segment --resume``).

The state of a resumable run is that of its first tiling loop, which runs one sentence or
several together (a relation's description and anchor). It lives beside the run's first
output, under hidden names: each pass's work rasters (:func:`work_raster_path`, numbered by
pass) and a small progress file (:func:`progress_path`), replaced atomically each time a block
of rows has been written to every pass's work rasters and flushed to disk. The progress file
records

- ``rows``: every raster row above it is final in the work rasters of every pass;
- ``presence``: per pass, the per-tile presence scores of the tile rows a resumed loop will not
  predict again (the regions read them);
- ``key``: what the pixels depend on: the input (path, size, modification time), the sentence
  and the passes, the model (weights' sha256, else its name), the tile grid, bands, threshold,
  resolution, stretch and raster kind.

A resumed pass restarts at the first tile row that reaches an unfinished row
(:meth:`~rrsis_geo.geo.tiling.TileGrid.first_row_reaching`) and keeps the rows above it
(:class:`~rrsis_geo.geo.stitching.StreamingStitcher`'s ``start_row``), so its pixels are those
of an uninterrupted pass. A state with another key is refused, never silently mixed in.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rrsis_geo.errors import InputError
from rrsis_geo.geo.tiling import TileGrid
from rrsis_geo.geo.writers import atomic_output

__all__ = [
    "ResumeState",
    "describe_pass",
    "grid_key",
    "input_fingerprint",
    "progress_path",
    "remove_state",
    "work_raster_path",
]

PROGRESS_VERSION = 2  # 1: one pass, its presence list not nested
WORK_KINDS = ("probability", "binary", "float32")
"""Every encoding a work raster may have (:class:`~rrsis_geo.geo.writers.RasterEncoding`)."""
START_OVER = "run without --resume to start over"


def progress_path(beside: Path) -> Path:
    """The progress file of the resumable state beside an output."""
    return beside.with_name(f".{beside.stem}.resume.tmp.json")


def work_raster_path(beside: Path, kind: str, index: int = 0) -> Path:
    """The resumable work raster of one encoding (``"binary"``, ...) of pass ``index``."""
    number = str(index) if index else ""  # the first pass's name is the one of version 1
    return beside.with_name(f".{beside.stem}.resume{number}-{kind}.tmp.tif")


def input_fingerprint(path: Path) -> str:
    """The input as the key records it: resolved path, size and modification time."""
    stat = path.stat()
    return f"{path.resolve()} ({stat.st_size} bytes, modified {stat.st_mtime_ns} ns)"


def remove_state(beside: Path) -> None:
    """Remove the resumable state beside an output, if any (progress file first)."""
    with contextlib.suppress(FileNotFoundError):
        progress_path(beside).unlink()
    index = 0
    while True:
        rasters = [work_raster_path(beside, kind, index) for kind in WORK_KINDS]
        leftovers = [p for r in rasters for p in (r, r.with_name(r.name + ".aux.xml"))]
        if index and not any(path.exists() for path in leftovers):
            return
        for leftover in leftovers:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        index += 1


@dataclass
class ResumeState:
    """The resumable state of a loop's passes, as found on disk and as updated while it runs.

    Attributes:
        beside: The output the state lives beside.
        key: What the pixels depend on, name -> description (see the module).
        rows_done: Raster rows final in every pass's work rasters (0: start from the top).
        presence: Per pass, ``[tile row, tile column, score]`` of the tiles before the
            restart (empty lists when starting from the top).
    """

    beside: Path
    key: dict[str, str]
    rows_done: int = 0
    presence: list[list[list[float]]] = field(default_factory=list)

    @classmethod
    def open(
        cls, beside: Path, key: dict[str, str], kinds: Sequence[str], passes: int = 1
    ) -> ResumeState:
        """The state to continue from: the saved one, or a fresh one when there is none.

        A saved state whose work rasters are missing or unreadable is dropped (the pass
        starts over): only the progress file decides what is final.

        Args:
            beside: The output the state lives beside.
            key: What the pixels of this run depend on.
            kinds: The work rasters' encodings.
            passes: How many passes the loop runs (the key's ``pass`` names them).

        Raises:
            InputError: The saved state is unreadable or was made for another key.
        """
        path = progress_path(beside)
        try:
            saved = json.loads(path.read_text())
            rows, presence = int(saved["rows"]), list(saved["presence"])
            recorded = dict(saved["key"])
            if saved.get("version", 1) == 1:
                presence = [presence]
        except FileNotFoundError:
            return cls(beside, key, 0, [[] for _ in range(passes)])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{beside} cannot resume: its progress file {path.name} is unreadable "
                f"({type(error).__name__}); {START_OVER}"
            ) from None
        differs = [
            f"the {name} differs (saved {recorded.get(name)}, now {value})"
            for name, value in key.items()
            if recorded.get(name) != value
        ]
        if differs:
            raise InputError(f"{beside} cannot resume: {'; '.join(differs)}; {START_OVER}")
        rasters = [work_raster_path(beside, k, i) for i in range(passes) for k in kinds]
        if len(presence) != passes or not all(_readable(path, rows) for path in rasters):
            return cls(beside, key, 0, [[] for _ in range(passes)])
        return cls(beside, key, rows, presence)

    def save(self, rows: int, scores: Sequence[np.ndarray]) -> None:
        """Record that every row above ``rows`` is final (every work raster flushed before).

        Args:
            rows: Raster rows final in the work rasters of every pass.
            scores: Per pass, presence scores of the tile rows a resumed loop will not
                predict again (NaN: none).
        """
        presence = [
            [[int(r), int(c), float(each[r, c])] for r, c in np.argwhere(np.isfinite(each))]
            for each in scores
        ]
        document = {
            "version": PROGRESS_VERSION,
            "key": self.key,
            "rows": rows,
            "presence": presence,
        }
        with atomic_output(progress_path(self.beside), overwrite=True) as temporary:
            temporary.write_text(json.dumps(document) + "\n")
        self.rows_done, self.presence = rows, presence


def _readable(path: Path, rows: int) -> bool:
    """True when ``path`` opens and its last final row reads back."""
    try:
        with rasterio.open(path) as dataset:
            if rows > 0:
                dataset.read(1, window=Window(0, min(rows, dataset.height) - 1, dataset.width, 1))
    except (RasterioError, OSError):
        return False
    return True


def describe_pass(sentence: str, instances: bool) -> str:
    """The pass as the key records it."""
    return f"{sentence!r}" + (" (every instance)" if instances else "")


def grid_key(grid: TileGrid, bands: Sequence[int]) -> dict[str, str]:
    """The grid and bands as the key records them."""
    return {
        "tile grid": f"{grid.height} x {grid.width} px, tile {grid.tile_size}, "
        f"overlap {grid.overlap}, margin {grid.margin}",
        "bands": ",".join(str(b) for b in bands),
    }
