"""The real ``rrsis`` command line, run as a subprocess the way users and scripts run it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio

from tests.cli_run import rrsis
from tests.rasters import textured, write_raster

BRIGHTNESS = "python:rrsis_geo.inference.reference_models:brightness"
SLOW_MODEL = Path(__file__).with_name("slow_model.py")


@pytest.fixture
def scene(tmp_path):
    return write_raster(tmp_path / "scene.tif", textured(3, 200, 180))


def test_segment_writes_outputs_and_json_summary(scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    run = rrsis(
        "segment",
        scene,
        "the bright fields",
        "-o",
        out / "p.tif",
        "-o",
        out / "p.gpkg",
        "--model",
        BRIGHTNESS,
        "--json",
        "--tile-size",
        "64",
        "--overlap",
        "16",
        "--margin",
        "4",
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["expression"] == "the bright fields"
    assert summary["tiles"]["predicted"] == summary["tiles"]["total"] == 16
    assert sorted(p.name for p in out.iterdir()) == ["p.gpkg", "p.gpkg.json", "p.tif", "p.tif.json"]
    sidecar = json.loads((out / "p.tif.json").read_text())
    assert "segment" in sidecar["command"] and sidecar["outputs"] == summary["outputs"]


def test_outputs_default_to_the_input_folder(scene):
    run = rrsis("segment", scene, "The largest tank!", "--model", BRIGHTNESS, "--quiet")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == ""
    assert (scene.parent / "scene.the_largest_tank.tif").exists()
    assert (scene.parent / "scene.the_largest_tank.gpkg").exists()


def test_json_progress_lines_go_to_stderr(scene, tmp_path):
    run = rrsis(
        "segment",
        scene,
        "x",
        "-o",
        tmp_path / "p.tif",
        "--model",
        BRIGHTNESS,
        "--progress",
        "json",
        "--tile-size",
        "64",
        "--overlap",
        "0",
        "--margin",
        "0",
        "--batch-size",
        "4",
    )
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert events[-1] == {"event": "progress", "done": 12, "total": 12}
    assert [e["done"] for e in events] == sorted(e["done"] for e in events)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.tif", "x"], "input not found"),
        (["notraster.tif", "x"], "not a raster that GDAL can read"),
        (["scene.tif", "x", "--bands", "1,2,5"], "band 5 does not exist: "),
        (["scene.tif", "x", "--bands", "red"], "--bands must be comma-separated"),
        (["scene.tif", "   "], "the expression is empty"),
        (["scene.tif", "x", "-o", "nofolder/p.tif"], "output folder does not exist"),
        (["scene.tif", "x", "-o", "afile/p.tif"], "output folder is not a folder"),
        (["scene.tif", "x", "-o", "/proc/p.tif"], "not writable"),
        (["scene.tif", "x", "-o", "p.xyz"], "unsupported output format"),
        (["scene.tif", "x", "--overlap", "600"], "overlap must be in"),
        (["scene.tif", "x", "--model", "python:no_such_module:f"], "cannot import no_such_module"),
        (["scene.tif", "x", "--model", "resnet"], "model not found: resnet"),
        (["scene.tif", "x", "--model", "crobim-lite"], "architecture without released weights"),
    ],
)
def test_bad_input_gives_one_line_and_no_output(scene, args, message):
    folder = scene.parent
    (folder / "notraster.tif").write_text("hello")
    (folder / "afile").write_text("a file, not a folder")
    if "--model" not in args:
        args = [*args, "--model", BRIGHTNESS]
    before = sorted(p.name for p in folder.iterdir())
    run = rrsis("segment", *args, cwd=folder)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if not line.startswith("rrsis: warning")]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("rrsis: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_missing_model_is_explained(scene, tmp_path):
    env = {**os.environ, "RRSIS_MODEL": str(tmp_path / "no-such-model")}
    run = subprocess.run(
        [sys.executable, "-m", "rrsis_geo", "segment", str(scene), "x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("rrsis: error: model not found")
    assert run.stderr.count("\n") == 1


def test_existing_output_is_kept_unless_overwrite(scene, tmp_path):
    out = tmp_path / "p.tif"
    out.write_bytes(b"precious")
    run = rrsis("segment", scene, "x", "-o", out, "--model", BRIGHTNESS)
    assert run.returncode == 1 and "output exists" in run.stderr
    assert out.read_bytes() == b"precious"
    run = rrsis("segment", scene, "x", "-o", out, "--model", BRIGHTNESS, "--overwrite")
    assert run.returncode == 0, run.stderr
    with rasterio.open(out) as dst:
        assert dst.width == 180


def test_usage_errors_exit_with_2(scene):
    run = rrsis("segment", scene, "x", "--tile-size", "many")
    assert run.returncode == 2


def test_sigterm_stops_the_run_and_leaves_no_output(scene, tmp_path):
    big = write_raster(tmp_path / "big.tif", textured(3, 640, 640))
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rrsis_geo",
            "segment",
            str(big),
            "x",
            "-o",
            str(out / "p.tif"),
            "-o",
            str(out / "p.gpkg"),
            "--model",
            f"python:{SLOW_MODEL}:factory",
            "--tile-size",
            "64",
            "--progress",
            "json",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # wait until tiles are being predicted
        if line.startswith('{"event": "progress"') and '"done": 0' not in line:
            break
    process.send_signal(signal.SIGTERM)
    start = time.monotonic()
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130, rest
    assert time.monotonic() - start < 30
    assert list(out.iterdir()) == []
