"""How results look when they load: probability ramp, polygons, candidates graded by rank.

The probability raster gets a colour ramp, the polygons a semi-transparent fill, and the
candidate layer a style by rank in which the chosen referent stands out in a strong outline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from qgis.core import (
    QgsColorRampShader,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRuleBasedRenderer,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

# Probability 0-1 (QGIS applies the 1/254 scale of the 8-bit raster itself): transparent
# where the object is unlikely, so the scene shows through, then a warm ramp (magma-like)
# that is readable over imagery.
PROBABILITY_RAMP = (
    (0.0, QColor(0, 0, 4, 0), "0"),
    (0.25, QColor(81, 18, 124, 90), "0.25"),
    (0.5, QColor(183, 55, 121, 170), "0.5"),
    (0.75, QColor(252, 137, 97, 220), "0.75"),
    (1.0, QColor(252, 253, 191, 255), "1"),
)
RASTER_OPACITY = 0.8
POLYGON_STYLE = {
    "color": "255,214,0,90",  # about 35% opaque yellow: the imagery stays visible
    "outline_color": "255,214,0,255",
    "outline_width": "0.6",
}
# The candidate layer (rrsis segment --candidates): one rule per group of ranks, first match
# only (the filters exclude each other). The referent(s) the sentence chose (``chosen``; rank 1
# first, ranks 1..N for "the N largest") in the polygons' yellow with a thick red outline; the
# other candidates in dashed cyan outlines that get thinner and fainter down the ranking, so
# what the sentence's words ranked is visible without hiding the choice.
CANDIDATE_RULES = (
    (
        "chosen (the referent)",
        '"chosen"',
        {
            "color": "255,214,0,110",
            "outline_color": "230,40,0,255",
            "outline_width": "1.0",
        },
    ),
    (
        "candidate, rank 2-3",
        'NOT "chosen" AND "rank" <= 3',
        {
            "color": "0,200,255,45",
            "outline_color": "0,200,255,230",
            "outline_width": "0.5",
            "outline_style": "dash",
        },
    ),
    (
        "candidate, rank 4-10",
        'NOT "chosen" AND "rank" > 3 AND "rank" <= 10',
        {
            "color": "0,200,255,20",
            "outline_color": "0,200,255,150",
            "outline_width": "0.35",
            "outline_style": "dash",
        },
    ),
    (
        "candidate, rank 11 and lower",
        'NOT "chosen" AND "rank" > 10',
        {
            "color": "0,0,0,0",
            "outline_color": "0,200,255,90",
            "outline_width": "0.26",
            "outline_style": "dash",
        },
    ),
)


def style_probability(layer: QgsRasterLayer) -> None:
    """Colour a probability raster with :data:`PROBABILITY_RAMP` (transparent at 0)."""
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(
        [
            QgsColorRampShader.ColorRampItem(value, color, label)
            for value, color, label in PROBABILITY_RAMP
        ]
    )
    shader = QgsRasterShader(0.0, 1.0)
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)
    layer.setOpacity(RASTER_OPACITY)
    layer.triggerRepaint()


def style_polygons(layer: QgsVectorLayer) -> None:
    """Draw polygons with a semi-transparent fill and a solid outline."""
    layer.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple(POLYGON_STYLE)))
    layer.triggerRepaint()


def style_candidates(layer: QgsVectorLayer) -> None:
    """Grade a candidate layer by ``rank`` with :data:`CANDIDATE_RULES` (chosen on top)."""
    root = QgsRuleBasedRenderer.Rule(None)
    for label, expression, style in CANDIDATE_RULES:
        root.appendChild(
            QgsRuleBasedRenderer.Rule(QgsFillSymbol.createSimple(style), 0, 0, expression, label)
        )
    renderer = QgsRuleBasedRenderer(root)
    # Low ranks are drawn last, so the chosen referent is never under another candidate.
    renderer.setOrderBy(
        QgsFeatureRequest.OrderBy([QgsFeatureRequest.OrderByClause('"rank"', False)])
    )
    renderer.setOrderByEnabled(True)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_result(layer: QgsMapLayer) -> None:
    """Style a result layer by its type (raster or polygons)."""
    if isinstance(layer, QgsRasterLayer):
        style_probability(layer)
    elif isinstance(layer, QgsVectorLayer):
        style_polygons(layer)


class ResultStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles a result layer as Processing loads it into the project."""

    # Processing holds post-processors by C++ pointer and uses them after the algorithm has
    # returned; Python references keep them from being garbage-collected before that.
    _alive: ClassVar[list[ResultStyler]] = []

    def __init__(self, style: Callable[[QgsMapLayer], None] = style_result) -> None:
        super().__init__()
        self.style = style

    def postProcessLayer(
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        """Apply the style function (default :func:`style_result`) to ``layer``."""
        self.style(layer)

    @classmethod
    def create(cls, style: Callable[[QgsMapLayer], None] = style_result) -> ResultStyler:
        """A new post-processor (one per layer: Processing takes ownership of each)."""
        styler = cls(style)
        cls._alive.append(styler)
        return styler


def load_on_completion(
    context: QgsProcessingContext,
    path: str,
    name: str,
    is_raster: bool,
    output_name: str = "",
    queue: bool = False,
    candidates: bool = False,
) -> None:
    """Name and style ``path`` for when Processing loads it into the project.

    Destinations the user asked to open are already queued by Processing: only their name and
    style are set (and a destination the user chose not to open stays closed). Files the
    algorithm names itself (batch results) are queued here with ``queue``.

    Args:
        context: The algorithm's context.
        path: The result file.
        name: Layer name.
        is_raster: Whether it is a raster (else polygons).
        output_name: The algorithm output the layer belongs to (for queued files).
        queue: Queue the file for loading when Processing has not (and there is a project).
        candidates: It is a candidate layer: styled by rank (:func:`style_candidates`).
    """
    if context.willLoadLayerOnCompletion(path):
        details = context.layerToLoadOnCompletionDetails(path)
        details.name = name
    elif queue and context.project() is not None:
        hints = QgsProcessingUtils.LayerHint
        hint = hints.Raster if is_raster else hints.Vector
        context.addLayerToLoadOnCompletion(
            path, QgsProcessingContext.LayerDetails(name, context.project(), output_name, hint)
        )
        details = context.layerToLoadOnCompletionDetails(path)
    else:
        return
    details.setPostProcessor(ResultStyler.create(style_candidates if candidates else style_result))
