"""``rrsis batch``: many scene-sentence requests in one process, each model loaded once.

Every row's options are parsed by ``rrsis segment``'s own click command (one option list);
see docs/batch.md for the manifest format, the skip rule and the exit codes.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rrsis_geo.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    JsonOption,
    OverwriteOption,
    ProgressFormat,
    ProgressOption,
    QuietOption,
    TerminalProgress,
    command_errors,
    explain_sentence,
    json_progress,
    native_stderr,
    user_warnings,
)
from rrsis_geo.errors import InputError

if TYPE_CHECKING:
    from rrsis_geo.inference.batch import BatchReport, BatchRow, ManifestRow, RowOutcome

__all__ = ["batch", "batch_rows"]


class Engine(str, Enum):
    """Where ``rrsis batch --engine`` runs the rows (see docs/scale-out.md)."""

    dask = "dask"


# ``rrsis segment`` options that concern how one command reports, not what a row computes.
REPORTING_OPTIONS = ("json", "quiet", "progress", "explain", "output")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def batch(
    manifest: Annotated[
        str,
        typer.Argument(
            help="A .csv or .jsonl manifest, a folder of scenes, or a quoted glob such as "
            "'scenes/*.tif' (then -e gives the sentence).",
            show_default=False,
        ),
    ],
    expression: Annotated[
        str | None,
        typer.Option(
            "--expression",
            "-e",
            help="The sentence for every scene of a folder or glob.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for the outputs of rows that name none (created if missing; "
            "default: each scene's folder): SCENE_STEM.<sentence>.gpkg.",
            show_default=False,
        ),
    ] = None,
    suffix: Annotated[
        list[str] | None,
        typer.Option(
            "--suffix",
            help="Output suffix of rows that name no output; repeat for several, "
            "e.g. --suffix .gpkg --suffix .tif (default: .gpkg).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model of the rows without a model column (as rrsis segment --model).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Device of the rows without a device column (auto, cpu, cuda, cuda:N, mps).",
            show_default=False,
        ),
    ] = None,
    set_options: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE: an rrsis segment option for every row without that column, "
            "e.g. --set tile_size=256 --set bands=3,2,1.",
            show_default=False,
        ),
    ] = None,
    fail_fast: Annotated[
        bool,
        typer.Option(
            "--fail-fast/--continue-on-error",
            help="Stop at the first failed row, or try every row.",
        ),
    ] = False,
    engine: Annotated[
        Engine | None,
        typer.Option(
            help="Run the rows as tasks of a Dask cluster (needs pip install "
            "'rrsis-geo[cluster]'): one model load per worker, a row whose worker dies is "
            "retried on another. Default: in this process.",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="With --engine: the scheduler, HOST:PORT or a scheduler file (.json); "
            "default: start one on this machine with --workers processes.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="With --engine and no --address: worker processes on this machine "
            "(default: one per GPU, else 2).",
            min=1,
            show_default=False,
        ),
    ] = None,
    rows_in_flight: Annotated[
        int | None,
        typer.Option(
            help="Rows run side by side in this process, sharing its model: one row's "
            "reading and writing overlap the other's model calls. Default: 2 where a GPU "
            "is, else 1 (on a CPU the model uses every core).",
            min=1,
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    progress: ProgressOption = ProgressFormat.bar,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Print how each distinct sentence was read (on stderr), before the rows run.",
        ),
    ] = False,
) -> None:
    """Segment many scene-sentence rows in one process, each model loaded once.

    Rows whose outputs exist and whose sidecars record the same request are skipped, so
    running the same command again finishes only what is missing. Exit code 0 when no row
    failed, 1 when any did (each failure is named in the summary), 130 when interrupted.
    """
    defaults = _defaults(model, device, overwrite, set_options or [])
    with command_errors("nothing written"):
        if engine is None and (address is not None or workers is not None):
            raise InputError("--address and --workers are for --engine dask")
        if engine is not None and rows_in_flight is not None:
            raise InputError("--rows-in-flight is for a batch in this process (without --engine)")
        rows = batch_rows(manifest, expression, output, suffix or [], defaults)
    if explain:
        for sentence in dict.fromkeys(row.request.expression for row in rows):
            typer.echo(f"rrsis: batch: {sentence!r}", err=True)
            explain_sentence(sentence, "rrsis: reading: ")
    on_tiles = None if quiet else _tile_progress(progress, len(rows))
    report = _run(rows, fail_fast, quiet, on_tiles, engine, address, workers, rows_in_flight)
    if json_output:
        typer.echo(json.dumps(report.to_dict()))
    if not quiet:
        for line in report.table().splitlines():
            typer.echo(f"rrsis: batch: {line}", err=True)
    if report.interrupted:
        typer.echo("rrsis: interrupted; the rows done so far are kept", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_USER_ERROR if report.failed else 0)


def _defaults(
    model: str | None, device: str | None, overwrite: bool, settings: list[str]
) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for setting in settings:
        key, equals, value = setting.partition("=")
        if not equals or not key.strip():
            raise typer.BadParameter(f"{setting!r} is not KEY=VALUE", param_hint="--set")
        defaults[_key(key)] = value
    if model is not None:
        defaults["model"] = model
    if device is not None:
        defaults["device"] = device
    if overwrite:
        defaults["overwrite"] = True
    return defaults


def _run(
    rows: list[BatchRow],
    fail_fast: bool,
    quiet: bool,
    on_tiles: RowTiles | None,
    engine: Engine | None,
    address: str | None,
    workers: int | None,
    rows_in_flight: int | None,
) -> BatchReport:
    from rrsis_geo.inference.batch import BatchReport, default_rows_in_flight, run_batch

    report = BatchReport(total=len(rows))
    finished = itertools.count(1)

    def on_row(position: int, outcome: RowOutcome) -> None:
        if on_tiles is not None:
            on_tiles.row_finished(position, outcome)
        if not quiet:  # rows of an engine finish in any order: [k/N] counts them
            count = next(finished)
            typer.echo(f"rrsis: batch: [{count}/{len(rows)}] {_row_line(outcome)}", err=True)

    with command_errors("the rows done so far are kept"), user_warnings(quiet), native_stderr():
        try:
            if engine is None:
                in_flight = rows_in_flight or default_rows_in_flight()
                run_batch(rows, fail_fast, on_row, sys.argv, report, None, on_tiles, in_flight)
            else:
                from rrsis_geo.inference.cluster import run_batch_on_cluster

                run_batch_on_cluster(
                    rows, address, workers, fail_fast, on_row, sys.argv, report, on_tiles
                )
        except KeyboardInterrupt:
            report.interrupted = True
    return report


class RowTiles:
    """Tile progress of the rows running (``--progress``): a bar, or JSON lines.

    JSON lines are ``rrsis segment``'s progress events with ``row`` (the row's 1-based
    position in the manifest) and ``rows`` added, and a ``{"event": "row", ...}`` line as each
    row finishes (what the QGIS plugin reads). The bar shows the tiles of the rows running:
    one row in-process, several side by side on an engine, whose workers report from their own
    threads (hence the lock) and whose late reports of a finished row are dropped.
    """

    def __init__(self, progress: ProgressFormat, rows: int) -> None:
        self.progress, self.rows = progress, rows
        self._bar: TerminalProgress | None = None
        self._running: dict[int, tuple[int, int]] = {}
        self._finished: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, position: int, done: int, total: int) -> None:
        """Show ``done`` of ``total`` tiles of the row at ``position``."""
        with self._lock:
            if position in self._finished:
                return
            if self.progress is ProgressFormat.json:
                json_progress(done, total, row=position, rows=self.rows)
                return
            self._running[position] = (done, total)
            if self._bar is None:
                self._bar = TerminalProgress("tiles").__enter__()
            if self._bar is not None:
                running = ",".join(str(p) for p in sorted(self._running))
                done_all = sum(d for d, _ in self._running.values())
                total_all = sum(t for _, t in self._running.values())
                self._bar(done_all, total_all, f"[{running}/{self.rows}] tiles")

    def row_finished(self, position: int, outcome: RowOutcome) -> None:
        """Close the bar (the next report opens one), or write the row's JSON line."""
        with self._lock:
            self._finished.add(position)
            self._running.pop(position, None)
            if self._bar is not None:
                self._bar.__exit__()
                self._bar = None
            if self.progress is ProgressFormat.json:
                event = {"event": "row", "row": position, "rows": self.rows, **outcome.to_dict()}
                sys.stderr.write(json.dumps(event) + "\n")
                sys.stderr.flush()


def _tile_progress(progress: ProgressFormat, rows: int) -> RowTiles | None:
    return None if progress is ProgressFormat.none else RowTiles(progress, rows)


def _row_line(outcome: RowOutcome) -> str:
    request = outcome.row.request
    line = f'{outcome.status} {request.input_path} "{request.expression}"'
    return line + (f" ({outcome.reason})" if outcome.reason else "")


def batch_rows(
    source: str,
    expression: str | None,
    folder: Path | None,
    suffixes: list[str],
    defaults: dict[str, Any],
) -> list[BatchRow]:
    """Every row of a manifest, folder or glob, parsed and checked before any model loads.

    Args:
        source: A ``.csv``/``.jsonl`` manifest, a folder of scenes or a glob.
        expression: The sentence of every scene of a folder or glob (not with a manifest).
        folder: Where rows that name no output write theirs (default: the scene's folder).
        suffixes: Their suffixes (default ``.gpkg``).
        defaults: Option -> value for the rows that do not set it.

    Raises:
        InputError: A malformed manifest, an unknown column or option, a value the option
            refuses, or two rows writing the same output.
    """
    from rrsis_geo.inference.batch import ManifestRow, read_manifest, scene_paths

    path = Path(source)
    if path.is_file():
        if expression is not None:
            raise InputError("-e/--expression is for a folder or glob of scenes, not a manifest")
        entries = read_manifest(path)
    else:
        if expression is None:
            raise InputError(f"{source} is not a manifest file; give -e SENTENCE for its scenes")
        scenes = scene_paths(source)
        entries = [ManifestRow(i, str(p), (expression,)) for i, p in enumerate(scenes, 1)]
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    command = _segment_command()
    rows = [
        _batch_row(source, entry, index, folder, suffixes, defaults, command)
        for entry in entries
        for index in range(len(entry.sentences))
    ]
    _check_distinct_outputs(rows)
    return rows


def _segment_command() -> Any:
    """``rrsis segment``'s own (typer's click) command: the one list of segment options."""
    import typer.main

    from rrsis_geo.cli.app import app

    return getattr(typer.main.get_command(app), "commands")["segment"]  # noqa: B009


def _batch_row(
    source: str,
    entry: ManifestRow,
    index: int,
    folder: Path | None,
    suffixes: list[str],
    defaults: dict[str, Any],
    command: Any,
) -> BatchRow:
    from rrsis_geo.cli.app import segment_request
    from rrsis_geo.inference.batch import BatchRow
    from rrsis_geo.inference.pipeline import default_output_paths

    where = f"{source} line {entry.line}"
    sentence = entry.sentences[index]
    outputs = list(entry.outputs_of(index))
    if not outputs:
        scene = Path(entry.scene)
        named = default_output_paths(scene, sentence, suffixes or (".gpkg",), folder)
        outputs = [str(p) for p in named]
    arguments = [entry.scene, sentence, *(f"--output={out}" for out in outputs)]
    options = {**defaults, **{_key(key): value for key, value in entry.options.items()}}
    arguments += _option_arguments(where, options, command)
    try:
        context = command.make_context("segment", arguments)
        request = segment_request(context.params)
    except typer.TyperException as error:
        message = getattr(error, "format_message", error.__str__)()
        raise InputError(f"{where}: {message}") from None
    except InputError as error:
        raise InputError(f"{where}: {error}") from None
    return BatchRow(entry.line, request)


def _key(column: str) -> str:
    return column.strip().lstrip("-").replace("-", "_")


def _option_arguments(where: str, options: dict[str, Any], command: Any) -> list[str]:
    """``--flag`` / ``--name=value`` arguments of ``options`` for the segment command."""
    known = {
        _key(param.opts[0]): param
        for param in command.params
        if param.opts[0].startswith("--") and _key(param.opts[0]) not in REPORTING_OPTIONS
    }
    arguments = []
    for key, value in options.items():
        param = known.get(key)
        if param is None:
            raise InputError(
                f"{where}: unknown column {key!r}: a column is scene, sentence, sentences, "
                f"output or an rrsis segment option ({', '.join(sorted(known))})"
            )
        flag = param.opts[0]
        if getattr(param, "is_flag", False):
            if _truth(where, key, value):
                arguments.append(flag)
        elif isinstance(value, list):
            arguments.append(f"{flag}={','.join(str(item) for item in value)}")
        elif isinstance(value, bool):
            raise InputError(f"{where}: {key} takes a value, not {str(value).lower()}")
        else:
            arguments.append(f"{flag}={value}")
    return arguments


def _truth(where: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise InputError(f"{where}: {key} is a switch: use true or false, not {value!r}")


def _check_distinct_outputs(rows: list[BatchRow]) -> None:
    seen: dict[Path, BatchRow] = {}
    for row in rows:
        for path in row.request.output_paths():
            first = seen.setdefault(path.resolve(), row)
            if first is not row:
                raise InputError(f"lines {first.line} and {row.line} both write {path}")
