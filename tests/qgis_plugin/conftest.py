"""Fixtures that drive real headless QGIS (Debian's 3.22) through subprocesses.

pytest runs under the project's Python, which cannot import QGIS; QGIS's own Python
(/usr/bin/python3) runs qgis_driver.py, and qgis_process.bin runs algorithms the way users
script them. Each test gets its own QGIS profile folder, so settings never leak.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLUGIN_ROOT = ROOT / "qgis_plugin"
QGIS_PYTHON = Path("/usr/bin/python3")
DRIVER = HERE / "qgis_driver.py"
RRSIS = Path(sys.executable).with_name("rrsis")
BRIGHTNESS = "python:rrsis_geo.inference.reference_models:brightness"
INSTALL_HINT = "QGIS is not installed (qgis_plugin/scripts/install_qgis.sh installs it)"


def _qgis_importable() -> bool:
    if not QGIS_PYTHON.exists():
        return False
    check = subprocess.run(
        [str(QGIS_PYTHON), "-c", "import qgis.core"], capture_output=True, env=qgis_base_env()
    )
    return check.returncode == 0


def qgis_base_env() -> dict[str, str]:
    """The environment for QGIS processes: offscreen, and without this Python's own paths."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return env


@pytest.fixture(scope="session")
def qgis_python() -> Path:
    """QGIS's Python, or a skip when QGIS is absent."""
    if not _qgis_importable():
        pytest.skip(INSTALL_HINT)
    return QGIS_PYTHON


@pytest.fixture(scope="session")
def qgis_process_bin() -> str:
    """Debian's qgis_process.bin (its qgis_process wrapper passes an option 3.22 rejects)."""
    found = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    if not Path(found).exists() or not _qgis_importable():
        pytest.skip(INSTALL_HINT)
    return found


@pytest.fixture
def qgis_env(tmp_path) -> dict[str, str]:
    """Environment with a fresh QGIS profile folder for this test."""
    env = qgis_base_env()
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path / "qgis-profile")
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg-runtime")
    (tmp_path / "xdg-runtime").mkdir(mode=0o700)
    # QGIS saves the statistics of a layer it loads as NAME.aux.xml beside the file: the test
    # inputs are the repository's own (tests/assets), which a test run must leave unchanged.
    env["GDAL_PAM_ENABLED"] = "NO"
    return env


@pytest.fixture
def run_in_qgis(qgis_python, qgis_env, tmp_path):
    """Run one algorithm through qgis_driver.py; returns its JSON report (plus stderr)."""

    def run(algorithm: str, parameters: dict, executable: str | Path = RRSIS, **options) -> dict:
        request = {
            "plugin_dir": str(PLUGIN_ROOT),
            "executable": str(executable),
            "algorithm": algorithm,
            "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in parameters.items()},
            **options,
        }
        request_file = tmp_path / "request.json"
        request_file.write_text(json.dumps(request))
        process = subprocess.run(
            [str(qgis_python), str(DRIVER), str(request_file)],
            capture_output=True,
            text=True,
            env=qgis_env,
            timeout=300,
        )
        assert process.returncode == 0, process.stderr[-3000:]
        report = json.loads(process.stdout.strip().splitlines()[-1])
        report["stderr"] = process.stderr
        return report

    return run
