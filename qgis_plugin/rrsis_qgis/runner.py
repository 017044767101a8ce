"""Find the ``rrsis`` executable and run it in a subprocess, with progress and cancel.

The model runs in its own Python environment (torch and all), never inside QGIS: QGIS's
Python only starts a process and reads its JSON progress lines and JSON summary. This module
imports nothing from QGIS; the algorithms connect it to Processing feedback.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MINIMUM_VERSION = (0, 1, 0)
# Environment variables that QGIS sets for its own Python and GDAL: inherited by the rrsis
# environment they would make it import QGIS's packages or read another GDAL's data files.
QGIS_ONLY_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "GDAL_DATA",
    "GDAL_DRIVER_PATH",
    "PROJ_LIB",
    "PROJ_DATA",
    "QT_PLUGIN_PATH",
)
# How long rrsis may take to clean up after SIGTERM before it is killed.
TERMINATE_GRACE_SECONDS = 30.0
SETTINGS_HINT = (
    "Settings > Options > Processing > Providers > Referring segmentation (rrsis) > "
    "rrsis executable"
)


class RrsisError(Exception):
    """A failure to report to the user as one message (never a traceback).

    Attributes:
        summary: The JSON rrsis printed on stdout before it failed or was stopped, or None.
            ``rrsis batch`` prints its report of the rows so far even then.
    """

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class RrsisCanceled(RrsisError):
    """The user canceled; the subprocess was stopped."""


def _is_python(path: str) -> bool:
    return re.fullmatch(r"python[0-9.]*(\.exe)?", Path(path).name.lower()) is not None


@dataclass(frozen=True)
class Executable:
    """How to start rrsis: its command prefix and the version it reported.

    Attributes:
        command: ``[rrsis]``, or ``[python, -m, rrsis_geo]`` for a configured interpreter.
        version: The version ``--version`` printed, e.g. ``(0, 1, 0)``.
    """

    command: tuple[str, ...]
    version: tuple[int, ...]

    @property
    def version_text(self) -> str:
        """The version as ``0.1.0``."""
        return ".".join(map(str, self.version))


def child_environment() -> dict[str, str]:
    """QGIS's environment without the variables that belong to QGIS's own Python and GDAL."""
    environment = {
        key: value for key, value in os.environ.items() if key not in QGIS_ONLY_VARIABLES
    }
    environment["PYTHONIOENCODING"] = "utf-8"
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def find_executable(configured: str | None) -> str:
    """The rrsis executable to use: the configured one, else ``rrsis`` on PATH.

    Args:
        configured: The plugin setting (a path to ``rrsis`` or to a Python interpreter with
            rrsis_geo installed), or empty to look on PATH.

    Returns:
        The path of the executable.

    Raises:
        RrsisError: When the configured file does not exist or none is on PATH.
    """
    if configured and configured.strip():
        path = Path(configured.strip()).expanduser()
        if not path.is_file():
            raise RrsisError(
                f"the configured rrsis executable does not exist: {path}. Point {SETTINGS_HINT} "
                "at the rrsis of a Python environment where rrsis-geo is installed, or clear "
                "it to use the rrsis on PATH."
            )
        if not os.access(path, os.X_OK):
            raise RrsisError(f"the configured rrsis executable is not executable: {path}")
        return str(path)
    found = shutil.which("rrsis")
    if found is None:
        raise RrsisError(
            "no rrsis executable found: it is not on PATH and none is configured. Install "
            "rrsis-geo in a Python environment from its source folder or wheel (python3 -m "
            "venv ENV && ENV/bin/pip install PATH/TO/rrsis_geo) and set "
            f"{SETTINGS_HINT} to ENV/bin/rrsis."
        )
    return found


_version_cache: dict[tuple[str, float], tuple[int, ...]] = {}


def check_executable(path: str, timeout: float = 120.0) -> Executable:
    """Ask ``path`` for its version and refuse one that is not rrsis or too old.

    Args:
        path: From :func:`find_executable`.
        timeout: Seconds to wait for ``--version``.

    Returns:
        The command prefix and version.

    Raises:
        RrsisError: When it does not run, is not rrsis, or is older than
            :data:`MINIMUM_VERSION`.
    """
    command = (path, "-m", "rrsis_geo") if _is_python(path) else (path,)
    key = (path, os.stat(path).st_mtime)
    if key not in _version_cache:
        try:
            answer = _ask([*command, "--version"], timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RrsisError(f"could not run {path} --version: {error}") from None
        match = re.match(r"rrsis (\d+)\.(\d+)\.(\d+)", answer.stdout.strip())
        if answer.returncode != 0 or match is None:
            said = (answer.stderr.strip() or answer.stdout.strip()).splitlines()[-1:] or [""]
            raise RrsisError(
                f"{path} is not a working rrsis (or one too old to report its version): "
                f"'--version' exited with {answer.returncode}: {said[0]}"
            )
        _version_cache[key] = tuple(int(part) for part in match.groups())
    version = _version_cache[key]
    if version < MINIMUM_VERSION:
        needed = ".".join(map(str, MINIMUM_VERSION))
        raise RrsisError(
            f"rrsis {'.'.join(map(str, version))} at {path} is too old: this plugin needs "
            f"rrsis {needed} or later (pip install -U PATH/TO/rrsis_geo, a newer source folder "
            "or wheel, in that environment)"
        )
    return Executable(command, version)


def _ask(arguments: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a short rrsis query (``--version``, ``formats``) as the plugin runs rrsis."""
    return subprocess.run(
        arguments,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_environment(),
        **_hidden_window(),
    )


def output_formats(executable: Executable, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The output formats ``rrsis formats --json`` lists (one registry in the library).

    Args:
        executable: From :func:`check_executable`.
        timeout: Seconds to wait for the answer.

    Returns:
        One ``{"suffix", "kind", "driver", "description"}`` per format (``kind`` is
        ``"raster"`` or ``"vector"``; ``suffix`` has its dot, e.g. ``".gpkg"``).

    Raises:
        RrsisError: When the command does not run, fails, or prints no such list.
    """
    try:
        answer = _ask([*executable.command, "formats", "--json"], timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RrsisError(f"could not run {executable.command[0]} formats: {error}") from None
    if answer.returncode != 0:
        raise RrsisError(f"'rrsis formats --json' exited with {answer.returncode}")
    try:
        formats = json.loads(answer.stdout)
    except json.JSONDecodeError:
        raise RrsisError("'rrsis formats --json' printed no JSON") from None
    if not isinstance(formats, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("suffix"), str) for entry in formats
    ):
        raise RrsisError("'rrsis formats --json' printed no list of formats")
    return formats


def _hidden_window() -> dict[str, Any]:
    # On Windows a console window would flash up for every run.
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NO_WINDOW}
    return {}


@dataclass
class RunResult:
    """What a finished rrsis run left.

    Attributes:
        summary: The JSON summary rrsis printed (``outputs``, ``polygons``, ``timings`` ...).
        messages: Its stderr lines other than progress.
    """

    summary: dict[str, Any]
    messages: list[str] = field(default_factory=list)


def _read_lines(stream: Any, sink: queue.Queue, tag: str) -> None:
    for line in iter(stream.readline, ""):
        sink.put((tag, line.rstrip("\r\n")))
    sink.put((tag, None))


def _error_message(messages: list[str], returncode: int) -> str:
    # rrsis reports a failure as one line "rrsis: error: ..."; show that line, not the log.
    for line in reversed(messages):
        if line.startswith("rrsis: error: "):
            return line.removeprefix("rrsis: error: ")
    tail = [line for line in messages if line.strip()][-3:]
    detail = " | ".join(tail) if tail else "no message"
    return f"rrsis failed with exit code {returncode}: {detail}"


def run_rrsis(
    executable: Executable,
    arguments: list[str],
    on_progress: Callable[[int, int], None],
    on_message: Callable[[str], None],
    is_canceled: Callable[[], bool],
    on_start: Callable[[int, list[str]], None] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run ``rrsis ARGUMENTS`` to completion, or stop it when ``is_canceled()`` turns true.

    rrsis writes its outputs to hidden temporary files and renames them only at the end; on
    SIGTERM it removes them, so a canceled run leaves no output behind.

    Args:
        executable: From :func:`check_executable`.
        arguments: Everything after the executable, e.g. ``["segment", ...]``.
        on_progress: Called with (done, total) tiles for each JSON progress line of one run
            (``rrsis segment``'s; ``rrsis batch``'s carry their row and go to ``on_event``).
        on_message: Called with each other stderr line (warnings, errors).
        is_canceled: Polled about ten times a second.
        on_start: Called with the process id and the full command once it started.
        on_event: Called with each other JSON event line of stderr, as a dict (``rrsis
            batch``'s tile progress of a row, and ``{"event": "row", ...}`` as each finishes).

    Returns:
        The JSON summary and the stderr messages.

    Raises:
        RrsisCanceled: After a cancel, once the process has exited.
        RrsisError: When rrsis exits with an error (its one-line message).
        Both carry what rrsis printed on stdout, if it was JSON, as ``summary``.
    """
    command = [*executable.command, *arguments]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=child_environment(),
            # Its own process group: Cancel stops rrsis and anything it started, and a
            # Ctrl-C meant for QGIS does not reach it.
            start_new_session=sys.platform != "win32",
            **_hidden_window(),
        )
    except OSError as error:
        raise RrsisError(f"could not start {command[0]}: {error}") from None
    if on_start is not None:
        on_start(process.pid, command)
    lines: queue.Queue = queue.Queue()
    readers = [
        threading.Thread(target=_read_lines, args=(process.stdout, lines, "out"), daemon=True),
        threading.Thread(target=_read_lines, args=(process.stderr, lines, "err"), daemon=True),
    ]
    for reader in readers:
        reader.start()
    stdout: list[str] = []
    messages: list[str] = []
    open_streams = 2
    canceled_at: float | None = None
    while open_streams:
        if canceled_at is None and is_canceled():
            canceled_at = time.monotonic()
            _terminate(process, signal.SIGTERM)
        elif canceled_at is not None and time.monotonic() - canceled_at > TERMINATE_GRACE_SECONDS:
            _terminate(process, getattr(signal, "SIGKILL", signal.SIGTERM))
        try:
            tag, line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif tag == "out":
            stdout.append(line)
        elif line.startswith('{"event"'):
            event = json.loads(line)
            if event.get("event") == "progress" and "row" not in event:
                on_progress(int(event["done"]), int(event["total"]))
            elif on_event is not None:
                on_event(event)
        else:
            messages.append(line)
            on_message(line)
    returncode = process.wait()
    for reader in readers:
        reader.join()
    process.stdout.close()
    process.stderr.close()
    summary = _json_summary(stdout)
    # A run that finished as Cancel was pressed has complete outputs: keep them.
    if canceled_at is not None and returncode != 0:
        raise RrsisCanceled("canceled: rrsis was stopped and wrote no output", summary)
    if returncode != 0:
        raise RrsisError(_error_message(messages, returncode), summary)
    if summary is None:
        raise RrsisError(f"rrsis printed no JSON summary: {' '.join(stdout)[:200]}")
    return RunResult(summary, messages)


def _json_summary(stdout: list[str]) -> dict[str, Any] | None:
    try:
        summary = json.loads("\n".join(stdout))
    except json.JSONDecodeError:
        return None
    return summary if isinstance(summary, dict) else None


def _terminate(process: subprocess.Popen, signal_number: int) -> None:
    if process.poll() is not None:
        return
    if sys.platform == "win32":
        process.terminate()
        return
    # SIGTERM lets rrsis remove its temporary outputs (it unwinds like Ctrl-C); SIGKILL is the
    # last resort for a process that did not stop within the grace period.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal_number)
