"""Run one rrsis Processing algorithm in real headless QGIS and report what happened as JSON.

Run by tests with Debian's /usr/bin/python3 (QGIS's Python), never by pytest itself:

    python3 qgis_driver.py REQUEST.json

REQUEST: {"plugin_dir", "executable" (the plugin setting, may be ""), "algorithm" (null:
run none), "parameters", "load" (runAndLoadResults instead of run), "cancel_on_progress" (true:
cancel at the first progress past 0; a number: at the first progress past it),
"input_kind" ("file", "virtual" or "xyz")}. The report on stdout's last line has the
registered algorithms, the provider's vector output extensions, the results or the error
message, the feedback and QGIS log lines, the progress values, and each output opened as a
layer (validity, CRS, style; a candidate layer's rows and its rule-based style's rules).
"""

import json
import sys
import time

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsExpression,
    QgsFeatureRequest,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterDataProvider,
    QgsRasterLayer,
    QgsSettings,
    QgsVectorLayer,
)

request = json.load(open(sys.argv[1]))
app = QgsApplication([], False)
app.initQgis()
sys.path.append("/usr/share/qgis/python/plugins")
import processing  # noqa: E402  (needs the application first)
import qgis.utils  # noqa: E402
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()

report = {"log": [], "feedback": [], "progress": []}


def on_log(message, tag, level):
    if tag == "rrsis":
        report["log"].append([int(level), message])


QgsApplication.messageLog().messageReceived.connect(on_log)

# Load the plugin the way QGIS does: from a plugin folder, classFactory, initProcessing.
qgis.utils.plugin_paths.insert(0, request["plugin_dir"])
sys.path.insert(0, request["plugin_dir"])
qgis.utils.updateAvailablePlugins()
assert qgis.utils.loadPlugin("rrsis_qgis"), "the plugin did not load"
assert qgis.utils.startProcessingPlugin("rrsis_qgis"), "the plugin did not start"
provider = QgsApplication.processingRegistry().providerById("rrsis")
report["provider"] = provider.name() if provider else None
report["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else []
QgsSettings().setValue("Processing/Configuration/RRSIS_EXECUTABLE", request["executable"])
report["vector_extensions"] = provider.supportedOutputVectorLayerExtensions() if provider else []


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps every message; cancels at the first progress past a threshold when asked to."""

    def __init__(self, cancel_on_progress):
        super().__init__(False)
        # True: past 0 (bool is an int in Python: True would read as 1).
        threshold = 0 if cancel_on_progress is True else cancel_on_progress
        self.cancel_past = None if threshold is False else threshold
        self.progressChanged.connect(self.on_progress)

    def on_progress(self, value):
        report["progress"].append(value)
        past = self.cancel_past
        if past is not None and past < value < 100 and not self.isCanceled():
            report["canceled_at"] = time.monotonic()
            self.cancel()

    def pushInfo(self, info):
        report["feedback"].append(["info", info])
        if info.startswith("rrsis ") and "(process " in info:
            report["pid"] = int(info.rsplit("(process ", 1)[1].rstrip(")"))

    def pushWarning(self, warning):
        report["feedback"].append(["warning", warning])

    def pushConsoleInfo(self, info):
        report["feedback"].append(["console", info])

    def pushCommandInfo(self, info):
        report["feedback"].append(["command", info])

    def reportError(self, error, fatalError=False):
        report["feedback"].append(["error", error])


def input_layer(path, kind):
    """The INPUT value: a file path, or a layer that is not a plain file."""
    if kind == "file":
        return path
    if kind == "virtual":
        # A virtual raster (raster calculator provider): pixels, but no file behind them.
        source = QgsRasterLayer(path, "source")
        parameters = QgsRasterDataProvider.VirtualRasterParameters()
        parameters.crs = source.crs()
        parameters.extent = source.extent()
        parameters.width = source.width()
        parameters.height = source.height()
        parameters.formula = '"source@1"'
        reference = QgsRasterDataProvider.VirtualRasterInputLayers()
        reference.name, reference.provider, reference.uri = "source", "gdal", path
        parameters.rInputLayers = [reference]
        uri = QgsRasterDataProvider.encodeVirtualRasterProviderUri(parameters)
        layer = QgsRasterLayer(uri, "virtual band 1", "virtualraster")
    else:
        # An XYZ tile service (a local URL template: no network needed to build the layer).
        layer = QgsRasterLayer("type=xyz&url=file:///nowhere/{z}/{x}/{y}.png", "tiles", "wms")
    assert layer.isValid(), f"{kind} layer is invalid"
    QgsProject.instance().addMapLayer(layer)
    return layer


ROW_FIELDS = ("rank", "chosen", "measure", "value", "area_m2", "reason")


def describe(layer):
    info = {
        "name": layer.name(),
        "source": layer.source().split("|")[0],
        "valid": layer.isValid(),
        "crs": layer.crs().authid(),
        "renderer": layer.renderer().type() if layer.renderer() else None,
        "opacity": layer.opacity(),
    }
    if isinstance(layer, QgsVectorLayer):
        info["features"] = layer.featureCount()
        info["fields"] = [field.name() for field in layer.fields()]
        symbol = layer.renderer().symbol() if info["renderer"] == "singleSymbol" else None
        info["fill_alpha"] = symbol.color().alpha() if symbol else None
        if "rank" in info["fields"]:
            wanted = [name for name in ROW_FIELDS if name in info["fields"]]
            rows = [{name: feature[name] for name in wanted} for feature in layer.getFeatures()]
            info["rows"] = sorted(rows, key=lambda row: row["rank"])
        if info["renderer"] == "RuleRenderer":
            info["rules"] = [
                {
                    "label": rule.label(),
                    "filter": rule.filterExpression(),
                    "outline_width": rule.symbol().symbolLayer(0).strokeWidth(),
                    "matches": sum(
                        1
                        for _ in layer.getFeatures(
                            QgsFeatureRequest(QgsExpression(rule.filterExpression()))
                        )
                    ),
                }
                for rule in layer.renderer().rootRule().children()
            ]
            info["order_by"] = layer.renderer().orderBy().dump()
    return info


parameters = dict(request["parameters"])
if request["algorithm"] is not None:
    parameters["INPUT"] = input_layer(parameters["INPUT"], request.get("input_kind", "file"))
feedback = RecordingFeedback(request.get("cancel_on_progress", False))
started = time.monotonic()
try:
    if request["algorithm"] is not None:
        run = processing.runAndLoadResults if request.get("load") else processing.run
        results = run(request["algorithm"], parameters, feedback=feedback)
        report["results"] = {key: value for key, value in results.items()}
except QgsProcessingException as error:
    report["error"] = str(error)
report["finished_at"] = time.monotonic()
report["seconds"] = report["finished_at"] - started

report["outputs"] = {}
for key, value in report.get("results", {}).items():
    if isinstance(value, str) and value.endswith(".tif"):
        layer = QgsRasterLayer(value, key)
    elif isinstance(value, str) and value.endswith((".gpkg", ".geojson", ".fgb", ".shp")):
        layer = QgsVectorLayer(value, key, "ogr")
    else:
        continue
    report["outputs"][key] = describe(layer)
    del layer
report["project_layers"] = [describe(layer) for layer in QgsProject.instance().mapLayers().values()]
report["log_levels"] = {"info": int(Qgis.Info), "warning": int(Qgis.Warning)}

# Layers must be gone before exitQgis(), which crashes otherwise.
QgsProject.instance().removeAllMapLayers()
del parameters, feedback
print(json.dumps(report, default=str))
sys.stdout.flush()
app.exitQgis()
