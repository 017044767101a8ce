"""rrsis_geo: referring remote sensing image segmentation on georeferenced scenes.

Given a raster and a sentence ("the largest storage tank"), the toolkit returns the referred
object as a georeferenced probability raster and as polygons. Data flows one way:
raster -> tiles -> model -> stitched probabilities -> raster / polygons.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
