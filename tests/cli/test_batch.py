"""``rrsis batch`` through the real command line, on real GeoTIFFs."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_run import rrsis
from tests.rasters import textured, write_raster

BRIGHTNESS = "python:rrsis_geo.inference.reference_models:brightness"
SLOW_MODEL = Path(__file__).with_name("slow_model.py")


def _scene(folder: Path, name: str, seed: int = 0) -> Path:
    return write_raster(folder / name, textured(3, 150, 130, seed=seed))


def _by_scene(report):
    return {Path(row["scene"]).name: row for row in report["rows"]}


def test_failing_rows_leave_the_others_done_and_a_rerun_finishes_only_what_is_missing(tmp_path):
    a, b = _scene(tmp_path, "a.tif"), _scene(tmp_path, "b.tif", seed=1)
    late = tmp_path / "late.tif"  # missing on the first run
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    out = tmp_path / "out"
    out.mkdir()
    manifest = tmp_path / "rows.csv"
    manifest.write_text(
        "scene,sentence,output,bands,model\n"
        f"{a},the bright field,{out / 'a.gpkg'},,\n"
        f"{late},the bright field,{out / 'late.gpkg'},,\n"
        f'{b},the bright field,{out / "b9.gpkg"},"1,2,9",\n'
        f"{b},the bright field,{out / 'broken.gpkg'},,{broken}\n"
        f"{b},the bright field,{out / 'b.gpkg'},,\n"
    )
    command = ("batch", manifest, "--model", BRIGHTNESS, "--set", "tile_size=64", "--json")

    first = rrsis(*command)
    assert first.returncode == 1, first.stderr
    report = json.loads(first.stdout)
    assert report["counts"] == {"done": 2, "skipped": 0, "failed": 3}
    rows = {Path(row["outputs"][0]).name: row for row in report["rows"]}
    assert rows["a.gpkg"]["status"] == rows["b.gpkg"]["status"] == "done"
    assert rows["a.gpkg"]["tiles_predicted"] > 0
    assert rows["late.gpkg"]["reason"] == f"input not found: {late}"
    assert "band 9" in rows["b9.gpkg"]["reason"]
    assert rows["broken.gpkg"]["status"] == "failed" and rows["broken.gpkg"]["reason"]
    # The summary on stderr names each failure with its reason; failed rows wrote nothing.
    for name in ("late.gpkg", "b9.gpkg", "broken.gpkg"):
        assert rows[name]["reason"] in first.stderr
    assert f'failed {late} "the bright field"' in first.stderr
    assert "2 done, 0 skipped, 3 failed" in first.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "a.gpkg",
        "a.gpkg.json",
        "b.gpkg",
        "b.gpkg.json",
    ]

    _scene(tmp_path, "late.tif", seed=2)
    again = rrsis(*command)
    assert again.returncode == 1, again.stderr  # the bad band and the broken model remain
    report = json.loads(again.stdout)
    assert report["counts"] == {"done": 1, "skipped": 2, "failed": 2}
    rows = {Path(row["outputs"][0]).name: row for row in report["rows"]}
    assert rows["late.gpkg"]["status"] == "done" and rows["late.gpkg"]["tiles_predicted"] > 0
    for name in ("a.gpkg", "b.gpkg"):
        assert rows[name]["status"] == "skipped" and rows[name]["tiles_predicted"] == 0
    done_tiles = sum(row["tiles_predicted"] for row in report["rows"])
    assert done_tiles == rows["late.gpkg"]["tiles_predicted"]


def test_jsonl_manifest_with_per_row_options_and_a_sentences_list(tmp_path):
    scene = _scene(tmp_path, "scene.tif")
    manifest = tmp_path / "rows.jsonl"
    rows = [
        {
            "scene": str(scene),
            "sentence": "the bright field",
            "threshold": 0.3,
            "bands": [3, 2, 1],
            "output": [str(tmp_path / "t.gpkg"), str(tmp_path / "t.tif")],
            "binary": True,
        },
        {"scene": str(scene), "sentences": ["the dark field", "the bright road"]},
        {
            "scene": str(scene),
            "sentences": [
                {"sentence": "the bright lake", "outputs": [str(tmp_path / "lake.gpkg")]},
                {"sentence": "the bright hill", "output": str(tmp_path / "hill.tif")},
                "the dark hill",
            ],
        },
    ]
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    run = rrsis("batch", manifest, "-m", BRIGHTNESS, "--json", "--quiet")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    report = json.loads(run.stdout)
    assert report["counts"] == {"done": 6, "skipped": 0, "failed": 0}
    assert json.loads((tmp_path / "lake.gpkg.json").read_text())["expression"] == "the bright lake"
    assert json.loads((tmp_path / "hill.tif.json").read_text())["expression"] == "the bright hill"
    assert (tmp_path / "scene.the_dark_hill.gpkg").exists()
    sidecar = json.loads((tmp_path / "t.tif.json").read_text())
    assert sidecar["threshold"] == 0.3 and sidecar["options"]["threshold"] == 0.3
    assert sidecar["bands"] == [3, 2, 1] and sidecar["options"]["raster_kind"] == "binary"
    assert (tmp_path / "scene.the_dark_field.gpkg").exists()
    assert (tmp_path / "scene.the_bright_road.gpkg").exists()

    # The same outputs asked with another threshold: an error for that row, not a silent skip.
    rows[0]["threshold"] = 0.6
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    changed = rrsis("batch", manifest, "-m", BRIGHTNESS, "--json")
    assert changed.returncode == 1
    first = json.loads(changed.stdout)["rows"][0]
    assert first["status"] == "failed" and "other options (threshold)" in first["reason"]
    assert json.loads((tmp_path / "t.tif.json").read_text())["threshold"] == 0.3
    replaced = rrsis("batch", manifest, "-m", BRIGHTNESS, "--json", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["counts"] == {"done": 1, "skipped": 5, "failed": 0}
    assert json.loads((tmp_path / "t.tif.json").read_text())["threshold"] == 0.6


def test_glob_of_scenes_with_one_sentence_and_an_output_folder(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for seed, name in enumerate(("north.tif", "south.tif")):
        _scene(scenes, name, seed)
    (scenes / "notes.txt").write_text("not a scene")
    out = tmp_path / "out"
    run = rrsis(
        "batch", f"{scenes}/*.tif", "-e", "the largest storage tank", "-o", out, "-m", BRIGHTNESS
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.glob("*.gpkg")) == [
        "north.the_largest_storage_tank.gpkg",
        "south.the_largest_storage_tank.gpkg",
    ]
    assert "[2/2] done" in run.stderr and "2 done, 0 skipped, 0 failed" in run.stderr
    assert "reading:" not in run.stderr
    again = rrsis(
        "batch", f"{scenes}/*.tif", "-e", "the largest storage tank", "-o", out, "-m", BRIGHTNESS,
        "--explain",
    )  # fmt: skip
    # The sentence is read once for all its rows, before they run (both are skipped here)
    readings = [line for line in again.stderr.splitlines() if "reading:" in line]
    assert readings == [
        'rrsis: reading: target: "storage tank"',
        'rrsis: reading: scene words: "largest"',
        "rrsis: reading: ranked by: area, largest first",
        "rrsis: reading: referent: 1st",
    ]
    assert again.stderr.index("reading:") < again.stderr.index("[1/2] skipped")
    both = tmp_path / "both"
    folder = rrsis(
        "batch", scenes, "-e", "the largest storage tank", "-o", both, "-m", BRIGHTNESS,
        "--suffix", ".gpkg", "--suffix", ".tif", "--json",
    )  # fmt: skip
    assert folder.returncode == 0, folder.stderr
    rows = json.loads(folder.stdout)["rows"]
    assert [Path(row["scene"]).name for row in rows] == ["north.tif", "south.tif"]
    assert [Path(p).name for p in rows[1]["outputs"]] == [
        "south.the_largest_storage_tank.gpkg",
        "south.the_largest_storage_tank.tif",
    ]
    assert all(Path(p).exists() for row in rows for p in row["outputs"])


def test_a_bad_manifest_is_refused_in_one_line_before_any_model_loads(tmp_path):
    scene = _scene(tmp_path, "scene.tif")
    marker = tmp_path / "loaded"
    model = tmp_path / "marking_model.py"
    model.write_text(
        "from pathlib import Path\n"
        "from rrsis_geo.inference.reference_models import brightness\n"
        f"Path({str(marker)!r}).touch()\n"
        "factory = brightness\n"
    )
    manifest = tmp_path / "rows.csv"
    for header, row, message in [
        ("scene,sentence,colour", "the field,red", "unknown column 'colour'"),
        ("scene,sentence,threshold", "the field,abc", "--threshold"),
        ("scene,sentence,json", "the field,true", "unknown column 'json'"),
    ]:
        manifest.write_text(f"{header}\n{scene},{row}\n")
        run = rrsis("batch", manifest, "-m", f"python:{model}:factory")
        assert run.returncode == 1
        assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
        assert f"{manifest} line 2" in run.stderr
        assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "marking_model.py",
        "rows.csv",
        "scene.tif",
    ]


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    scene = _scene(tmp_path, "scene.tif")
    manifest = tmp_path / "rows.csv"
    manifest.write_text(
        f"scene,sentence\n{tmp_path / 'missing.tif'},the field\n{scene},the field\n"
    )
    run = rrsis("batch", manifest, "-m", BRIGHTNESS, "--fail-fast", "--json")
    assert run.returncode == 1
    report = json.loads(run.stdout)
    assert report["counts"] == {"done": 0, "skipped": 0, "failed": 1} and report["total"] == 2
    assert "1 not reached" in run.stderr


@pytest.mark.parametrize("in_flight", [1, 2])
def test_sigterm_abandons_the_current_row_and_prints_the_rows_so_far(tmp_path, in_flight):
    first = _scene(tmp_path, "first.tif")
    big = write_raster(tmp_path / "big.tif", textured(3, 600, 600))
    manifest = tmp_path / "rows.csv"
    manifest.write_text(f"scene,sentence\n{first},the field\n{big},the field\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "rrsis_geo", "batch", str(manifest), "--json",
         "-m", f"python:{SLOW_MODEL}:factory", "--set", "tile_size=32", "--set", "overlap=0",
         "--set", "margin=0", "--rows-in-flight", str(in_flight)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (tmp_path / "first.the_field.gpkg").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the second row is predicting tiles now
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    report = json.loads(stdout)
    assert report["interrupted"] and report["counts"] == {"done": 1, "skipped": 0, "failed": 0}
    assert "1 done, 0 skipped, 0 failed, 1 not reached" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.tif", "first.the_field.gpkg", "first.the_field.gpkg.json", "first.tif", "rows.csv",
    ]  # fmt: skip


def test_a_sentences_object_takes_a_sentence_and_outputs_only(tmp_path):
    from rrsis_geo.errors import InputError
    from rrsis_geo.inference.batch import read_manifest

    manifest = tmp_path / "rows.jsonl"
    for sentences, message in [
        ([{"sentence": "the lake", "threshold": 0.3}], "takes sentence and outputs, not threshold"),
        ([{"outputs": ["a.gpkg"]}], "needs a sentence"),
    ]:
        manifest.write_text(json.dumps({"scene": "s.tif", "sentences": sentences}) + "\n")
        with pytest.raises(InputError, match=f"{manifest} line 1: a sentences object {message}"):
            read_manifest(manifest)
    shared = {"scene": "s.tif", "sentences": ["a", "b"], "output": "x.gpkg"}
    manifest.write_text(json.dumps(shared) + "\n")
    with pytest.raises(InputError, match="give each sentence its own"):
        read_manifest(manifest)


def test_rows_side_by_side_give_what_one_at_a_time_gives(tmp_path):
    """Two rows in flight share the default model: same report, same pixels, same polygons."""
    import geopandas
    import rasterio

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for seed in range(4):
        _scene(scenes, f"s{seed}.tif", seed)
    reports = {}
    for in_flight in (1, 2):
        out = tmp_path / f"out{in_flight}"
        run = rrsis(
            "batch", scenes, "-e", "the largest storage tank", "-o", out, "--suffix", ".tif",
            "--suffix", ".gpkg", "--json", "--rows-in-flight", in_flight,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        reports[in_flight] = json.loads(run.stdout)["rows"]
    one, two = reports[1], reports[2]
    assert [(r["scene"], r["status"], r["tiles_predicted"]) for r in two] == [
        (r["scene"], r["status"], r["tiles_predicted"]) for r in one
    ]
    assert all(r["status"] == "done" and r["tiles_predicted"] > 0 for r in one)
    for first, second in zip(one, two, strict=True):
        for a, b in zip(first["outputs"], second["outputs"], strict=True):
            if a.endswith(".tif"):
                with rasterio.open(a) as left, rasterio.open(b) as right:
                    assert (left.read() == right.read()).all()
            else:
                left, right = geopandas.read_file(a), geopandas.read_file(b)
                assert left.geometry.union_all().equals(right.geometry.union_all())
                assert list(left["rank"]) == list(right["rank"])


def test_rows_in_flight_is_for_the_batch_in_this_process(tmp_path):
    scene = _scene(tmp_path, "scene.tif")
    run = rrsis("batch", scene, "-e", "x", "--engine", "dask", "--rows-in-flight", "2")
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "rrsis: error: --rows-in-flight is for a batch in this process (without --engine)"
    )
