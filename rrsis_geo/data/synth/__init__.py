"""A seeded synthetic referring benchmark: overhead scenes, objects and expressions.

``render_world`` draws a frame, ``make_expressions`` refers to its objects, ``write_chips``
writes 512 x 512 chips in the RISBench layout and ``write_scene`` a large GeoTIFF with its
ground truth. The same seed gives the same bytes. ``rrsis data synth`` is the command line.
"""

from rrsis_geo.data.synth.export import (
    SCENE_CRS,
    ChipSummary,
    chip_world,
    scene_paths,
    write_chips,
    write_scene,
)
from rrsis_geo.data.synth.expressions import EXPRESSION_TYPES, Expression, make_expressions
from rrsis_geo.data.synth.world import (
    CATEGORIES,
    GSD,
    Road,
    World,
    WorldObject,
    category_areas_m2,
    render_world,
)

__all__ = [
    "CATEGORIES",
    "EXPRESSION_TYPES",
    "GSD",
    "SCENE_CRS",
    "ChipSummary",
    "Expression",
    "Road",
    "World",
    "WorldObject",
    "category_areas_m2",
    "chip_world",
    "make_expressions",
    "render_world",
    "scene_paths",
    "write_chips",
    "write_scene",
]
