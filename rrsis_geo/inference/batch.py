"""Many scene-sentence requests in one process: the library part of ``rrsis batch``.

A manifest (CSV or JSONL) lists rows of a scene, a sentence (or a JSONL ``sentences`` list),
outputs and per-row options; :func:`read_manifest` reads it into :class:`ManifestRow` values
as written, and the CLI turns each into a :class:`BatchRow` (a
:class:`~rrsis_geo.inference.pipeline.SegmentRequest`) with ``rrsis segment``'s own option
parser. :func:`run_batch` then loads each distinct model once, skips rows whose outputs
already answer the same request (:func:`skip_reason`), runs the others through
:func:`~rrsis_geo.inference.pipeline.check_run` and
:func:`~rrsis_geo.inference.pipeline.segment`, and records every row's outcome in a
:class:`BatchReport`.
"""

from __future__ import annotations

import csv
import functools
import glob
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrsis_geo.errors import InputError, RrsisError
from rrsis_geo.geo.writers import sidecar_path
from rrsis_geo.inference.pipeline import ProgressCallback, SegmentRequest

__all__ = [
    "MANIFEST_COLUMNS",
    "SCENE_SUFFIXES",
    "BatchReport",
    "BatchRow",
    "ManifestRow",
    "ModelCache",
    "RowOutcome",
    "SharedModel",
    "default_rows_in_flight",
    "failure_reason",
    "read_manifest",
    "run_batch",
    "run_row",
    "scene_paths",
    "skip_reason",
]

MANIFEST_COLUMNS = ("scene", "sentence", "sentences", "output", "outputs")
"""Columns that are not ``rrsis segment`` options; every other column must be one."""

SCENE_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt", ".png", ".jpg", ".jpeg")
"""What a folder given to ``rrsis batch`` is searched for."""

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row as written, before its options are parsed.

    Attributes:
        line: Where it is: the line of a JSONL file, the line of a CSV file (header = 1).
        scene: The raster.
        sentences: One or more referring expressions.
        outputs: Output files of a row of one sentence (empty: default names).
        options: Column -> value for every other column (``rrsis segment`` options).
        sentence_outputs: Output files of each sentence of a JSONL ``sentences`` list, in
            order (empty: default names); empty when no sentence names its own.
    """

    line: int
    scene: str
    sentences: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    sentence_outputs: tuple[tuple[str, ...], ...] = ()

    def outputs_of(self, index: int) -> tuple[str, ...]:
        """The outputs of sentence ``index`` (empty: default names)."""
        if self.sentence_outputs and self.sentence_outputs[index]:
            return self.sentence_outputs[index]
        return self.outputs


@dataclass(frozen=True)
class BatchRow:
    """One scene-sentence request of a batch.

    Attributes:
        line: Its manifest line (the scene's position for a glob or a folder).
        request: What ``rrsis segment`` would be asked to do.
    """

    line: int
    request: SegmentRequest


@dataclass
class RowOutcome:
    """What became of one row.

    Attributes:
        row: The row.
        status: ``"done"``, ``"skipped"`` or ``"failed"``.
        outputs: Its output files.
        seconds: Wall time spent on it.
        tiles: Tiles the model predicted for it (0 when skipped or failed).
        reason: One line: why it failed (or was skipped), else None.
    """

    row: BatchRow
    status: str
    outputs: list[str]
    seconds: float = 0.0
    tiles: int = 0
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        request = self.row.request
        return {
            "line": self.row.line,
            "scene": str(request.input_path),
            "sentence": request.expression,
            "status": self.status,
            "outputs": self.outputs,
            "seconds": round(self.seconds, 3),
            "tiles_predicted": self.tiles,
            "reason": self.reason,
        }


@dataclass
class BatchReport:
    """Every row's outcome, in manifest order, and whether the batch was interrupted."""

    outcomes: list[RowOutcome] = field(default_factory=list)
    total: int = 0
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        """Rows done, skipped and failed."""
        return {s: sum(o.status == s for o in self.outcomes) for s in (DONE, SKIPPED, FAILED)}

    @property
    def failed(self) -> bool:
        """Whether any row failed (or the batch was interrupted)."""
        return self.interrupted or self.counts()[FAILED] > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``rrsis batch --json``)."""
        return {
            "rows": [outcome.to_dict() for outcome in self.outcomes],
            "counts": self.counts(),
            "total": self.total,
            "interrupted": self.interrupted,
        }

    def table(self) -> str:
        """A plain-text table of the rows and a line of counts."""
        lines = [f"{'line':>4}  {'status':<7} {'seconds':>8} {'tiles':>6}  scene / sentence"]
        for outcome in self.outcomes:
            row = outcome.to_dict()
            lines.append(
                f"{row['line']:>4}  {row['status']:<7} {row['seconds']:>8.2f} "
                f"{row['tiles_predicted']:>6}  {row['scene']} {row['sentence']!r}"
                + (f" ({row['reason']})" if outcome.status == FAILED else "")
            )
        counts = ", ".join(f"{n} {status}" for status, n in self.counts().items())
        unreached = self.total - len(self.outcomes)
        lines.append(f"{counts}" + (f", {unreached} not reached" if unreached else ""))
        return "\n".join(lines)


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read a CSV (header row) or JSONL (one object a line) manifest.

    A row names ``scene``, ``sentence`` (or, in JSONL, a ``sentences`` list), optionally
    ``output`` (CSV: several separated by ``;``; JSONL: a string or a list) and any
    ``rrsis segment`` option as a column (empty cells: the option's default).

    Raises:
        InputError: An unreadable file, an unknown suffix, a malformed line, or a row
            without a scene or a sentence.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"manifest {path}: not readable ({error})") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        records = _csv_records(text)
    elif suffix in (".jsonl", ".ndjson"):
        records = _jsonl_records(path, text)
    else:
        raise InputError(f"manifest {path}: use a .csv or .jsonl file, not {suffix or 'none'}")
    rows = [_manifest_row(path, line, record) for line, record in records]
    if not rows:
        raise InputError(f"manifest {path}: no rows")
    return rows


def _csv_records(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    records = []
    for record in reader:
        cleaned = {
            (key or "").strip(): (value or "").strip()
            for key, value in record.items()
            if key is not None
        }
        cleaned = {key: value for key, value in cleaned.items() if value != ""}
        if cleaned:
            records.append((reader.line_num, cleaned))
    return records


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            record = json.loads(content)
        except json.JSONDecodeError as error:
            raise InputError(f"manifest {path} line {line}: not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"manifest {path} line {line}: not a JSON object")
        records.append((line, {k: v for k, v in record.items() if v is not None}))
    return records


def _manifest_row(path: Path, line: int, record: dict[str, Any]) -> ManifestRow:
    where = f"manifest {path} line {line}"
    scene = record.pop("scene", None)
    if not isinstance(scene, str) or not scene:
        raise InputError(f"{where}: no scene")
    listed = _sentence_list(record.pop("sentences", None), where)
    sentence = record.pop("sentence", None)
    if sentence is not None:
        listed = [(text, ()) for text in _strings(sentence, where, "sentence")] + listed
    if not listed:
        raise InputError(f"{where}: no sentence")
    outputs = _outputs(record, where)
    if outputs and len(listed) > 1:
        raise InputError(
            f"{where}: several sentences cannot share outputs; leave output out, or give each "
            'sentence its own: "sentences": [{"sentence": ..., "outputs": [...]}, ...]'
        )
    sentences = tuple(text for text, _ in listed)
    own = tuple(each for _, each in listed) if any(each for _, each in listed) else ()
    return ManifestRow(line, scene, sentences, tuple(outputs), record, own)


def _outputs(record: dict[str, Any], where: str) -> list[str]:
    """The ``output`` and ``outputs`` of a row or of a sentence of a ``sentences`` list."""
    outputs = _strings(record.pop("output", None), where, "output", split=";")
    return outputs + _strings(record.pop("outputs", None), where, "outputs", split=";")


def _sentence_list(value: Any, where: str) -> list[tuple[str, tuple[str, ...]]]:
    """A JSONL ``sentences`` list: texts, or ``{"sentence": ..., "outputs": [...]}`` objects."""
    if not isinstance(value, list):
        return [(text, ()) for text in _strings(value, where, "sentences")]
    listed = []
    for item in value:
        if isinstance(item, dict):
            item = dict(item)
            text = item.pop("sentence", None)
            outputs = tuple(_outputs(item, where))
            if item:
                unknown = ", ".join(sorted(item))
                raise InputError(
                    f"{where}: a sentences object takes sentence and outputs, not {unknown}"
                )
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{where}: a sentences object needs a sentence (text)")
            listed.append((text, outputs))
        else:
            listed += [(text, ()) for text in _strings([item], where, "sentences")]
    return listed


def _strings(value: Any, where: str, column: str, split: str | None = None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(split) if split else [value]
        return [part.strip() for part in parts if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item for item in value if item.strip()]
    raise InputError(f"{where}: {column} must be text or a list of text")


def scene_paths(pattern: str) -> list[Path]:
    """The scenes of a folder (files with a :data:`SCENE_SUFFIXES` suffix) or a glob.

    A file with a ``.json`` sidecar beside it is an output of an earlier run, not a scene.

    Raises:
        InputError: When nothing matches.
    """
    folder = Path(pattern)
    if folder.is_dir():
        found = [p for p in folder.iterdir() if p.suffix.lower() in SCENE_SUFFIXES]
    else:
        found = [Path(p) for p in glob.glob(pattern, recursive=True)]
    scenes = sorted(p for p in found if p.is_file() and not sidecar_path(p).exists())
    if not scenes:
        raise InputError(f"no scene matches {pattern}")
    return scenes


def failure_reason(error: BaseException) -> str:
    """One line on why a row failed: the message of an :class:`RrsisError`, else the type."""
    if isinstance(error, RrsisError):
        return str(error)
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"internal error: {type(error).__name__}: {first_line}"


class ModelCache:
    """Each distinct model (spec and device) loaded once, or its loading error kept.

    Args:
        loader: Loads ``(spec, device)``; :func:`~rrsis_geo.inference.model.load_model` by
            default.
        shared: Rows running side by side use the models: each is a :class:`SharedModel`.
    """

    def __init__(
        self, loader: Callable[[str, str], Any] | None = None, shared: bool = False
    ) -> None:
        if loader is None:
            from rrsis_geo.inference.model import load_model

            loader = load_model
        self._loader = loader
        self._shared = shared
        self._models: dict[tuple[str, str], Any] = {}
        self._errors: dict[tuple[str, str], Exception] = {}
        self._lock = threading.Lock()

    def get(self, request: SegmentRequest) -> Any:
        """The loaded model of ``request``.

        Raises:
            Exception: The error loading it raised (again for every row that names it).
        """
        key = (request.model, request.device)
        with self._lock:  # rows side by side load a model once between them
            if key in self._errors:
                raise self._errors[key]
            if key not in self._models:
                try:
                    model = self._loader(*key)
                except Exception as error:
                    self._errors[key] = error
                    raise
                self._models[key] = SharedModel(model) if self._shared else model
            return self._models[key]


def skip_reason(request: SegmentRequest, models: ModelCache) -> str | None:
    """Why the outputs of ``request`` cannot be kept as they are, or None to skip it.

    A row is skipped when every output exists and every sidecar (``<output>.json``) records
    the same input path, sentence, options (but ``overwrite`` and ``resume``) and model (its
    weights' sha256, else its name). The model is loaded only when all else matches.

    Returns:
        None when the outputs answer this request; ``"missing"`` when an output is missing;
        else what differs, in words.
    """
    paths = request.output_paths()
    if not all(path.exists() for path in paths):
        return "missing"
    wanted = request.options.to_dict()
    for unrecorded in ("overwrite", "resume"):  # how a row runs, not what it computes
        wanted.pop(unrecorded)
    expression = " ".join(request.expression.split())
    sidecars = []
    for path in paths:
        sidecar = _read_sidecar(path)
        if sidecar is None:
            return f"{path} has no readable sidecar {path.name}.json"
        recorded = dict(sidecar.get("options") or {})
        for unrecorded in ("overwrite", "resume"):
            recorded.pop(unrecorded, None)
        if Path(str(sidecar.get("input"))).resolve() != request.input_path.resolve():
            return f"{path} was made from {sidecar.get('input')}"
        if sidecar.get("expression") != expression:
            return f"{path} answers {sidecar.get('expression')!r}"
        if recorded != wanted:
            keys = wanted.keys() | recorded.keys()
            differ = sorted(k for k in keys if wanted.get(k) != recorded.get(k))
            return f"{path} was made with other options ({', '.join(differ)})"
        sidecars.append(sidecar)
    metadata = models.get(request).metadata
    for path, sidecar in zip(paths, sidecars, strict=True):
        if metadata.sha256 and sidecar.get("model_sha256"):
            same = sidecar["model_sha256"] == metadata.sha256
        else:
            same = sidecar.get("model") == metadata.name
        if not same:
            return f"{path} was made by another model ({sidecar.get('model')})"
    return None


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def run_row(
    row: BatchRow,
    models: ModelCache,
    command: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> RowOutcome:
    """Skip, run or fail one row; never raises but for an interruption.

    Outputs that exist but answer another request fail the row unless its options say
    ``overwrite``. A failing row leaves no output behind (``segment`` writes atomically).

    Args:
        row: The request.
        models: Where its model is loaded once.
        command: The command line recorded in the sidecars.
        progress: Called with (done, total) tiles as ``rrsis segment --progress`` is.
    """
    from rrsis_geo.inference.pipeline import check_run, segment

    request = row.request
    outputs = [str(path) for path in request.output_paths()]
    started = time.perf_counter()
    try:
        differs = skip_reason(request, models)
        if differs is None:
            return RowOutcome(row, SKIPPED, outputs, time.perf_counter() - started, 0, None)
        if differs != "missing" and not request.options.overwrite:
            raise InputError(f"{differs}; --overwrite replaces it")
        options = request.options
        checked = check_run(request.input_path, request.expression, request.outputs, options)
        model = models.get(request)
        result = segment(
            request.input_path,
            request.expression,
            model,
            request.outputs,
            options,
            progress,
            command,
            checked,
        )
    except Exception as error:
        reason = failure_reason(error)
        return RowOutcome(row, FAILED, outputs, time.perf_counter() - started, 0, reason)
    tiles = int(result.tiles.get("predicted", 0))
    return RowOutcome(row, DONE, result.outputs, time.perf_counter() - started, tiles, None)


MODEL_CALLS = ("encode_expression", "encode_description", "predict", "predict_many")
"""The methods through which the pipeline uses a model (:mod:`~rrsis_geo.inference.model`)."""


class SharedModel:
    """A model used by rows running side by side: one call at a time.

    Each row makes the same calls as alone (its own batches of its own tiles), so its outputs
    are the same; only the order of the rows' calls interleaves. Every other attribute is the
    model's own.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.metadata = model.metadata
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.model, name)
        if name not in MODEL_CALLS:
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


def default_rows_in_flight() -> int:
    """Rows run side by side by default: 2 where a GPU is, else 1.

    On a GPU, the next row's reading, and the last row's regions and writing, keep the GPU
    busy between rows; on a CPU they take the model's own cores (measured slower with 2, see
    docs/performance.md).
    """
    try:
        import torch
    except ImportError:
        return 1
    return 2 if torch.cuda.is_available() else 1


def run_batch(
    rows: Sequence[BatchRow],
    fail_fast: bool = False,
    on_row: Callable[[int, RowOutcome], None] | None = None,
    command: Sequence[str] | None = None,
    report: BatchReport | None = None,
    models: ModelCache | None = None,
    on_tiles: Callable[[int, int, int], None] | None = None,
    rows_in_flight: int = 1,
) -> BatchReport:
    """Run every row (see :func:`run_row`), each distinct model loaded once.

    Rows start in manifest order, ``rows_in_flight`` at a time: with 2, one row's reading,
    regions and writing overlap the other's model calls (one call at a time on a shared
    model, :class:`SharedModel`), and a row's outputs are the same as when it runs alone.

    Args:
        rows: The requests.
        fail_fast: Start no row after the first failed one (by default every row is tried).
        on_row: Called as each row finishes with its 1-based position and outcome.
        command: The command line recorded in the sidecars.
        report: Filled as rows finish (in manifest order), so a caller that is interrupted
            still has the rows so far; a new one by default.
        models: The model cache; a new one by default.
        on_tiles: Called with (row position, tiles done, tiles total) while a row runs.
        rows_in_flight: Rows running side by side (see :func:`default_rows_in_flight`).

    Returns:
        The report; ``interrupted`` stays False (a ``KeyboardInterrupt`` propagates once the
        rows running have stopped at their next batch of tiles and removed their temporary
        files, with ``report`` holding the rows finished before).
    """
    report = report if report is not None else BatchReport()
    report.total = len(rows)
    models = models if models is not None else ModelCache(shared=rows_in_flight > 1)
    finished: dict[int, RowOutcome] = {}
    stop = threading.Event()

    def run(position: int) -> RowOutcome:
        def progress(done: int, total: int) -> None:
            if stop.is_set():  # abandon the row here, unwinding as an interrupted segment does
                raise KeyboardInterrupt
            if on_tiles is not None:
                on_tiles(position, done, total)

        return run_row(rows[position - 1], models, command, progress)

    def record(position: int, outcome: RowOutcome) -> bool:
        """Keep the outcome; False when no row should start after it."""
        finished[position] = outcome
        report.outcomes = [finished[i] for i in sorted(finished)]
        if on_row is not None:
            on_row(position, outcome)
        return not (fail_fast and outcome.status == FAILED)

    positions = iter(range(1, len(rows) + 1))
    if rows_in_flight <= 1:  # in this thread: an interruption unwinds the row at once
        for position in positions:
            if not record(position, run(position)):
                break
        return report
    _side_by_side(run, record, positions, rows_in_flight, stop)
    return report


def _side_by_side(
    run: Callable[[int], RowOutcome],
    record: Callable[[int, RowOutcome], bool],
    positions: Iterator[int],
    rows_in_flight: int,
    stop: threading.Event,
) -> None:
    """``run`` each position in threads, ``rows_in_flight`` at a time, in order of position.

    Outcomes are given to ``record`` in this thread as rows finish; once it returns False no
    row starts any more. On any exception here (an interruption) ``stop`` is set, the rows
    running are waited for (they stop at their next batch of tiles), those that completed
    meanwhile are recorded too, and the exception goes on.
    """
    with ThreadPoolExecutor(rows_in_flight, "rrsis-row") as pool:
        running = {pool.submit(run, p): p for p in itertools.islice(positions, rows_in_flight)}
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=running.__getitem__):
                    position = running.pop(future)
                    if not record(position, future.result()):
                        positions = iter(())
                    for following in itertools.islice(positions, 1):
                        running[pool.submit(run, following)] = following
        except BaseException:
            stop.set()
            wait(running)
            for future, position in sorted(running.items(), key=lambda item: item[1]):
                if future.exception() is None:  # it completed meanwhile: its outputs stand
                    record(position, future.result())
            raise
