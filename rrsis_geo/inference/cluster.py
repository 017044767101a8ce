"""A batch on a Dask cluster: the rows of :func:`~rrsis_geo.inference.batch.run_batch` as tasks.

Dask distributed does the scheduling (see docs/scale-out.md for why Dask rather than Ray):
each row is one task running :func:`~rrsis_geo.inference.batch.run_row` on a worker process,
which keeps its models loaded across rows (one :class:`~rrsis_geo.inference.batch.ModelCache`
per worker process). A row whose worker dies is given by the scheduler to another worker (up
to its ``allowed-failures``, 3 by default); a row that ran to its end, done or failed, is
never run again, since its outcome is fetched as soon as it is known. Rows are the unit: the
tiles of one row run on one worker, as in ``rrsis segment``.

Every worker must see the client's files under the same paths (shared storage, or GDAL
``/vsis3/``-style paths): a row runs in the client's working folder, so relative paths and
the sidecars' records are the same as with the in-process batch.

``distributed`` is an optional dependency (``pip install 'rrsis-geo[cluster]'``), imported
only here and only when a batch runs on it.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from rrsis_geo.errors import InputError
from rrsis_geo.geo.writers import remove_temporary_siblings
from rrsis_geo.inference.batch import (
    FAILED,
    BatchReport,
    BatchRow,
    ModelCache,
    RowOutcome,
    failure_reason,
    run_row,
)
from rrsis_geo.inference.model import PYTHON_PREFIX

__all__ = ["local_worker_environments", "run_batch_on_cluster", "run_row_on_worker"]

EXTRA_HINT = "pip install 'rrsis-geo[cluster]'"

# One per worker process: its models stay loaded from one row to the next.
_WORKER_MODELS: ModelCache | None = None
# A row changes the working folder, which is the process's: rows of one worker process run one
# at a time even when the worker has several threads (its model's own threads do the work).
_ROW_LOCK = threading.Lock()


TILE_EVENT_SECONDS = 0.5
"""A worker sends the tile progress of its row at most this often (and always its last)."""


def run_row_on_worker(
    row: BatchRow,
    command: Sequence[str] | None,
    folder: str,
    topic: str | None = None,
    position: int = 0,
) -> RowOutcome:
    """Run one row on a worker as :func:`run_row` does, in the client's working ``folder``.

    With a ``topic``, the row's tile progress goes to the client as Dask events of that topic
    (``{"row": position, "done": ..., "total": ...}``, see :class:`_TileEvents`).
    """
    global _WORKER_MODELS
    with _ROW_LOCK:
        if _WORKER_MODELS is None:
            _WORKER_MODELS = ModelCache()
        if not Path(folder).is_dir():
            outputs = [str(path) for path in row.request.output_paths()]
            reason = f"the working folder {folder} is not on worker {socket.gethostname()}"
            return RowOutcome(row, FAILED, outputs, 0.0, 0, reason)
        progress = None if topic is None else _TileEvents(topic, position)
        with _working_folder(folder):
            return run_row(row, _WORKER_MODELS, command, progress)


class _TileEvents:
    """A row's tile progress, sent from its worker to the client as Dask events.

    Events go through the scheduler, so they are throttled (:data:`TILE_EVENT_SECONDS`): a
    scene of thousands of tiles sends a few per second, and always its last one.
    """

    def __init__(self, topic: str, position: int) -> None:
        from distributed import get_worker

        self.worker, self.topic, self.position = get_worker(), topic, position
        self._sent = -math.inf

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._sent < TILE_EVENT_SECONDS:
            return
        self._sent = now
        self.worker.log_event(self.topic, {"row": self.position, "done": done, "total": total})


@contextmanager
def _working_folder(folder: str) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def local_worker_environments(workers: int | None, gpus: int, cpus: int) -> list[dict[str, str]]:
    """The environment of each worker process of a cluster started on this machine.

    One worker per GPU by default, each seeing only its own (``CUDA_VISIBLE_DEVICES``), so a
    row's ``auto`` or ``cuda`` device is that worker's GPU; without GPUs, two workers. The
    CPUs are shared out (``OMP_NUM_THREADS``) so that workers do not oversubscribe them.

    Args:
        workers: How many workers; None for the default.
        gpus: GPUs on this machine.
        cpus: CPUs on this machine.
    """
    count = workers if workers is not None else (gpus or 2)
    threads = str(max(1, cpus // count))
    environments = []
    for index in range(count):
        environment = {"OMP_NUM_THREADS": threads}
        if gpus:
            environment["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        environments.append(environment)
    return environments


def run_batch_on_cluster(
    rows: Sequence[BatchRow],
    address: str | None = None,
    workers: int | None = None,
    fail_fast: bool = False,
    on_row: Callable[[int, RowOutcome], None] | None = None,
    command: Sequence[str] | None = None,
    report: BatchReport | None = None,
    on_tiles: Callable[[int, int, int], None] | None = None,
) -> BatchReport:
    """Run every row as a task of a Dask cluster; the report is in manifest order.

    Args:
        rows: The requests.
        address: The scheduler (``tcp://HOST:PORT``, ``HOST:PORT`` or a scheduler file
            ``*.json``); None starts a cluster on this machine with ``workers`` processes
            (see :func:`local_worker_environments`), closed at the end (and the temporary
            files of the rows it did not finish removed).
        workers: Worker processes of a local cluster; only without ``address``.
        fail_fast: Cancel the rows not yet finished after the first failed row.
        on_row: Called as each row finishes, with its 1-based position and its outcome.
        command: The command line recorded in the sidecars.
        report: Filled as rows finish (see :func:`~rrsis_geo.inference.batch.run_batch`).
        on_tiles: Called with (row position, tiles done, tiles total) as the workers report
            the tiles of their rows (Dask events, in the client's event thread). Rows run
            side by side, so calls of several rows interleave; a row retried after its worker
            died starts again from 0.

    Raises:
        InputError: ``distributed`` is not installed, or the scheduler cannot be reached.
    """
    try:
        from distributed import as_completed
    except ImportError:
        raise InputError(f"--engine dask needs Dask distributed: {EXTRA_HINT}") from None
    report = report if report is not None else BatchReport()
    report.total = len(rows)
    folder = os.getcwd()
    finished: dict[int, RowOutcome] = {}
    try:
        with _client(address, workers) as client:
            topic = None if on_tiles is None else _subscribe_tiles(client, on_tiles)
            futures = {
                client.submit(
                    run_row_on_worker, _for_workers(row), command, folder, topic, i + 1,
                    pure=False,
                ): i
                for i, row in enumerate(rows)
            }  # fmt: skip
            try:
                for future in as_completed(futures):
                    position = futures[future]
                    outcome = finished[position] = _outcome(future, rows[position])
                    _remove_leftovers(rows[position])  # of an attempt whose worker died
                    report.outcomes = [finished[i] for i in sorted(finished)]
                    if on_row is not None:
                        on_row(position + 1, outcome)
                    if fail_fast and outcome.status == FAILED:
                        break
            finally:
                client.cancel([future for future in futures if not future.done()])
    finally:
        if address is None:  # the local workers are gone: nothing writes the rest's files
            for position, row in enumerate(rows):
                if position not in finished:
                    _remove_leftovers(row)
    return report


def _subscribe_tiles(client: Any, on_tiles: Callable[[int, int, int], None]) -> str:
    """A topic of this batch's own (a cluster may serve other clients) passed to ``on_tiles``."""
    topic = f"rrsis-tiles-{uuid.uuid4().hex}"

    def handler(event: tuple[float, dict[str, int]]) -> None:
        tiles = event[1]
        on_tiles(tiles["row"], tiles["done"], tiles["total"])

    client.subscribe_topic(topic, handler)
    return topic


def _remove_leftovers(row: BatchRow) -> None:
    for path in row.request.output_paths():
        remove_temporary_siblings(Path(path))


def _outcome(future: Any, row: BatchRow) -> RowOutcome:
    from distributed import KilledWorker

    try:
        outcome: RowOutcome = future.result()
    except Exception as error:  # the task itself never raises: its workers died
        outputs = [str(path) for path in row.request.output_paths()]
        died = isinstance(error, KilledWorker)
        reason = "its workers died running it" if died else failure_reason(error)
        return RowOutcome(row, FAILED, outputs, 0.0, 0, reason)
    return replace(outcome, row=row)


def _for_workers(row: BatchRow) -> BatchRow:
    """``row`` with a model given as a local path made absolute (workers cache by spec)."""
    spec = row.request.model
    prefix = PYTHON_PREFIX if spec.startswith(PYTHON_PREFIX) else ""
    target = spec[len(prefix) :]
    location, colon, factory = target.rpartition(":") if prefix else (target, "", "")
    if location.endswith(".py") or (not prefix and Path(location).exists()):
        spec = prefix + str(Path(location).resolve()) + colon + factory
    return replace(row, request=replace(row.request, model=spec))


@contextmanager
def _client(address: str | None, workers: int | None) -> Iterator[Any]:
    from distributed import Client

    if address is None:
        with _local_cluster(workers) as cluster, Client(cluster) as client:
            yield client
        return
    if address.endswith(".json"):
        connect: dict[str, Any] = {"scheduler_file": address}
    else:
        connect = {"address": address if "://" in address else f"tcp://{address}"}
    try:
        client = Client(**connect, timeout="10s")
    except OSError as error:
        raise InputError(f"no Dask scheduler at {address}: {error}") from None
    with client:
        yield client


@contextmanager
def _local_cluster(workers: int | None) -> Iterator[Any]:
    import logging

    from distributed import Nanny, Scheduler, SpecCluster

    environments = local_worker_environments(workers, _gpu_count(), os.cpu_count() or 1)
    specs = {
        f"rrsis-{index}": {"cls": Nanny, "options": {"nthreads": 1, "env": environment}}
        for index, environment in enumerate(environments)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    with SpecCluster(specs, scheduler, silence_logs=logging.ERROR) as cluster:
        yield cluster


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
