"""What every ``rrsis`` command shares: exit codes, error reporting, warnings, progress.

Exit codes: 0 success; 1 a problem with the input or outputs (one line on stderr); 2 a
command-line usage error; 3 an internal error (a bug: ``RRSIS_DEBUG=1`` shows the traceback);
130 interrupted (Ctrl-C or SIGTERM), with no partial output left behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer

__all__ = [
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "JsonOption",
    "OverwriteOption",
    "ProgressFormat",
    "ProgressOption",
    "QuietOption",
    "TerminalProgress",
    "command_errors",
    "fail",
    "json_progress",
    "native_stderr",
    "user_warnings",
]

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

# Options several commands share, declared once so they read and behave the same everywhere.
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or warnings.")]
ExplainOption = Annotated[
    bool, typer.Option("--explain", help="Print how the sentence was read (on stderr).")
]


def explain_sentence(sentence: str, prefix: str = "rrsis: reading: ") -> None:
    """Print how ``sentence`` was read (its scene-level words and description), on stderr."""
    from rrsis_geo.inference.sentence import parse_sentence

    for line in parse_sentence(sentence).explain().splitlines():
        typer.echo(f"{prefix}{line}", err=True)


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print ``rrsis: error: message`` on stderr and exit with ``code``."""
    typer.echo(f"rrsis: error: {message}", err=True)
    raise typer.Exit(code)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (QGIS's Cancel, a job scheduler) unwinds like Ctrl-C, so every temporary output
    # is removed by the code that created it.
    raise KeyboardInterrupt


@contextmanager
def command_errors(interrupted: str) -> Iterator[None]:
    """Run a command body: user errors exit 1, interruptions 130, bugs 3.

    Args:
        interrupted: What to tell the user after an interruption, e.g. "no output written".
    """
    from rrsis_geo.errors import RrsisError

    signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    except RrsisError as error:
        fail(str(error))
    except KeyboardInterrupt:
        typer.echo(f"rrsis: interrupted; {interrupted}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as error:
        if os.environ.get("RRSIS_DEBUG"):
            raise
        import rasterio.errors

        if isinstance(error, rasterio.errors.RasterioError):
            fail(f"GDAL could not complete: {_gdal_reason(error)}")
        first_line = str(error).splitlines()[0] if str(error) else ""
        fail(
            f"internal error: {type(error).__name__}: {first_line} "
            "(set RRSIS_DEBUG=1 for the traceback)",
            EXIT_INTERNAL_ERROR,
        )


def _gdal_reason(error: BaseException) -> str:
    """GDAL's own reason: rasterio's "See previous exception" message names none."""
    cause = error.__cause__ or error.__context__
    if "previous exception" in str(error) and cause is not None and str(cause):
        error = cause
    return str(error).splitlines()[0] if str(error) else type(error).__name__


@contextmanager
def native_stderr() -> Iterator[None]:
    """Keep what C libraries print straight to file descriptor 2 off the terminal.

    libtiff prints some failures (a full disk: a dozen ``_tiffWriteProc`` lines) with its own
    handler, which no GDAL setting silences; rrsis says what failed in its one line. Python's
    ``sys.stderr`` (warnings, progress, errors) still reaches the terminal. Nothing is
    diverted with ``RRSIS_DEBUG=1``, or when ``sys.stderr`` is not the process's stderr (a
    test runner capturing it).
    """
    try:
        diverted = not os.environ.get("RRSIS_DEBUG") and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        diverted = False
    if not diverted:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    original = sys.stderr
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = open(
            terminal, "w", encoding=original.encoding, errors="backslashreplace", buffering=1
        )
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(terminal, 2)
            sys.stderr.close()  # closes ``terminal``
            sys.stderr = original


def _show_warning(
    message: Any,
    category: Any,
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    typer.echo(f"rrsis: warning: {message}", err=True)


@contextmanager
def user_warnings(quiet: bool) -> Iterator[None]:
    """Show rrsis's own warnings as one line each (none with ``quiet``); hide libraries'."""
    from rrsis_geo.errors import RrsisWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not quiet:
            warnings.simplefilter("default", RrsisWarning)
        warnings.showwarning = _show_warning
        yield


class ProgressFormat(str, Enum):
    """How progress is reported on stderr."""

    bar = "bar"
    json = "json"
    none = "none"


ProgressOption = Annotated[
    ProgressFormat, typer.Option(help="Progress on stderr: a bar, JSON lines, or none.")
]


def json_progress(done: int, total: int, **more: Any) -> None:
    """Machine-readable progress (the QGIS plugin parses it): one JSON object per line."""
    event = {"event": "progress", "done": done, "total": total, **more}
    sys.stderr.write(json.dumps(event) + "\n")
    sys.stderr.flush()


class TerminalProgress:
    """A progress callback ``(done, total)`` drawing a rich bar on stderr.

    Only for people at a terminal: with stderr redirected (logs, pipes, QGIS) it draws
    nothing. Use as a context manager; it yields the callback, or None when disabled.
    """

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> TerminalProgress | None:
        return self if self.enabled else None

    def __call__(self, done: int, total: int, label: str | None = None) -> None:
        """Show ``done`` of ``total`` (under a new ``label`` when given)."""
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total)
        self.label = label or self.label
        self._bar.update(self._task, completed=done, total=total, description=self.label)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
