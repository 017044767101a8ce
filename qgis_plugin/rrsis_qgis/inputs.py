"""Turn the input raster layer into a file that rrsis can read."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
)


def local_file(layer: QgsRasterLayer) -> str | None:
    """The file behind a GDAL layer, or None when it is not a plain local file."""
    if layer.providerType() != "gdal":
        return None
    # QGIS appends its own options after "|" (e.g. "|option:..."); GDAL reads the part before.
    path = layer.source().split("|")[0]
    return path if os.path.isfile(path) else None


def raster_file_for(
    layer: QgsRasterLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
) -> str:
    """A GeoTIFF or other GDAL file holding ``layer``'s pixels.

    A layer read from a local file is used as it is. A layer with native pixels but no plain
    file (a GeoPackage raster table, a remote /vsicurl/ source, a virtual raster, PostGIS, WCS)
    is copied, band values unchanged, to a temporary GeoTIFF. A web map or tile service has no
    native pixels or extent to segment, so it is refused with what to do instead.

    Args:
        layer: The input layer.
        context: The algorithm's context (temporary folder, coordinate transforms).
        feedback: For the export's progress and cancel.

    Returns:
        A path to pass to ``rrsis segment``.

    Raises:
        QgsProcessingException: For a layer without native pixels, or a failed export.
    """
    path = local_file(layer)
    if path is not None:
        return path
    provider = layer.dataProvider()
    if not provider.capabilities() & QgsRasterDataProvider.Size:
        raise QgsProcessingException(
            f"layer '{layer.name()}' ({layer.providerType()}) is a web map or tile service "
            "without native pixels to segment: save the area you want as a GeoTIFF first "
            "(right-click the layer > Export > Save As..., with the extent and resolution you "
            "need) and run on that file"
        )
    target = QgsProcessingUtils.generateTempFilename("rrsis_input.tif")
    feedback.pushInfo(
        f"'{layer.name()}' is not a local file ({layer.providerType()}): copying its "
        f"{provider.xSize()} x {provider.ySize()} pixels to {target}"
    )
    pipe = QgsRasterPipe()
    if not pipe.set(provider.clone()):
        raise QgsProcessingException(f"cannot read the pixels of layer '{layer.name()}'")
    # The writer reports through a raster block feedback: relay its progress and the cancel.
    block_feedback = QgsRasterBlockFeedback()
    feedback.canceled.connect(block_feedback.cancel)
    block_feedback.progressChanged.connect(feedback.setProgress)
    writer = QgsRasterFileWriter(target)
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["TILED=YES", "COMPRESS=DEFLATE"])
    error = writer.writeRaster(
        pipe,
        provider.xSize(),
        provider.ySize(),
        provider.extent(),
        provider.crs(),
        context.transformContext(),
        block_feedback,
    )
    if feedback.isCanceled():
        raise QgsProcessingException("canceled while copying the input layer")
    if error != QgsRasterFileWriter.NoError:
        raise QgsProcessingException(
            f"could not copy layer '{layer.name()}' to a temporary GeoTIFF (error {error})"
        )
    return target
