"""Build the installable plugin zip: ``python qgis_plugin/scripts/build_zip.py [--output PATH]``.

The zip holds one folder, ``rrsis_qgis/``, as QGIS's "Install from ZIP" and the plugin
repository expect. Entries get a fixed date so the same sources give the same zip. Needs only
the standard library (any Python 3.8+).
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "rrsis_qgis"
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}
FIXED_DATE = (2026, 1, 1, 0, 0, 0)


def plugin_version(plugin_dir: Path = PLUGIN_DIR) -> str:
    """The ``version`` of the plugin's metadata.txt."""
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(plugin_dir / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def build_zip(output: Path, plugin_dir: Path = PLUGIN_DIR) -> list[str]:
    """Write the plugin zip to ``output`` (its folder is created).

    Args:
        output: Zip file to write (replaced if it exists).
        plugin_dir: The plugin package folder.

    Returns:
        The names inside the zip.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(
        path
        for path in plugin_dir.rglob("*")
        if path.is_file()
        and not SKIPPED_PARTS.intersection(path.relative_to(plugin_dir).parts)
        and path.suffix not in SKIPPED_SUFFIXES
    )
    names = []
    temporary = output.with_name(output.name + ".partial")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            name = f"{plugin_dir.name}/{path.relative_to(plugin_dir).as_posix()}"
            entry = zipfile.ZipInfo(name, FIXED_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, path.read_bytes())
            names.append(name)
    temporary.replace(output)
    return names


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        help="zip to write (default: qgis_plugin/dist/rrsis_qgis-VERSION.zip)",
    )
    arguments = parser.parse_args(argv)
    output = arguments.output or (
        PLUGIN_DIR.parent / "dist" / f"{PLUGIN_DIR.name}-{plugin_version()}.zip"
    )
    names = build_zip(output)
    print(f"{output} ({len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
