"""``rrsis segment --resume`` through the real CLI: killed runs resume to the same pixels."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import geopandas
import numpy as np
import pytest
import rasterio

from tests.cli_run import rrsis
from tests.rasters import textured, write_raster

BRIGHTNESS = "python:rrsis_geo.inference.reference_models:brightness"
SLEEPY = "python:tests.inference.sleepy_model:factory"
SENTENCE = "the bright fields"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 1500 x 1500 px scene (16 tile rows, 6 blocks of rows) and its uninterrupted map."""
    folder = tmp_path_factory.mktemp("resume")
    path = folder / "scene.tif"
    write_raster(path, textured(3, 1500, 1500, seed=3))
    reference = folder / "reference.tif"
    done = rrsis("segment", path, SENTENCE, "-o", reference, "-m", BRIGHTNESS, "--tile-size", 128)
    assert done.returncode == 0, done.stderr
    return path, _pixels(reference)


def _pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


def _start(*args: object, sleep: float = 0.05) -> subprocess.Popen[str]:
    """``python -m rrsis_geo ARGS`` with JSON progress on stderr, the test models importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("RRSIS_MODEL", "RRSIS_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", RRSIS_TEST_SLEEP=str(sleep), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "rrsis_geo", *map(str, args), "--progress", "json"]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _run_until(process: subprocess.Popen[str], output: Path, fraction: float | None) -> int:
    """Read progress until ``fraction`` of the tiles are done, then kill -9 (None: to the end).

    Asserts after every progress line, and right after the kill, that the output does not
    exist. Returns the tiles done at the first progress event (more than one batch: the run
    resumed).
    """
    assert process.stderr is not None
    first_done = None
    for line in process.stderr:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        first_done = event["done"] if first_done is None else first_done
        if fraction is None:
            continue
        assert not output.exists(), "the final name exists before the run completed"
        if event["done"] >= fraction * event["total"]:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=300)
    if fraction is not None:
        assert process.returncode == -signal.SIGKILL
        assert not output.exists(), "the final name exists after a kill"
    return first_done or 0


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_pixels(scene, tmp_path):
    path, reference = scene
    output = tmp_path / "out.tif"
    command = ("segment", path, SENTENCE, "-o", output, "-m", SLEEPY, "--tile-size", 128)
    draw = random.Random(16)
    fractions = [draw.uniform(0.15, 0.4), draw.uniform(0.4, 0.65), draw.uniform(0.65, 0.95)]
    resumed_from = []
    for fraction in fractions:  # each run resumes the previous one's state, then is killed
        resumed_from.append(_run_until(_start(*command, "--resume"), output, fraction))
        assert (tmp_path / ".out.resume.tmp.json").exists() or fraction < 0.3
    finished = _start(*command, "--resume")
    resumed_from.append(_run_until(finished, output, None))
    assert finished.returncode == 0
    batch = 8  # the first progress event comes after one batch; more: the run resumed
    assert resumed_from[0] == batch and min(resumed_from[1:]) > batch, resumed_from
    np.testing.assert_array_equal(_pixels(output), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "out.tif.json"]


def test_a_changed_sentence_model_or_pixel_option_refuses_to_resume(scene, tmp_path):
    path, reference = scene
    output = tmp_path / "out.tif"
    command = ("segment", path, SENTENCE, "-o", output, "--tile-size", 128)
    process = _start(*command, "-m", SLEEPY, "--resume")
    _run_until_rows_saved(process, tmp_path / ".out.resume.tmp.json")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run it again with --resume" in stderr
    assert not output.exists()
    state = sorted(p.name for p in tmp_path.iterdir())
    assert ".out.resume.tmp.json" in state and ".out.resume-probability.tmp.tif" in state

    changes = {
        "the sentence differs": ("segment", path, "the dark roads", "-o", output),
        "the model differs": ("segment", path, SENTENCE, "-o", output, "-m", BRIGHTNESS.replace("brightness", "constant")),  # noqa: E501
        "the threshold differs": (*command, "--threshold", 0.3),
        "the tile grid differs": ("segment", path, SENTENCE, "-o", output, "--tile-size", 256),
    }  # fmt: skip
    for what, changed in changes.items():
        if "-m" not in changed:
            changed = (*changed, "-m", BRIGHTNESS)
        if "--tile-size" not in changed:
            changed = (*changed, "--tile-size", 128)
        refused = rrsis(*changed, "--resume", "-q")
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rrsis: error: "), refused.stderr
        assert "cannot resume: " in lines[0] and what in lines[0], lines[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == state  # the state is untouched

    resumed = rrsis(*command, "-m", BRIGHTNESS, "--resume", "-q")  # same pixels as SLEEPY
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(_pixels(output), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "out.tif.json"]


def _run_until_rows_saved(process: subprocess.Popen[str], progress: Path) -> None:
    """Read progress lines until the progress file records some finished rows."""
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("{") and progress.exists():
            if json.loads(progress.read_text())["rows"] > 0:
                return
    raise AssertionError("the run ended before any rows were saved")


def test_without_resume_an_interrupted_run_keeps_nothing(scene, tmp_path):
    path, _ = scene
    output = tmp_path / "out.tif"
    process = _start("segment", path, SENTENCE, "-o", output, "-m", SLEEPY, "--tile-size", 128)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("{") and json.loads(line)["done"] >= 100:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert list(tmp_path.iterdir()) == []


def test_a_batch_row_resumes_a_killed_segment_run(scene, tmp_path):
    path, reference = scene
    output = tmp_path / "out.tif"
    command = ("segment", path, SENTENCE, "-o", output, "-m", SLEEPY, "--tile-size", 128)
    _run_until(_start(*command, "--resume"), output, 0.6)
    manifest = tmp_path / "rows.csv"
    manifest.write_text(f"scene,sentence,output,resume\n{path},{SENTENCE},{output},true\n")
    done = rrsis("batch", manifest, "--model", BRIGHTNESS, "--set", "tile_size=128", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["done"] == 1, report
    np.testing.assert_array_equal(_pixels(output), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "out.tif.json", "rows.csv"]


def _squares_scene(path: Path) -> Path:
    """Grey ground with three bright and three dark squares: fields a relation can relate."""
    pixels = np.random.default_rng(5).normal(128, 6, (3, 1500, 1500)).clip(0, 255)
    for value, corners in ((240, [(100, 200), (700, 1200), (1250, 300)]),
                           (15, [(200, 700), (900, 600), (1200, 1250)])):  # fmt: skip
        for y, x in corners:
            pixels[:, y : y + 160, x : x + 160] = value
    return write_raster(path, pixels.astype(np.uint8))


def test_a_relation_resumes_both_of_its_passes_to_the_uninterrupted_answer(tmp_path):
    """The description and the anchor run in one loop; killed midway, both resume."""
    scene = _squares_scene(tmp_path / "squares.tif")
    sentence = "the bright field closest to the dark field"
    model = "python:tests.inference.sleepy_model:contrast"
    reference = tmp_path / "reference"
    reference.mkdir()
    common = ("segment", scene, sentence, "-m", model, "--tile-size", 128)
    done = _start(*common, "-o", reference / "out.tif", "-o", reference / "out.gpkg", sleep=0)
    per_call = 4  # tiles per model call with two sentences: the first progress event
    assert _run_until(done, reference / "out.tif", None) == per_call and done.returncode == 0

    out = tmp_path / "out"
    out.mkdir()
    outputs = ("-o", out / "out.tif", "-o", out / "out.gpkg")
    _run_until(_start(*common, *outputs, "--resume"), out / "out.tif", 0.5)
    state = sorted(p.name for p in out.iterdir())
    assert ".out.resume-probability.tmp.tif" in state and ".out.resume1-binary.tmp.tif" in state
    saved = json.loads((out / ".out.resume.tmp.json").read_text())
    assert saved["rows"] > 0 and len(saved["presence"]) == 2
    assert "'The bright field.' (every instance) and 'The dark field.'" in saved["key"]["pass"]
    finished = _start(*common, *outputs, "--resume", "--json")
    assert _run_until(finished, out / "out.tif", None) > per_call and finished.returncode == 0
    np.testing.assert_array_equal(_pixels(out / "out.tif"), _pixels(reference / "out.tif"))
    got = geopandas.read_file(out / "out.gpkg").geometry.union_all()
    want = geopandas.read_file(reference / "out.gpkg").geometry.union_all()
    assert not want.is_empty and got.symmetric_difference(want).area == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["out.tif", "out.tif.json", "out.gpkg", "out.gpkg.json"]
    )
