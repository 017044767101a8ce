"""The plugin package without QGIS: its option table against the CLI, its imports, its zip."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import zipfile
from enum import Enum

import typer.main

from rrsis_geo.cli.app import app
from tests.qgis_plugin.conftest import PLUGIN_ROOT

PACKAGE = PLUGIN_ROOT / "rrsis_qgis"


def _load_segment_options():
    # Only this module is loaded (it imports nothing from QGIS); the package needs QGIS.
    spec = importlib.util.spec_from_file_location(
        "rrsis_qgis_segment_options", PACKAGE / "segment_options.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building
    spec.loader.exec_module(module)
    return module


segment_options = _load_segment_options()


def _cli_options():
    command = typer.main.get_command(app).commands["segment"]
    return {param.opts[0]: param for param in command.params if param.opts[0].startswith("--")}


def test_every_cli_option_is_offered_or_set_by_the_plugin():
    offered = set()
    for option in segment_options.SEGMENT_OPTIONS:
        offered.update(option.flag.split("/"))
    managed = set(segment_options.PLUGIN_MANAGED_FLAGS)
    assert offered.isdisjoint(managed)
    # A new `rrsis segment` option fails here until it gets its line in SEGMENT_OPTIONS.
    assert offered | managed == set(_cli_options())


def _check_choice(option, cli):
    arguments = [list(arguments) for _, arguments in option.choices]
    if option.flag in cli and not cli[option.flag].is_flag:
        # One CLI option with a value (--strategy scene|tile): each choice passes one value,
        # the first is the CLI's default, and together they are the CLI's choices.
        assert all(len(args) == 2 and args[0] == option.flag for args in arguments), option.flag
        values = [args[1] for args in arguments]
        default = cli[option.flag].default
        assert isinstance(default, Enum), option.flag
        assert values[0] == default.value, option.flag
        assert sorted(values) == sorted(member.value for member in type(default)), option.flag
    else:
        # Switches (--binary/--float32, --no-check): the first choice passes none, each other
        # one switch.
        assert arguments[0] == [], option.flag
        for args in arguments[1:]:
            assert len(args) == 1 and cli[args[0]].default is False, option.flag
        assert {args[0] for args in arguments[1:]} == set(option.flag.split("/"))


def test_plugin_defaults_are_the_cli_defaults():
    cli = _cli_options()
    for option in segment_options.SEGMENT_OPTIONS:
        if option.kind == segment_options.CHOICE:
            _check_choice(option, cli)
            continue
        assert cli[option.flag].default == option.default, option.flag


def test_strategy_choice_maps_to_the_cli_arguments():
    (strategy,) = [o for o in segment_options.SEGMENT_OPTIONS if o.name == "STRATEGY"]
    assert [label for label, _ in strategy.choices] == [
        "Whole scene (sentence resolved over the scene)",
        "Per tile (old behaviour, for comparison)",
    ]
    assert segment_options.segment_arguments({"STRATEGY": 0}) == ["--strategy", "scene"]
    assert segment_options.segment_arguments({"STRATEGY": 1}) == ["--strategy", "tile"]
    # Unset: nothing passed, the CLI's default (scene) applies.
    assert segment_options.segment_arguments({"STRATEGY": None}) == []


def test_arguments_are_passed_only_when_they_differ_from_the_default():
    unset = {option.name: None for option in segment_options.SEGMENT_OPTIONS}
    assert segment_options.segment_arguments(unset) == []
    assert segment_options.segment_arguments({"BATCH_SIZE": 8, "SIMPLIFY": 1.0}) == []
    chosen = {
        "MODEL": " models/crobim-lite-synth ",
        "BANDS": "3,2,1",
        "TILE_SIZE": 256,
        "THRESHOLD": 0.4,
        "RASTER_KIND": 1,
        "BATCH_SIZE": 2,
    }
    assert segment_options.segment_arguments(chosen) == [
        "--model",
        "models/crobim-lite-synth",
        "--bands",
        "3,2,1",
        "--tile-size",
        "256",
        "--threshold",
        "0.4",
        "--binary",
        "--batch-size",
        "2",
    ]


def test_plugin_never_imports_the_library_torch_or_numpy():
    forbidden = {"rrsis_geo", "torch", "numpy", "rasterio", "PyQt5", "PyQt6"}
    for source in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{source.name} imports {name}"


def test_build_script_makes_an_installable_zip(tmp_path):
    target = tmp_path / "rrsis_qgis.zip"
    build = subprocess.run(
        [sys.executable, str(PLUGIN_ROOT / "scripts" / "build_zip.py"), "--output", str(target)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    names = zipfile.ZipFile(target).namelist()
    assert {name.split("/")[0] for name in names} == {"rrsis_qgis"}
    for required in ("__init__.py", "metadata.txt", "icon.svg", "provider.py"):
        assert f"rrsis_qgis/{required}" in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    metadata = zipfile.ZipFile(target).read("rrsis_qgis/metadata.txt").decode()
    assert "qgisMinimumVersion=3.22" in metadata and "hasProcessingProvider=yes" in metadata
