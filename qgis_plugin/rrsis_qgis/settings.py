"""The plugin's one setting: which rrsis executable to run."""

from __future__ import annotations

from qgis.core import QgsSettings

# Saved by the Processing options dialog under "Processing/Configuration/<name>".
EXECUTABLE_SETTING = "RRSIS_EXECUTABLE"
EXECUTABLE_SETTING_KEY = f"Processing/Configuration/{EXECUTABLE_SETTING}"


def configured_executable() -> str:
    """The configured rrsis executable (or Python interpreter), or "" to use PATH."""
    return str(QgsSettings().value(EXECUTABLE_SETTING_KEY, "") or "").strip()
