"""What every model family's config shares: named configs, the pretrained config, the summary.

Each family's config dataclass has the same inference fields (``name``, ``in_channels``,
``normalization``, ``input_size``, ``tile_overlap``, ``tile_margin``, ``gsd``, ``threshold``);
these functions read them once for all families.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from rrsis_geo.pretrained import ModelMetadata

__all__ = ["build_named", "pretrained_of", "summary_of"]

Config = TypeVar("Config")


def build_named(configs: Mapping[str, Callable[[], Config]], name: str) -> Config:
    """A fresh copy of the named config ``name`` of ``configs``.

    Raises:
        KeyError: For an unknown name (the message lists the known ones).
    """
    try:
        return configs[name]()
    except KeyError:
        raise KeyError(f"unknown config {name!r}; known: {', '.join(configs)}") from None


def pretrained_of(config: Any, sha256: str | None = None, **more: Any) -> ModelMetadata:
    """The pretrained config (what the scene pipeline reads) of a family's config.

    Args:
        config: The family's config (its inference fields, see the module).
        sha256: Hash of the weights, when known.
        more: Further :class:`~rrsis_geo.pretrained.ModelMetadata` fields the family has
            (``vocabulary``, ``category_areas_m2``).
    """
    return ModelMetadata(
        name=config.name,
        in_channels=config.in_channels,
        normalization=config.normalization,
        tile_size=config.input_size,
        overlap=config.tile_overlap,
        margin=config.tile_margin,
        gsd=config.gsd,
        threshold=config.threshold,
        sha256=sha256,
        **more,
    )


def summary_of(config: Any, text: Any, vision: str, text_name: str) -> dict[str, Any]:
    """What ``rrsis models`` shows of a config: its inference fields, tokens and encoders.

    Args:
        config: The family's config.
        text: Its tokenizer's settings (``max_tokens``, ``tokenizer``, ``name``).
        vision: The image encoder, in words.
        text_name: The text encoder, in words.
    """
    return {
        "bands": config.in_channels,
        "normalization": config.normalization.to_dict(),
        "gsd": config.gsd,
        "tile_size": config.input_size,
        "tile_overlap": config.tile_overlap,
        "tile_margin": config.tile_margin,
        "threshold": config.threshold,
        "max_tokens": text.max_tokens,
        "tokenizer": text.tokenizer or text.name,
        "vision": vision,
        "text": text_name,
    }
