"""The QGIS plugin object: it registers the Processing provider and nothing else."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import RrsisProvider


class RrsisPlugin:
    """Adds the rrsis Processing provider (Toolbox, Model Builder, batch mode, qgis_process).

    Args:
        iface: QGIS's interface object, or None when QGIS runs without its GUI
            (``qgis_process``, scripts).
    """

    def __init__(self, iface: Any = None) -> None:
        self.iface = iface
        # The registry does not keep the Python object alive: without this reference the
        # provider would be garbage-collected and its algorithms would vanish.
        self.provider: RrsisProvider | None = None

    def initProcessing(self) -> None:
        """Register the provider (QGIS calls this for qgis_process, initGui for the GUI)."""
        if self.provider is None:
            self.provider = RrsisProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Register the provider when the QGIS GUI loads the plugin."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
