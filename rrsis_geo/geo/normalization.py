"""Per-scene normalization: statistics computed once, applied identically to every tile.

Normalizing each tile by its own min and max (what several tools do) maps the same pixel value
differently in neighbouring tiles and leaves seams. Here a scene's statistics are computed once,
from overviews when the file has them and from a regular sample of block-aligned windows when it
does not, and every tile goes through the same affine map:

1. stretch: ``(value - low) / (high - low)``, clipped to [0, 1], with ``low``/``high`` either the
   scene's percentiles (default 2 and 98) or fixed values a model declares;
2. standardize: ``(stretched - mean) / std`` with the model's per-band mean and std (0 and 1 when
   the model declares none).

A fixed range describes one pixel type (0-255: 8-bit). A scene of another type (uint16, int16,
float) would be clipped or crushed by it, so :func:`spec_for_dtype` gives it the scene's own
percentile stretch instead (the model's percentiles, 2-98 by default), which maps it to the
model's range; the CLI says so in one warning line.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from rrsis_geo.errors import RrsisWarning

__all__ = [
    "NormalizationSpec",
    "SceneStatistics",
    "ValueRangeWarning",
    "compute_array_statistics",
    "compute_scene_statistics",
    "spec_for_dtype",
]

SAMPLE_PIXELS = 1024 * 1024
"""Rough number of pixels per band used for percentiles."""


@dataclass(frozen=True)
class NormalizationSpec:
    """How a model wants its input scaled; travels in the model's metadata.

    Attributes:
        method: ``"percentile"`` (scene percentiles) or ``"fixed"`` (``low``/``high`` given).
        percentiles: Lower and upper percentile for ``"percentile"``.
        low: Per-band value mapped to 0 for ``"fixed"`` (one value applies to every band).
        high: Per-band value mapped to 1 for ``"fixed"``.
        mean: Per-band mean subtracted after stretching.
        std: Per-band standard deviation divided by after stretching.
    """

    method: str = "percentile"
    percentiles: tuple[float, float] = (2.0, 98.0)
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.method not in ("percentile", "fixed"):
            raise ValueError(f"unknown normalization method {self.method!r}")
        if self.method == "fixed" and (self.low is None or self.high is None):
            raise ValueError("fixed normalization needs low and high")
        lower, upper = self.percentiles
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {lower, upper}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints and sidecars)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalizationSpec:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        for key in ("percentiles", "low", "high", "mean", "std"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


class ValueRangeWarning(RrsisWarning):
    """The scene's pixel type is not the one the model's fixed range describes."""


def _fixed_dtype(spec: NormalizationSpec) -> str | None:
    """The integer pixel type a fixed range describes (0-255: uint8), or None for any."""
    assert spec.low is not None and spec.high is not None
    low, high = min(spec.low), max(spec.high)
    for dtype in ("uint8", "uint16"):
        if 0.0 <= low and high <= np.iinfo(dtype).max and high > np.iinfo(dtype).max / 4:
            return dtype
    return None


def spec_for_dtype(
    spec: NormalizationSpec | None, dtype: str, name: str = "the scene"
) -> NormalizationSpec | None:
    """The normalization for a scene of pixel type ``dtype`` under a model's ``spec``.

    A fixed range of one pixel type (0-255 is 8-bit) is kept for scenes of that type. Any other
    type (uint16, int16, float) gets the scene's percentile stretch to the model's range (the
    spec's percentiles, its mean and std), said in one :class:`ValueRangeWarning`.
    """
    if spec is None or spec.method != "fixed":
        return spec
    expected = _fixed_dtype(spec)
    if expected is None or dtype == expected:
        return spec
    lower, upper = spec.percentiles
    warnings.warn(
        f"{name} is {dtype} and the model expects {expected} values "
        f"({min(spec.low or (0,)):g}-{max(spec.high or (0,)):g}): each band is stretched from "
        f"its {lower:g}-{upper:g} percentiles to the model's range (--percentiles to choose)",
        ValueRangeWarning,
        stacklevel=2,
    )
    return NormalizationSpec(percentiles=spec.percentiles, mean=spec.mean, std=spec.std)


@dataclass(frozen=True)
class SceneStatistics:
    """The affine map applied to every tile of one scene, per band.

    Attributes:
        low: Value mapped to 0 before clipping, per band.
        high: Value mapped to 1 before clipping, per band.
        mean: Subtracted after clipping, per band.
        std: Divided by after clipping, per band.
        source: Where ``low``/``high`` came from (``"overview"``, ``"sample"``, ``"fixed"``).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = field(default="fixed")

    def apply(self, data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalize ``data`` of shape ``(bands, ...)`` into float32.

        Non-finite inputs become 0 (the normalized value of padding) so they cannot poison a
        model's convolution; mark them invalid separately.
        """
        if out is None:
            out = np.empty(data.shape, dtype=np.float32)
        for band in range(data.shape[0]):
            scale = 1.0 / (self.high[band] - self.low[band])
            np.multiply(data[band], np.float32(scale), out=out[band], casting="unsafe")
            out[band] -= np.float32(self.low[band] * scale)
            np.clip(out[band], 0.0, 1.0, out=out[band])
            if self.mean[band] != 0.0 or self.std[band] != 1.0:
                out[band] -= np.float32(self.mean[band])
                out[band] *= np.float32(1.0 / self.std[band])
        if np.issubdtype(data.dtype, np.floating):
            np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written to the provenance sidecar)."""
        return asdict(self)


def _per_band(values: Sequence[float], count: int, name: str) -> tuple[float, ...]:
    if len(values) == 1:
        return tuple(float(values[0]) for _ in range(count))
    if len(values) != count:
        raise ValueError(f"normalization {name} has {len(values)} values for {count} bands")
    return tuple(float(v) for v in values)


def compute_scene_statistics(
    dataset: DatasetReader,
    bands: Sequence[int],
    spec: NormalizationSpec | None = None,
    use_masks: bool = True,
) -> SceneStatistics:
    """Statistics for one scene, computed once before any tile is predicted.

    Args:
        dataset: The raster (or resampling VRT) the tiles are read from.
        bands: 1-based bands, in model order.
        spec: The model's normalization; default: 2-98 percentile stretch.
        use_masks: Exclude nodata pixels from the percentiles.

    Returns:
        The per-band affine map.
    """
    spec = spec or NormalizationSpec()
    if spec.method == "fixed":
        return _statistics_from_samples(spec, None, len(bands), "fixed")
    samples, source = _sample_pixels(dataset, bands, use_masks)
    return _statistics_from_samples(spec, samples, len(bands), source)


def compute_array_statistics(
    data: np.ndarray, spec: NormalizationSpec | None = None, valid: np.ndarray | None = None
) -> SceneStatistics:
    """Statistics of an in-memory image ``(bands, H, W)`` (a benchmark chip), as for a scene."""
    spec = spec or NormalizationSpec()
    if spec.method == "fixed":
        return _statistics_from_samples(spec, None, data.shape[0], "fixed")
    samples = [band[valid] if valid is not None else band.ravel() for band in data]
    return _statistics_from_samples(spec, samples, data.shape[0], "full")


def _statistics_from_samples(
    spec: NormalizationSpec, samples: list[np.ndarray] | None, count: int, source: str
) -> SceneStatistics:
    mean = _per_band(spec.mean, count, "mean")
    std = _per_band(spec.std, count, "std")
    if samples is None:
        assert spec.low is not None and spec.high is not None
        return SceneStatistics(
            _per_band(spec.low, count, "low"), _per_band(spec.high, count, "high"), mean, std
        )
    low: list[float] = []
    high: list[float] = []
    for band_values in samples:
        band_values = band_values[np.isfinite(band_values)].astype(np.float64, copy=False)
        if band_values.size == 0:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = (float(v) for v in np.percentile(band_values, spec.percentiles))
        if hi <= lo:
            hi = lo + 1.0
        low.append(lo)
        high.append(hi)
    return SceneStatistics(tuple(low), tuple(high), mean, std, source)


def _sample_pixels(
    dataset: DatasetReader, bands: Sequence[int], use_masks: bool
) -> tuple[list[np.ndarray], str]:
    """Valid pixel values per band: a decimated read when cheap, else a grid of windows."""
    pixels = dataset.width * dataset.height
    has_overviews = bool(dataset.overviews(bands[0])) if hasattr(dataset, "overviews") else False
    if pixels <= 4 * SAMPLE_PIXELS or has_overviews:
        # GDAL serves a decimated read from the closest overview, so this reads little.
        factor = max(1.0, math.sqrt(pixels / SAMPLE_PIXELS))
        shape = (max(1, round(dataset.height / factor)), max(1, round(dataset.width / factor)))
        data = dataset.read(list(bands), out_shape=(len(bands), *shape))
        valid = dataset.read_masks(list(bands), out_shape=(len(bands), *shape)).any(axis=0)
        source = "overview" if has_overviews and factor > 1 else "full"
        windows = [(data, valid)]
    else:
        windows = []
        for window in _sample_windows(dataset):
            data = dataset.read(list(bands), window=window)
            valid = dataset.read_masks(list(bands), window=window).any(axis=0)
            windows.append((data, valid))
        source = "sample"
    per_band: list[np.ndarray] = []
    for index in range(len(bands)):
        parts = [d[index][v] if use_masks else d[index].ravel() for d, v in windows]
        per_band.append(np.concatenate(parts).astype(np.float64))
    return per_band, source


def _sample_windows(dataset: DatasetReader, side: int = 256, count: int = 16) -> list[Window]:
    """A regular ``count x count`` grid of ``side``-pixel windows, aligned to the file's blocks."""
    block_height, block_width = dataset.block_shapes[0]
    height, width = min(side, dataset.height), min(side, dataset.width)
    n = max(1, min(count, math.isqrt(SAMPLE_PIXELS // (height * width))))
    windows = []
    for i in range(n):
        y = round((dataset.height - height) * (i + 0.5) / n)
        if block_height < dataset.height:
            y = min(y // block_height * block_height, dataset.height - height)
        for j in range(n):
            x = round((dataset.width - width) * (j + 0.5) / n)
            if block_width < dataset.width:
                x = min(x // block_width * block_width, dataset.width - width)
            windows.append(Window(x, y, width, height))
    return windows
