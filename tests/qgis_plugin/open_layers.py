"""Open files as QGIS layers and print, as JSON, whether each is valid and its CRS.

Run with QGIS's Python: ``python3 open_layers.py RASTER_OR_VECTOR ...``.
"""

import json
import sys

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer

app = QgsApplication([], False)
app.initQgis()
described = []
for path in sys.argv[1:]:
    if path.endswith(".tif"):
        layer = QgsRasterLayer(path, "raster")
    else:
        layer = QgsVectorLayer(path, "vector", "ogr")
    info = {"path": path, "valid": layer.isValid(), "crs": layer.crs().authid()}
    if isinstance(layer, QgsVectorLayer):
        info["features"] = layer.featureCount()
    described.append(info)
    del layer  # before exitQgis(), which crashes with live layers
print(json.dumps(described))
app.exitQgis()
