"""Checking candidates against the other categories a model knows.

A description pass marks every region the model finds "storage tank"-like, and in a scene of
thousands of objects a few are something else: a red vehicle in a pass of "The building.", a
wing in one of "The vehicle.". Ranked by "the smallest" or "the northernmost", such a false
positive is exactly what wins. The check asks the model the question the other way round: on a
chip centred on the region, which category of its vocabulary (``ModelMetadata.vocabulary``)
covers the region best? A region that reads as another category is rejected
(:class:`~rrsis_geo.inference.regions.Verdict`). So is a region far smaller than any object of
its category the model was trained on (``ModelMetadata.category_areas_m2``), unless the model,
centred on it, sees it as part of a whole object of its category: then the region is *mended*
to that object (the pass found a piece of a wing; the chip shows the airplane). A region a
little under its category's smallest that also reads as a category of its size is that one (a
bus is no building).

The check is not a second tiling loop: it reads one chip per region it is asked about (all the
categories in one model call, the chip seen once by the vision encoder), and the
ranking asks only about the regions it is about to choose
(:func:`~rrsis_geo.inference.referring.rank_regions`), so its cost is one model call per
category for a few chips, not a pass over the scene.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rasterio.features import rasterize, shapes
from rasterio.windows import Window
from shapely.geometry import shape
from shapely.ops import unary_union

from rrsis_geo.geo.normalization import SceneStatistics
from rrsis_geo.geo.reading import OpenedScene, has_nodata
from rrsis_geo.geo.vectorize import areas_m2
from rrsis_geo.inference.model import SegmentationModel, encode_sentence, predict_many
from rrsis_geo.inference.regions import Region, Verdict

__all__ = ["CandidateChecker", "description_category"]


def description_category(description: str, vocabulary: Sequence[str]) -> str | None:
    """The vocabulary category a description names, or None when it names none.

    The longest category found as whole words wins: "white storage tank" is a "storage tank",
    not a "tank".
    """
    found = [c for c in vocabulary if re.search(rf"\b{re.escape(c)}\b", description, re.IGNORECASE)]
    return max(found, key=len) if found else None


def chip_window(
    box: tuple[float, float, float, float], size: int, width: int, height: int
) -> Window:
    """A ``size``-pixel window centred on a pixel box ``(x0, y0, x1, y1)``, inside the raster.

    Rasters smaller than ``size`` give the whole raster (the chip is padded, as edge tiles are).
    """
    x0, y0, x1, y1 = box
    column = round((x0 + x1 - size) / 2)
    row = round((y0 + y1 - size) / 2)
    column = max(0, min(column, width - size))
    row = max(0, min(row, height - size))
    return Window(column, row, min(size, width), min(size, height))


class CandidateChecker:
    """Reads what regions of one opened scene are, by the model's vocabulary.

    Args:
        scene: The opened scene the regions were found in (regions in its CRS).
        model: The model that found them.
        statistics: The scene's normalization (the passes').
        vocabulary: The categories to tell apart.
        tile_size: Chip side in pixels (the model's tile).
        batch_size: Chip-category pairs per model call.
        threshold: The score a region's own category needs (the passes' threshold).
        areas: ``(smallest, largest)`` area in m² of each category's objects in the model's
            training data (``ModelMetadata.category_areas_m2``); a category without one has
            no size check.
    """

    def __init__(
        self,
        scene: OpenedScene,
        model: SegmentationModel,
        statistics: SceneStatistics,
        vocabulary: Sequence[str],
        tile_size: int,
        batch_size: int = 8,
        threshold: float = 0.5,
        areas: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.scene, self.model, self.statistics = scene, model, statistics
        self.vocabulary = tuple(vocabulary)
        self.areas = dict(areas or {})
        self.tile_size, self.batch_size = tile_size, max(1, batch_size)
        self.threshold = threshold
        self._encoded: dict[str, Any] = {}
        self.regions_checked = 0
        self.forwards = 0
        self.seconds = 0.0

    def __call__(self, regions: Sequence[Region], description: str) -> None:
        """Give every region not yet checked its :attr:`~Region.verdict`.

        Regions of a description that names no category of the vocabulary stay unchecked.
        """
        category = description_category(description, self.vocabulary)
        todo = [r for r in regions if r.verdict is None]
        if category is None or not todo:
            return
        started = time.perf_counter()
        self.regions_checked += len(todo)
        # Like a pass's, a call holds batch_size chip-category pairs (see predict_scene).
        per_call = max(1, self.batch_size // len(self.vocabulary))
        for first in range(0, len(todo), per_call):
            batch = todo[first : first + per_call]
            chips, masks, windows = self._chips(batch)
            encodings = [self._encode(c) for c in self.vocabulary]
            predictions = predict_many(self.model, chips, encodings)
            self.forwards += len(chips) * len(encodings)
            own = predictions[self.vocabulary.index(category)].probabilities
            for index, region in enumerate(batch):
                mask = masks[index]
                speck = Verdict(category, {}, self.threshold, region.area_m2, self.areas)
                if speck.too_small:
                    mask = self._mend(region, own[index] >= self.threshold, mask, windows[index])
                scores = {
                    c: _mean_under(prediction.probabilities[index], mask)
                    for c, prediction in zip(self.vocabulary, predictions, strict=True)
                }
                region.verdict = Verdict(
                    category, scores, self.threshold, region.area_m2, self.areas
                )
        self.seconds += time.perf_counter() - started

    def judges_size(self, description: str) -> bool:
        """True when the description names a category whose trained sizes are known."""
        return description_category(description, self.vocabulary) in self.areas

    def _mend(
        self, region: Region, marked: np.ndarray, mask: np.ndarray, window: Window
    ) -> np.ndarray:
        """Grow a speck to the object it is part of on its chip; the mask to read scores under.

        The object is every connected part of the chip's own-category mask that the speck
        touches. A speck the chip shows no larger stays as it is (and is rejected as a speck).
        """
        height, width = int(window.height), int(window.width)
        transform = self.scene.dataset.window_transform(window)
        found = shapes(
            marked[:height, :width].astype(np.uint8),
            mask=marked[:height, :width],
            transform=transform,
        )
        parts = [shape(geometry) for geometry, _ in found]
        touching = [part for part in parts if part.intersects(region.geometry)]
        if not touching:
            return mask
        geometry = unary_union(touching)
        area = areas_m2([geometry], self.scene.dataset.crs)[0]
        if area <= region.area_m2:
            return mask
        region.mended_from, region.area_m2 = region.area_m2, area
        region.geometry = geometry
        whole = np.zeros_like(mask)
        whole[:height, :width] = rasterize(
            touching, out_shape=(height, width), transform=transform, dtype="uint8"
        ).astype(bool)
        return whole

    def _encode(self, category: str) -> Any:
        if category not in self._encoded:
            self._encoded[category] = encode_sentence(self.model, f"The {category}.", True)
        return self._encoded[category]

    def _chips(
        self, regions: Sequence[Region]
    ) -> tuple[np.ndarray, list[np.ndarray], list[Window]]:
        dataset, size = self.scene.dataset, self.tile_size
        bands = list(self.scene.bands)
        inverse = ~dataset.transform
        chips = np.zeros((len(regions), len(bands), size, size), dtype=np.float32)
        masks, windows = [], []
        nodata = has_nodata(dataset, bands)
        for index, region in enumerate(regions):
            corners = [inverse * xy for xy in region.geometry.envelope.exterior.coords]
            xs, ys = zip(*corners, strict=True)
            box = (min(xs), min(ys), max(xs), max(ys))
            window = chip_window(box, size, dataset.width, dataset.height)
            height, width = int(window.height), int(window.width)
            pixels = dataset.read(bands, window=window)
            self.statistics.apply(pixels, out=chips[index, :, :height, :width])
            if nodata:
                valid = dataset.read_masks(bands[0], window=window) > 0
                chips[index, :, :height, :width][:, ~valid] = 0.0
            mask = np.zeros((size, size), dtype=bool)
            mask[:height, :width] = rasterize(
                [region.geometry],
                out_shape=(height, width),
                transform=dataset.window_transform(window),
                all_touched=True,
                dtype="uint8",
            ).astype(bool)
            masks.append(mask)
            windows.append(window)
        return chips, masks, windows


def _mean_under(probabilities: np.ndarray, mask: np.ndarray) -> float:
    """Mean probability under a chip's region mask (0 for an empty mask)."""
    return float(probabilities[mask].mean()) if mask.any() else 0.0
