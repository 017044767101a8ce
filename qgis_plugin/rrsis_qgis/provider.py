"""The Processing provider: the algorithms, their output formats and the executable setting."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import BatchSegmentAlgorithm, SegmentAlgorithm
from .runner import RrsisError, check_executable, find_executable, output_formats
from .settings import EXECUTABLE_SETTING, configured_executable

ICON_PATH = os.path.join(os.path.dirname(__file__), "icon.svg")
PROVIDER_NAME = "Referring segmentation (rrsis)"
# When the executable cannot be asked (not found, not runnable, too old for `rrsis formats`),
# only GeoPackage is offered: every rrsis writes it, and it is QGIS's default vector format.
FALLBACK_VECTOR_EXTENSIONS = ("gpkg",)
# Seconds to wait for `--version` and `formats --json` while QGIS builds a dialog.
FORMATS_TIMEOUT = 30.0

# The vector extensions per configured executable ("" = the rrsis on PATH), asked once per QGIS
# session: QGIS calls supportedOutputVectorLayerExtensions often (each dialog, each check of
# an output), and the answer changes only with another rrsis.
_vector_extensions: dict[str, tuple[str, ...]] = {}


def vector_extensions() -> tuple[str, ...]:
    """The vector output suffixes (without dots) the configured rrsis writes.

    Read from ``rrsis formats --json`` (the library's format registry) once per session and
    executable; :data:`FALLBACK_VECTOR_EXTENSIONS` when the executable cannot be run.
    """
    configured = configured_executable()
    if configured not in _vector_extensions:
        try:
            executable = check_executable(find_executable(configured), FORMATS_TIMEOUT)
            formats = output_formats(executable, FORMATS_TIMEOUT)
            found = tuple(
                entry["suffix"].lstrip(".") for entry in formats if entry.get("kind") == "vector"
            )
        except (RrsisError, OSError):
            found = ()
        _vector_extensions[configured] = found or FALLBACK_VECTOR_EXTENSIONS
    return _vector_extensions[configured]


def _plugin_version() -> str:
    with open(os.path.join(os.path.dirname(__file__), "metadata.txt"), encoding="utf-8") as file:
        for line in file:
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    return ""


class RrsisProvider(QgsProcessingProvider):
    """Provides "Segment by referring expression" and "Batch segment"."""

    def id(self) -> str:
        """Prefix of the algorithm ids, e.g. ``rrsis:segment``."""
        return "rrsis"

    def name(self) -> str:
        """Name in the Toolbox and the settings."""
        return PROVIDER_NAME

    def icon(self) -> QIcon:
        """The plugin icon."""
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:
        """The plugin icon's file."""
        return ICON_PATH

    def versionInfo(self) -> str:
        """The plugin version (shown in Processing's history and reports)."""
        return _plugin_version()

    def load(self) -> bool:
        """Add the executable setting to the Processing options, then the algorithms."""
        # Processing's option machinery lives in the processing plugin; import it only here so
        # that the rest of the plugin does not depend on it.
        from processing.core.ProcessingConfig import ProcessingConfig, Setting

        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(
                self.name(),
                EXECUTABLE_SETTING,
                "rrsis executable (or a Python interpreter with rrsis-geo installed)",
                "",
                valuetype=Setting.FILE,
                placeholder="empty: the rrsis on PATH",
            )
        )
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        """Remove the setting again."""
        from processing.core.ProcessingConfig import ProcessingConfig

        if EXECUTABLE_SETTING in ProcessingConfig.settings:
            ProcessingConfig.removeSetting(EXECUTABLE_SETTING)

    def loadAlgorithms(self) -> None:
        """Register the algorithms."""
        self.addAlgorithm(SegmentAlgorithm())
        self.addAlgorithm(BatchSegmentAlgorithm())

    def supportsNonFileBasedOutput(self) -> bool:
        """Only files: rrsis writes files, so temporary outputs are files too."""
        return False

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        """GeoTIFF: rrsis writes Cloud Optimized GeoTIFFs."""
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        """The polygon formats the configured rrsis writes (see :func:`vector_extensions`)."""
        return list(vector_extensions())

    def defaultRasterFileExtension(self) -> str:
        """GeoTIFF."""
        return "tif"

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:
        """GeoPackage."""
        return "gpkg"
