"""A model's pretrained configuration: what it wants of its input, and how to use its output.

It lives on the ground floor, below the model families (:mod:`rrsis_geo.nn`) that declare it
and the scene pipeline (:mod:`rrsis_geo.inference`) that reads it, so that neither imports the
other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from rrsis_geo.geo.normalization import NormalizationSpec

__all__ = ["ModelMetadata"]


@dataclass(frozen=True)
class ModelMetadata:
    """What a model declares about the input it wants; the pipeline's defaults come from here.

    Attributes:
        name: Identifier written into outputs.
        in_channels: Number of bands the model takes.
        normalization: How to scale inputs; None means a 2-98 percentile stretch per scene.
        tile_size: Preferred tile side in pixels.
        overlap: Preferred overlap between tiles in pixels.
        margin: Border pixels to discard on interior tile sides (the model's context radius).
        gsd: Ground resolution in metres per pixel the model was trained at, or None.
        threshold: Probability at or above which a pixel belongs to the referent.
        sha256: Hash of the weights, when the model has a checkpoint.
        vocabulary: The object categories the model tells apart; the scene strategy checks
            candidates against them (empty: no check).
        category_areas_m2: ``(smallest, largest)`` area in m² of each category's objects in
            the model's training data (the check rejects candidates far under the smallest).
        extra: Anything else a model declares.
    """

    name: str = "unnamed"
    in_channels: int = 3
    normalization: NormalizationSpec | None = None
    tile_size: int = 512
    overlap: int = 64
    margin: int = 16
    gsd: float | None = None
    threshold: float = 0.5
    sha256: str | None = None
    vocabulary: tuple[str, ...] = ()
    category_areas_m2: dict[str, tuple[float, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``pretrained`` block (JSON-ready; the weights' hash is not in it)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sha256"}
        normalization = self.normalization
        values["normalization"] = None if normalization is None else normalization.to_dict()
        values["vocabulary"] = list(self.vocabulary)
        values["category_areas_m2"] = {k: list(v) for k, v in self.category_areas_m2.items()}
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], sha256: str | None = None) -> ModelMetadata:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them.

        Raises:
            ValueError: For unknown keys.
        """
        known = {f.name for f in fields(cls)} - {"sha256"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown pretrained config keys: {', '.join(unknown)}")
        data = dict(values)
        if data.get("normalization") is not None:
            data["normalization"] = NormalizationSpec.from_dict(data["normalization"])
        data["vocabulary"] = tuple(data.get("vocabulary", ()))
        areas = data.get("category_areas_m2", {})
        data["category_areas_m2"] = {k: (float(v[0]), float(v[1])) for k, v in areas.items()}
        return replace(cls(**data), sha256=sha256)
