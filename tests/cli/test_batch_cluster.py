"""``rrsis batch --engine dask`` on real Dask clusters of this machine (2 CPU workers)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import geopandas
import pytest

from rrsis_geo.inference.cluster import local_worker_environments
from tests.cli_run import rrsis
from tests.rasters import textured, write_raster

SLEEPY = Path(__file__).parents[1] / "inference" / "sleepy_model.py"
MODEL = f"python:{SLEEPY}:factory"
ROWS = 8


def _scenes(folder: Path) -> Path:
    folder.mkdir()
    for index in range(ROWS):
        write_raster(folder / f"s{index}.tif", textured(3, 150, 130, seed=index))
    return folder


def _batch(scenes: Path, out: Path, *more: object, cwd: Path) -> subprocess.CompletedProcess:
    return rrsis(
        "batch", scenes, "-e", "the bright field", "-o", out, "--model", MODEL,
        "--set", "tile_size=64", "--set", "batch_size=1", "--json", "--progress", "none",
        *more, cwd=cwd,
    )  # fmt: skip


def _dask(*args: str, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]]
    return subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-thread workers (each under a nanny that restarts it)."""
    log = tmp_path / "forwards.log"
    env = {**os.environ, "RRSIS_TEST_SLEEP": "0.25", "RRSIS_TEST_FORWARD_LOG": str(log)}
    scheduler_file = tmp_path / "scheduler.json"
    started = [_dask("scheduler", "--scheduler-file", str(scheduler_file), "--port", "0",
                     "--no-dashboard", env=env)]  # fmt: skip
    worker = ("worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
              "--no-dashboard")  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        started += [_dask(*worker, env=env), _dask(*worker, env=env)]
        from distributed import Client

        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        yield scheduler_file, log
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _reference(scenes: Path, tmp_path: Path) -> Path:
    """The same rows in one process, without the engine."""
    out = tmp_path / "reference"
    done = _batch(scenes, out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return out


def _same_polygons(out: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.glob("*.gpkg"))
    assert sorted(p.name for p in out.glob("*.gpkg")) == names and len(names) == ROWS
    for name in names:
        got, want = geopandas.read_file(out / name), geopandas.read_file(reference / name)
        assert len(got) == len(want) > 0
        assert got.geometry.union_all().symmetric_difference(want.geometry.union_all()).area == 0


def test_a_row_whose_worker_is_killed_is_retried_and_no_row_runs_twice(cluster, tmp_path):
    scheduler_file, log = cluster
    scenes = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rrsis_geo", "batch", str(scenes), "-e", "the bright field",
               "-o", str(out), "--model", MODEL, "--set", "tile_size=64", "--set", "batch_size=1",
               "--json", "--progress", "none", "--engine", "dask",
               "--address", str(scheduler_file)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    batch = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = int(log.read_text().split()[0])  # a worker in the middle of its first row
    os.kill(victim, signal.SIGKILL)
    stdout, _ = batch.communicate(timeout=300)
    assert batch.returncode == 0
    report = json.loads(stdout)
    assert report["counts"] == {"done": ROWS, "skipped": 0, "failed": 0}
    assert sorted(row["line"] for row in report["rows"]) == list(range(1, ROWS + 1))
    # Every tile the surviving workers predicted belongs to exactly one reported row: none ran
    # twice, and the killed worker's unfinished row was run again from its start elsewhere.
    forwards = Counter()
    for pid, tiles in (line.split() for line in log.read_text().splitlines()):
        forwards[int(pid)] += int(tiles)
    assert forwards[victim] > 0
    survivors = sum(n for pid, n in forwards.items() if pid != victim)
    assert survivors == sum(row["tiles_predicted"] for row in report["rows"])
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # its temporaries too
    _same_polygons(out, _reference(scenes, tmp_path))


def test_a_local_cluster_runs_the_rows_and_a_rerun_skips_them(tmp_path):
    scenes = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    first = _batch(
        scenes, out, "--engine", "dask", "--workers", "2", "--progress", "json", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"] == {"done": ROWS, "skipped": 0, "failed": 0}
    # The workers report the tiles of their rows: every row's progress reaches the client,
    # under the row's own position, before the row's own line.
    events = [json.loads(line) for line in first.stderr.splitlines() if line.startswith("{")]
    finished = [e["row"] for e in events if e["event"] == "row"]
    assert sorted(finished) == list(range(1, ROWS + 1))
    for row in finished:
        tiles = [e for e in events if e["event"] == "progress" and e["row"] == row]
        assert tiles and all(e["rows"] == ROWS and 0 <= e["done"] <= e["total"] for e in tiles)
        assert tiles[-1]["done"] == tiles[-1]["total"] > 0  # the last report is never throttled
        assert events.index(tiles[-1]) < events.index(_row_event(events, row))
    _same_polygons(out, _reference(scenes, tmp_path))
    again = _batch(scenes, out, "--engine", "dask", "--workers", "2", cwd=tmp_path)
    assert json.loads(again.stdout)["counts"] == {"done": 0, "skipped": ROWS, "failed": 0}


def _row_event(events: list[dict], row: int) -> dict:
    return next(e for e in events if e["event"] == "row" and e["row"] == row)


def test_engine_options_need_the_engine_and_a_reachable_scheduler(tmp_path):
    scenes = _scenes(tmp_path / "scenes")
    alone = _batch(scenes, tmp_path / "out", "--workers", "2", cwd=tmp_path)
    assert alone.returncode == 1
    assert "--address and --workers are for --engine dask" in alone.stderr
    nobody = _batch(scenes, tmp_path / "out", "--engine", "dask", "--address", "127.0.0.1:9",
                    cwd=tmp_path)  # fmt: skip
    assert nobody.returncode == 1
    assert "no Dask scheduler at 127.0.0.1:9" in nobody.stderr
    assert len(nobody.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_local_workers_get_one_gpu_each_and_share_the_cpus():
    assert local_worker_environments(None, 4, 32) == [
        {"OMP_NUM_THREADS": "8", "CUDA_VISIBLE_DEVICES": str(index)} for index in range(4)
    ]
    assert local_worker_environments(None, 0, 2) == [{"OMP_NUM_THREADS": "1"}] * 2
    assert local_worker_environments(3, 2, 12)[2]["CUDA_VISIBLE_DEVICES"] == "0"


def test_sigterm_on_a_local_cluster_keeps_the_finished_rows_and_leaves_no_temporary(tmp_path):
    scenes = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rrsis_geo", "batch", str(scenes), "-e", "the bright field",
               "-o", str(out), "--model", MODEL, "--set", "tile_size=64", "--set", "batch_size=1",
               "--json", "--progress", "none", "--engine", "dask", "--workers", "2"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RRSIS_TEST_SLEEP": "0.25"}
    batch = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in batch.stderr:
        if "[1/8] done" in line:
            break
    batch.send_signal(signal.SIGTERM)
    stdout, _ = batch.communicate(timeout=120)
    assert batch.returncode == 130
    report = json.loads(stdout)
    assert report["interrupted"] and 1 <= report["counts"]["done"] < ROWS
    done = {Path(row["outputs"][0]).name for row in report["rows"] if row["status"] == "done"}
    written = {p.name for p in out.iterdir() if p.suffix == ".gpkg"}
    # A row may still finish as the cluster closes: then its outputs are complete.
    assert done <= written and len(written) < ROWS
    for name in written:
        assert (out / f"{name}.json").exists() and len(geopandas.read_file(out / name)) > 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
