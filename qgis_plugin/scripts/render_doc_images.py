r"""Render the images of docs/qgis.md in headless QGIS: the algorithm dialog and a result.

Run with QGIS's Python (Debian: /usr/bin/python3), from the repository root:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 qgis_plugin/scripts/render_doc_images.py \\
        --rrsis "$(command -v rrsis)" --model MODEL --expression "..." RASTER

It writes docs/images/qgis_dialog.png (the dialog of "Segment by referring expression",
filled in) and docs/images/qgis_result.png (the polygons and probability raster, styled as the
plugin loads them, over RASTER), and prints the rrsis run's summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage

ROOT = Path(__file__).resolve().parents[2]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", type=Path, help="a real georeferenced raster")
    parser.add_argument("--rrsis", required=True, help="the rrsis executable")
    parser.add_argument("--model", default="", help="model for the result image")
    parser.add_argument("--expression", default="the bright bare fields")
    parser.add_argument("--bands", default="", help="e.g. 1,2,3")
    parser.add_argument("--width", type=int, default=640, help="result image width (pixels)")
    parser.add_argument(
        "--window",
        default="0.5,0,1,0.5",
        help="part of the raster in the result image: x0,y0,x1,y1 as fractions of its extent "
        "from the lower left corner (default: the lower right quarter, to show detail)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    return parser.parse_args()


def main() -> int:
    """Render both images; returns the exit code."""
    arguments = _arguments()
    app = QgsApplication([], True)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    sys.path.insert(0, str(ROOT / "qgis_plugin"))
    import processing
    import rrsis_qgis
    from processing.core.Processing import Processing
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from rrsis_qgis.settings import EXECUTABLE_SETTING_KEY
    from rrsis_qgis.styles import style_result

    Processing.initialize()
    plugin = rrsis_qgis.classFactory(None)
    plugin.initProcessing()
    QgsSettings().setValue(EXECUTABLE_SETTING_KEY, arguments.rrsis)
    arguments.out.mkdir(parents=True, exist_ok=True)

    scene = QgsRasterLayer(str(arguments.raster), arguments.raster.stem)
    QgsProject.instance().addMapLayer(scene)
    work = Path(tempfile.mkdtemp(prefix="rrsis_doc_images_")) / "results"
    parameters = {
        "INPUT": scene,
        "EXPRESSION": arguments.expression,
        "MODEL": arguments.model,
        "BANDS": arguments.bands,
        "OUTPUT_RASTER": str(work / "probability.tif"),
        "OUTPUT_POLYGONS": str(work / "polygons.gpkg"),
    }

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("rrsis:segment")
    dialog = AlgorithmDialog(algorithm)
    dialog.setParameters(parameters)
    dialog.resize(900, 880)
    dialog.show()
    app.processEvents()
    dialog.grab().save(str(arguments.out / "qgis_dialog.png"))
    dialog.close()
    del dialog

    results = processing.run("rrsis:segment", parameters)
    print({key: value for key, value in results.items()})
    probability = QgsRasterLayer(results["OUTPUT_RASTER"], "probability")
    polygons = QgsVectorLayer(results["OUTPUT_POLYGONS"], "polygons", "ogr")
    for layer in (probability, polygons):
        style_result(layer)
        QgsProject.instance().addMapLayer(layer)

    settings = QgsMapSettings()
    settings.setLayers([polygons, probability, scene])
    settings.setDestinationCrs(scene.crs())
    x0, y0, x1, y1 = (float(part) for part in arguments.window.split(","))
    full = scene.extent()
    extent = QgsRectangle(
        full.xMinimum() + x0 * full.width(),
        full.yMinimum() + y0 * full.height(),
        full.xMinimum() + x1 * full.width(),
        full.yMinimum() + y1 * full.height(),
    )
    height = round(arguments.width * extent.height() / extent.width())
    settings.setOutputSize(QSize(arguments.width, height))
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    # 256 colours keep the PNG small enough for the repository (imagery compresses badly).
    image = job.renderedImage().convertToFormat(QImage.Format_Indexed8)
    image.save(str(arguments.out / "qgis_result.png"))

    # Layers go before exitQgis(), which crashes otherwise.
    del job, settings, probability, polygons, scene
    QgsProject.instance().removeAllMapLayers()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
