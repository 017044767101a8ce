"""The plugin in real headless QGIS 3.22: Processing scripts and qgis_process, real rrsis runs.

Every test starts QGIS in a subprocess (see conftest.py) and rrsis as QGIS's subprocess, on the
real rasters of tests/assets/real. The model is the exact per-pixel reference model, so the
runs take seconds; what is tested is the plugin: parameters, subprocess, progress, cancel,
messages, outputs and their styles.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile

import pytest
import rasterio

from rrsis_geo.geo.formats import suffixes
from tests.qgis_plugin.conftest import BRIGHTNESS, HERE, PLUGIN_ROOT, QGIS_PYTHON, RRSIS

SLOW_MODEL = f"python:{HERE.parent / 'cli' / 'slow_model.py'}:factory"
# What the provider offers for vector outputs: the library's registry, through rrsis formats.
LIBRARY_VECTOR_EXTENSIONS = [suffix.lstrip(".") for suffix in suffixes("vector")]
CANDIDATE_FIELDS = {
    "rank",
    "chosen",
    "reason",
    "score_mean",
    "score_max",
    "presence",
    "area_m2",
    "measure",
    "value",
    "expression",
    "model",
}


def _crs(path) -> str:
    with rasterio.open(path) as dataset:
        return dataset.crs.to_string()


def _commands(report) -> list[str]:
    return [text for kind, text in report["feedback"] if kind == "command"]


def test_provider_vector_extensions_come_from_rrsis_formats(run_in_qgis):
    report = run_in_qgis(None, {})
    assert report["vector_extensions"] == LIBRARY_VECTOR_EXTENSIONS
    assert "gpkg" in report["vector_extensions"] and len(report["vector_extensions"]) > 1


def test_segment_runs_through_processing_and_loads_styled_layers(
    run_in_qgis, real_rasters, tmp_path
):
    scene = real_rasters / "RGB.byte.tif"
    report = run_in_qgis(
        "rrsis:segment",
        {
            "INPUT": scene,
            "EXPRESSION": "the bright fields",
            "MODEL": BRIGHTNESS,
            "STRATEGY": 1,  # Per tile (the old behaviour)
            "OUTPUT_RASTER": tmp_path / "bright.tif",
            "OUTPUT_POLYGONS": tmp_path / "bright.gpkg",
        },
        load=True,
    )
    assert report["provider"] == "Referring segmentation (rrsis)"
    assert report["algorithms"] == ["rrsis:batchsegment", "rrsis:segment"]
    assert report["vector_extensions"] == LIBRARY_VECTOR_EXTENSIONS
    assert "error" not in report, report["error"]
    (command,) = _commands(report)
    assert " --strategy tile " in command and "--candidates" not in command
    assert report["results"]["MODEL_NAME"] == "reference/brightness"
    assert report["results"]["POLYGON_COUNT"] > 0
    assert report["progress"][-1] == 100.0
    # rrsis's stderr reaches the QGIS log (this raster is stored in strips, which it warns about)
    assert any("stored in strips" in message for _, message in report["log"])
    outputs = report["outputs"]
    assert outputs["OUTPUT_RASTER"]["valid"] and outputs["OUTPUT_POLYGONS"]["valid"]
    assert outputs["OUTPUT_RASTER"]["crs"] == outputs["OUTPUT_POLYGONS"]["crs"] == _crs(scene)
    assert outputs["OUTPUT_POLYGONS"]["features"] == report["results"]["POLYGON_COUNT"]
    loaded = {layer["name"]: layer for layer in report["project_layers"]}
    raster = loaded["the bright fields (probability)"]
    assert raster["renderer"] == "singlebandpseudocolor" and raster["opacity"] < 1
    polygons = loaded["the bright fields"]
    assert polygons["renderer"] == "singleSymbol" and 0 < polygons["fill_alpha"] < 255
    assert "Traceback" not in report["stderr"]


def test_a_checkpoint_of_another_family_runs_through_processing(
    run_in_qgis, real_rasters, tmp_path
):
    # The provider hands the model to rrsis, which dispatches on the checkpoint's architecture:
    # an RSRefSeg 2 (tiny, random) checkpoint folder runs as the default CroBIM does.
    from rrsis_geo.nn.rsrefseg2 import RSRefSeg2

    checkpoint = RSRefSeg2.from_config("rsrefseg2-tiny").save_pretrained(tmp_path / "rsrefseg2")
    scene = real_rasters / "RGB.byte.tif"
    report = run_in_qgis(
        "rrsis:segment",
        {
            "INPUT": scene,
            "EXPRESSION": "the river",
            "MODEL": checkpoint,
            "STRATEGY": 1,
            "OUTPUT_RASTER": tmp_path / "river.tif",
            "OUTPUT_POLYGONS": tmp_path / "river.gpkg",
        },
    )
    assert "error" not in report, report["error"]
    (command,) = _commands(report)
    assert f" --model {checkpoint} " in command
    assert report["results"]["MODEL_NAME"] == "rsrefseg2-tiny"
    raster = report["outputs"]["OUTPUT_RASTER"]
    assert raster["valid"] and raster["crs"] == _crs(scene)
    with rasterio.open(tmp_path / "river.tif") as written, rasterio.open(scene) as source:
        assert (written.width, written.height) == (source.width, source.height)


def test_candidates_output_is_written_and_loads_styled_by_rank(run_in_qgis, real_rasters, tmp_path):
    scene = real_rasters / "RGB.byte.tif"
    candidates = tmp_path / "layers" / "candidates.gpkg"  # a folder that does not exist yet
    report = run_in_qgis(
        "rrsis:segment",
        {
            "INPUT": scene,
            "EXPRESSION": "the largest bright field",
            "MODEL": BRIGHTNESS,
            "STRATEGY": 0,  # Whole scene
            "OUTPUT_RASTER": None,
            "OUTPUT_POLYGONS": tmp_path / "largest.gpkg",
            "OUTPUT_CANDIDATES": candidates,
        },
        load=True,
    )
    assert "error" not in report, report["error"]
    (command,) = _commands(report)
    assert " --strategy scene " in command
    assert f" --candidates {candidates} " in command and " --explain " in command
    # --explain: how the sentence was read reaches the algorithm's log
    assert any(
        kind == "console" and text.startswith("rrsis: reading:")
        for kind, text in report["feedback"]
    )
    assert report["results"]["OUTPUT_CANDIDATES"] == str(candidates)
    layer = report["outputs"]["OUTPUT_CANDIDATES"]
    assert layer["valid"] and layer["crs"] == _crs(scene)
    assert CANDIDATE_FIELDS <= set(layer["fields"])
    rows = layer["rows"]
    assert len(rows) == layer["features"] > 1, "the scene should have several bright fields"
    assert [row["rank"] for row in rows] == list(range(1, len(rows) + 1))
    # "the largest": one referent, rank 1, ranked by area, and it has the largest area
    assert [bool(row["chosen"]) for row in rows] == [True] + [False] * (len(rows) - 1)
    assert {row["measure"] for row in rows} == {"area"}
    assert rows[0]["value"] == max(row["value"] for row in rows)
    assert all(row["reason"] for row in rows)
    # Loaded into the project, styled by rank: the chosen referent stands out
    loaded = {item["name"]: item for item in report["project_layers"]}
    styled = loaded["the largest bright field (candidates)"]
    assert styled["valid"] and styled["renderer"] == "RuleRenderer"
    rules = styled["rules"]
    assert rules[0]["filter"] == '"chosen"' and rules[0]["matches"] == 1
    # the rules exclude each other and leave no candidate out
    assert sum(rule["matches"] for rule in rules) == len(rows)
    assert all(rules[0]["outline_width"] > rule["outline_width"] for rule in rules[1:])
    widths = [rule["outline_width"] for rule in rules[1:]]
    assert widths == sorted(widths, reverse=True)  # lighter down the ranking
    assert '"rank" DESC' in styled["order_by"]  # rank 1 drawn last, on top
    assert loaded["the largest bright field"]["renderer"] == "singleSymbol"
    assert "Traceback" not in report["stderr"]


def test_qgis_process_runs_the_plugin_installed_from_its_zip(
    qgis_process_bin, qgis_env, real_rasters, tmp_path
):
    # Install the way a user does: the built zip, unpacked into the profile, then enabled.
    archive = tmp_path / "rrsis_qgis.zip"
    build = [sys.executable, str(PLUGIN_ROOT / "scripts" / "build_zip.py"), "--output", archive]
    subprocess.run(list(map(str, build)), check=True, capture_output=True)
    plugins = tmp_path / "qgis-profile" / "profiles" / "default" / "python" / "plugins"
    zipfile.ZipFile(archive).extractall(plugins)
    # rrsis found on PATH (no setting): the auto-detection users without a setting rely on.
    # Only rrsis goes on PATH: QGIS's embedded Python takes its standard library from the first
    # python3 on PATH, so a virtual environment's bin folder there would break qgis_process.
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "rrsis").symlink_to(RRSIS)
    env = dict(qgis_env, PATH=f"{on_path}{os.pathsep}/usr/bin{os.pathsep}/bin")

    def qgis_process(*arguments):
        return subprocess.run(
            [qgis_process_bin, *map(str, arguments)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    enabled = qgis_process("plugins", "enable", "rrsis_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    scene = real_rasters / "cogeo.tif"
    raster, polygons = tmp_path / "out" / "roofs.tif", tmp_path / "out" / "roofs.gpkg"
    run = qgis_process(
        "--json",
        "run",
        "rrsis:segment",
        "--",
        f"INPUT={scene}",
        "EXPRESSION=the bright roofs",
        f"MODEL={BRIGHTNESS}",
        "TILE_SIZE=256",
        "OVERLAP=32",
        f"OUTPUT_RASTER={raster}",
        f"OUTPUT_POLYGONS={polygons}",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(run.stdout)["results"]
    assert results["OUTPUT_RASTER"] == str(raster) and results["OUTPUT_POLYGONS"] == str(polygons)
    opened = subprocess.run(
        [str(QGIS_PYTHON), str(HERE / "open_layers.py"), str(raster), str(polygons)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert opened.returncode == 0, opened.stderr[-2000:]
    layers = json.loads(opened.stdout.strip().splitlines()[-1])
    assert [layer["valid"] for layer in layers] == [True, True]
    assert {layer["crs"] for layer in layers} == {_crs(scene)} == {"EPSG:3857"}
    assert layers[1]["features"] == results["POLYGON_COUNT"]


def test_cancel_stops_rrsis_and_leaves_no_output(run_in_qgis, real_rasters, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    report = run_in_qgis(
        "rrsis:segment",
        {
            "INPUT": real_rasters / "RGB.byte.tif",
            "EXPRESSION": "anything",
            "MODEL": SLOW_MODEL,
            "TILE_SIZE": 64,
            "OVERLAP": 16,
            "MARGIN": 4,
            "OUTPUT_RASTER": out / "p.tif",
            "OUTPUT_POLYGONS": out / "p.gpkg",
        },
        cancel_on_progress=True,
    )
    assert "canceled_at" in report, "the run finished before it could be canceled"
    assert "canceled" in report["error"] and "no output" in report["error"]
    # rrsis stopped promptly (it cleans up on SIGTERM) and is gone, not orphaned
    assert report["finished_at"] - report["canceled_at"] < 20
    with pytest.raises(ProcessLookupError):
        os.kill(report["pid"], 0)
    assert list(out.iterdir()) == []  # not even rrsis's hidden temporary files
    assert "Traceback" not in report["stderr"]


def _fake_executable(path, version_line):
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "the configured rrsis executable does not exist: /nonexistent/bin/rrsis"),
        ("too old", "rrsis 0.0.9 at {path} is too old: this plugin needs rrsis 0.1.0 or later"),
        ("not rrsis", "is not a working rrsis"),
    ],
)
def test_unusable_executable_gives_a_message_not_a_traceback(
    run_in_qgis, real_rasters, tmp_path, case, message
):
    if case == "missing":
        executable = "/nonexistent/bin/rrsis"
    else:
        answer = "rrsis 0.0.9" if case == "too old" else "something else 1.0"
        executable = _fake_executable(tmp_path / "rrsis", answer)
    report = run_in_qgis(
        "rrsis:segment",
        {
            "INPUT": real_rasters / "RGB.byte.tif",
            "EXPRESSION": "x",
            "OUTPUT_RASTER": tmp_path / "p.tif",
        },
        executable=executable,
    )
    assert message.format(path=executable) in report["error"]
    # An executable that cannot be asked for its formats leaves GeoPackage only.
    assert report["vector_extensions"] == ["gpkg"]
    assert "Traceback" not in report["stderr"]
    assert not (tmp_path / "p.tif").exists()


def test_qgis_process_without_rrsis_on_path_explains_what_to_install(
    qgis_process_bin, qgis_env, real_rasters, tmp_path
):
    env = dict(qgis_env, PATH=f"/usr/bin{os.pathsep}/bin", QGIS_PLUGINPATH=str(PLUGIN_ROOT))
    enable = [qgis_process_bin, "plugins", "enable", "rrsis_qgis"]
    subprocess.run(enable, check=True, capture_output=True, env=env, timeout=120)
    run = subprocess.run(
        [
            qgis_process_bin,
            "run",
            "rrsis:segment",
            "--",
            f"INPUT={real_rasters / 'RGB.byte.tif'}",
            "EXPRESSION=x",
            f"OUTPUT_RASTER={tmp_path / 'p.tif'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    said = run.stdout + run.stderr
    assert run.returncode != 0
    assert "no rrsis executable found: it is not on PATH and none is configured" in said
    assert "Traceback" not in said
    assert not (tmp_path / "p.tif").exists()


def test_missing_model_is_reported_in_rrsis_words(run_in_qgis, real_rasters, tmp_path):
    report = run_in_qgis(
        "rrsis:segment",
        {
            "INPUT": real_rasters / "RGB.byte.tif",
            "EXPRESSION": "x",
            "MODEL": "/nonexistent/model",
            "OUTPUT_RASTER": tmp_path / "p.tif",
        },
    )
    assert report["error"] == (
        "model not found: /nonexistent/model (not a checkpoint folder or a hub repo id)"
    )
    assert list(tmp_path.glob("p.*")) == []


def test_layer_without_a_file_is_copied_to_a_geotiff_first(run_in_qgis, real_rasters, tmp_path):
    report = run_in_qgis(
        "rrsis:segment",
        {
            "INPUT": real_rasters / "RGB.byte.tif",
            "EXPRESSION": "bright",
            "MODEL": BRIGHTNESS,
            "OUTPUT_RASTER": tmp_path / "p.tif",
            "OUTPUT_POLYGONS": None,
        },
        input_kind="virtual",
    )
    assert "error" not in report, report["error"]
    assert any("is not a local file (virtualraster)" in text for _, text in report["feedback"])
    assert report["results"]["OUTPUT_POLYGONS"] is None
    assert report["outputs"]["OUTPUT_RASTER"]["crs"] == "EPSG:32618"
    with rasterio.open(tmp_path / "p.tif") as result:
        assert (result.width, result.height) == (791, 718)


def test_tile_service_layer_is_refused_with_what_to_do(run_in_qgis, real_rasters, tmp_path):
    report = run_in_qgis(
        "rrsis:segment",
        {"INPUT": "", "EXPRESSION": "x", "OUTPUT_RASTER": tmp_path / "p.tif"},
        input_kind="xyz",
    )
    assert "web map or tile service without native pixels" in report["error"]
    assert "save the area you want as a GeoTIFF" in report["error"]


def test_batch_segment_writes_one_styled_pair_per_expression(run_in_qgis, real_rasters, tmp_path):
    report = run_in_qgis(
        "rrsis:batchsegment",
        {
            "INPUT": real_rasters / "RGB.byte.tif",
            "EXPRESSIONS": ["the bright fields", "Dark water!"],
            "MODEL": BRIGHTNESS,
            "WRITE_CANDIDATES": True,
            "OUTPUT_FOLDER": tmp_path / "batch",
            "TILE_SIZE": 256,
            "BATCH_SIZE": 2,
        },
        # The setting may name a Python interpreter instead of rrsis: python -m rrsis_geo.
        executable=sys.executable,
        load=True,
    )
    assert "error" not in report, report["error"]
    assert report["vector_extensions"] == LIBRARY_VECTOR_EXTENSIONS  # asked via python -m
    # One rrsis process for every expression (one model load), its progress up to the end
    (command,) = _commands(report)
    assert " -m rrsis_geo batch " in command and f" --model {BRIGHTNESS} " in command
    assert " --explain" in command and " --resume" not in command
    assert report["progress"][-1] == 100.0
    # The tiles of the first expression move the bar before it finishes (half of the whole)
    run = report["progress"][: report["progress"].index(100.0)]
    assert any(0 < value < 50 for value in run), report["progress"]
    # --explain: how each expression was read reaches the algorithm's log, once each
    readings = [t for k, t in report["feedback"] if k == "console" and "reading: target" in t]
    assert readings == [f'rrsis: reading: target: "{t}"' for t in ("bright fields", "dark water")]
    names = sorted(os.path.basename(path) for path in report["results"]["OUTPUT_LAYERS"])
    assert names == [
        "01_the_bright_fields.gpkg",
        "01_the_bright_fields.tif",
        "01_the_bright_fields_candidates.gpkg",
        "02_dark_water.gpkg",
        "02_dark_water.tif",
        "02_dark_water_candidates.gpkg",
    ]
    layers = {layer["name"]: layer for layer in report["project_layers"]}
    assert set(layers) == {
        "the bright fields",
        "the bright fields (probability)",
        "the bright fields (candidates)",
        "Dark water!",
        "Dark water! (probability)",
        "Dark water! (candidates)",
    }
    assert layers["Dark water! (candidates)"]["renderer"] == "RuleRenderer"
    assert all(layer["valid"] for layer in report["project_layers"])
    assert {layer["crs"] for layer in report["project_layers"]} == {"EPSG:32618"}
    # The manifest was a hidden file of the output folder, removed afterwards
    assert not [name for name in os.listdir(tmp_path / "batch") if name.startswith(".")]


def test_batch_segment_reports_a_failed_expression_and_loads_the_others(
    run_in_qgis, real_rasters, tmp_path
):
    folder = tmp_path / "batch"
    # A folder where the second expression's raster would go: that row fails, alone.
    (folder / "02_dark_water.tif").mkdir(parents=True)
    parameters = {
        "INPUT": real_rasters / "RGB.byte.tif",
        "EXPRESSIONS": ["the bright fields", "Dark water!"],
        "MODEL": BRIGHTNESS,
        "STRATEGY": 1,  # Per tile
        "TILE_SIZE": 256,
        "OVERLAP": 32,
        "RASTER_KIND": 1,  # Binary mask: a switch, passed as --set binary=true
        "OUTPUT_FOLDER": folder,
    }
    report = run_in_qgis("rrsis:batchsegment", parameters, load=True)
    assert "error" not in report, report["error"]
    (command,) = _commands(report)
    assert " --set tile_size=256 --set overlap=32 --set binary=true " in command
    errors = [text for kind, text in report["feedback"] if kind == "error"]
    assert errors == [f"Dark water!: output is a folder: {folder / '02_dark_water.tif'}"]
    names = sorted(os.path.basename(path) for path in report["results"]["OUTPUT_LAYERS"])
    assert names == ["01_the_bright_fields.gpkg", "01_the_bright_fields.tif"]
    loaded = {layer["name"] for layer in report["project_layers"]}
    assert loaded == {"the bright fields", "the bright fields (probability)"}
    with rasterio.open(folder / "01_the_bright_fields.tif") as mask:
        assert set(mask.read(1, masked=True).compressed().tolist()) == {0, 1}
    assert not (folder / "02_dark_water.gpkg").exists()
    # Every expression failing is the algorithm's error, with the first reason
    (folder / "01_dark_water.tif").mkdir()
    parameters["EXPRESSIONS"] = ["Dark water!"]
    report = run_in_qgis("rrsis:batchsegment", parameters, load=True)
    assert report["error"] == (
        f"every expression failed; the first: Dark water!: output is a folder: "
        f"{folder / '01_dark_water.tif'}"
    )


def test_batch_cancel_keeps_the_finished_expressions(run_in_qgis, real_rasters, tmp_path):
    folder = tmp_path / "batch"
    report = run_in_qgis(
        "rrsis:batchsegment",
        {
            "INPUT": real_rasters / "RGB.byte.tif",
            "EXPRESSIONS": ["anything", "something else"],
            "MODEL": SLOW_MODEL,
            "TILE_SIZE": 128,
            "OVERLAP": 16,
            "MARGIN": 4,
            "OUTPUT_FOLDER": folder,
        },
        cancel_on_progress=50,  # past half: the second expression is running
    )
    assert "canceled_at" in report, "the run finished before it could be canceled"
    assert report["error"] == (
        "canceled: rrsis was stopped and wrote no output; "
        f"the 1 expressions before it are complete in {folder}"
    )
    assert report["finished_at"] - report["canceled_at"] < 20
    with pytest.raises(ProcessLookupError):
        os.kill(report["pid"], 0)
    # The first expression's files (and their sidecars) only: nothing of the second, no
    # temporary file, no manifest
    assert sorted(os.listdir(folder)) == [
        "01_anything.gpkg",
        "01_anything.gpkg.json",
        "01_anything.tif",
        "01_anything.tif.json",
    ]
    assert "Traceback" not in report["stderr"]
