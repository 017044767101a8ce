"""Data flows one way: a lower floor of the package never imports a higher one."""

import subprocess
import sys

import pytest

# Each floor, with the floors it must never import (whatever of its modules is imported).
FORBIDDEN = {
    "geo": ("nn", "models", "data", "inference", "training", "cli"),
    "data": ("nn", "inference", "training", "cli"),
    "nn": ("models", "inference", "training", "cli"),
    "inference": ("training", "cli"),
    "training": ("cli",),
}

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
package = importlib.import_module("rrsis_geo.{floor}")
for info in pkgutil.walk_packages(package.__path__, "rrsis_geo.{floor}."):
    importlib.import_module(info.name)
print(" ".join(sorted({{n.split(".")[1] for n in sys.modules if n.startswith("rrsis_geo.")}})))
"""


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_a_floor_imports_no_higher_floor(floor):
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE.format(floor=floor)],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = set(run.stdout.split())
    assert floor in imported
    assert not imported & set(FORBIDDEN[floor]), f"rrsis_geo.{floor} imports {imported}"
