"""rrsis_qgis: a QGIS Processing provider that runs the ``rrsis`` command line.

Named apart from the ``rrsis_geo`` library on purpose: the plugin never imports it (nor
torch); it starts the ``rrsis`` executable of another Python environment.
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    """Create the plugin; QGIS calls this when it loads the plugin.

    Args:
        iface: QGIS's interface object (None in qgis_process).
    """
    from .plugin import RrsisPlugin

    return RrsisPlugin(iface)
