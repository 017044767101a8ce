"""``rrsis doctor`` through the real command line, and the QGIS plugin's view it reports."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyproj
import pytest
import rasterio
import torch

from rrsis_geo import __version__
from rrsis_geo.environment import check_qgis_plugin, load_plugin_runner, this_executable
from rrsis_geo.models import DEFAULT_MODEL, SHIPPED_MODELS

WEIGHTS = SHIPPED_MODELS / DEFAULT_MODEL / "model.safetensors"
# Variables that change what doctor checks; the tests set them explicitly.
CHECKED_VARIABLES = ("RRSIS_MODEL", "PROJ_DATA", "PROJ_LIB")


def doctor(*args, **env):
    """Run ``python -m rrsis_geo doctor`` with ``env`` added to this environment."""
    environment = {k: v for k, v in os.environ.items() if k not in CHECKED_VARIABLES}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "rrsis_geo", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )


def lines_by_check(stdout):
    prefix = "rrsis: doctor: "
    lines = {}
    for line in stdout.splitlines():
        assert line.startswith(prefix), line
        name, _, rest = line.removeprefix(prefix).partition(": ")
        lines[name] = rest
    return lines


@pytest.fixture(scope="module")
def healthy_json():
    run = doctor("--json")
    assert run.returncode == 0, run.stdout + run.stderr
    return {check["name"]: check for check in json.loads(run.stdout)}


@pytest.mark.slow
def test_healthy_install_exits_0_with_real_versions_and_hash():
    run = doctor()
    assert run.returncode == 0, run.stdout + run.stderr
    lines = lines_by_check(run.stdout)
    sha256 = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert lines["rrsis"].startswith(f"{__version__} at ")
    assert lines["torch"] == torch.__version__
    assert lines["GDAL"].startswith(
        f"{rasterio.__gdal_version__} (rasterio {rasterio.__version__})"
    )
    assert lines["PROJ"].startswith(pyproj.proj_version_str)
    assert f"{DEFAULT_MODEL} sha256 {sha256}" in lines["default model"]
    assert "loads on cpu" in lines["default model"]
    assert "driver COG (.tif .tiff)" in lines
    assert "driver GPKG (.gpkg)" in lines
    assert "fix:" not in lines["default model"]
    assert "everything a default run needs is in order" in run.stdout.splitlines()[-1]


@pytest.mark.slow
def test_json_has_one_object_per_check(healthy_json):
    from rrsis_geo.geo.formats import OUTPUT_FORMATS

    for check in healthy_json.values():
        assert set(check) == {"name", "ok", "detail", "fix", "required", "status"}
    required = {name for name, check in healthy_json.items() if check["required"]}
    assert {"torch", "GDAL", "PROJ", "default model", "driver COG (.tif .tiff)"} <= required
    assert all(healthy_json[name]["ok"] for name in required)
    # Every output format's driver is checked; only the default outputs' are required.
    drivers = {entry.driver for entry in OUTPUT_FORMATS.values()}
    checked = {name.split(" (")[0].removeprefix("driver ") for name in healthy_json}
    assert drivers <= checked
    assert not healthy_json["driver FlatGeobuf (.fgb)"]["required"]
    sha256 = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert sha256 in healthy_json["default model"]["detail"]
    assert healthy_json["torch"]["detail"] == torch.__version__


@pytest.mark.slow
def test_missing_model_override_exits_1_with_the_fix_on_its_line(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    run = doctor(RRSIS_MODEL=str(missing))
    assert run.returncode == 1, run.stdout + run.stderr
    lines = lines_by_check(run.stdout)
    line = lines["RRSIS_MODEL"]
    assert str(missing) in line
    assert "does not load" in line
    assert "— fix: unset RRSIS_MODEL" in line
    assert "RRSIS_MODEL failed" in run.stdout.splitlines()[-1]
    # The rest of the install is still reported healthy.
    assert "fix:" not in lines["default model"]


@pytest.mark.slow
def test_proj_data_without_a_database_exits_1_with_the_fix(tmp_path):
    run = doctor("--json", PROJ_DATA=str(tmp_path))
    assert run.returncode == 1, run.stdout + run.stderr
    checks = {check["name"]: check for check in json.loads(run.stdout)}
    assert checks["PROJ"]["status"] == "failed"
    assert "EPSG:32633" in checks["PROJ"]["detail"]
    assert checks["PROJ"]["fix"].startswith("unset PROJ_DATA")
    assert [name for name, check in checks.items() if check["status"] == "failed"] == ["PROJ"]


# The plugin's view: its own runner.py decides, with real executables on a real PATH.


def fake_rrsis(folder: Path, version: str) -> Path:
    script = folder / "rrsis"
    script.write_text(
        f'#!/bin/sh\necho "rrsis {version}, default model x missing from this install"\n'
    )
    script.chmod(0o755)
    return script


def older_than(version):
    """A version just before ``version``: (0, 1, 0) -> "0.0.99"."""
    parts = list(version)
    last = max(i for i, part in enumerate(parts) if part > 0)
    parts[last] -= 1
    parts[last + 1 :] = [99] * (len(parts) - last - 1)
    return ".".join(map(str, parts))


def test_plugin_runner_is_the_plugin_file():
    runner, path = load_plugin_runner()
    assert path.name == "runner.py" and path.parent.name == "rrsis_qgis"
    assert "MINIMUM_VERSION" in path.read_text()
    assert isinstance(runner.MINIMUM_VERSION, tuple)


def test_plugin_view_finds_this_install(monkeypatch):
    monkeypatch.setenv("PATH", f"{this_executable().parent}{os.pathsep}/usr/bin:/bin")
    check = check_qgis_plugin()
    assert check.ok, check.line()
    assert f"PATH gives {this_executable()} (this install), rrsis {__version__}" in check.detail


def test_plugin_view_refuses_a_too_old_rrsis(monkeypatch, tmp_path):
    runner, _ = load_plugin_runner()
    fake = fake_rrsis(tmp_path, older_than(runner.MINIMUM_VERSION))
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    check = check_qgis_plugin()
    assert check.status == "warning"
    assert f"at {fake} is too old" in check.detail
    assert "fix: set Settings > Options > Processing" in check.line()
    assert str(this_executable()) in check.fix


def test_plugin_view_flags_another_install(monkeypatch, tmp_path):
    fake_rrsis(tmp_path, "9.9.9")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    check = check_qgis_plugin()
    assert check.status == "warning"
    assert "rrsis 9.9.9" in check.detail and "another install" in check.detail


def test_plugin_view_without_rrsis_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    check = check_qgis_plugin()
    assert check.status == "warning"
    assert "no rrsis executable found" in check.detail
