"""What every model family's config shares: named configs, the pretrained config, the summary.

Each family's config dataclass has the same inference fields (``name``, ``in_channels``,
``normalization``, ``input_size``, ``tile_overlap``, ``tile_margin``, ``gsd``, ``threshold``;
CroBIM also ``vocabulary`` and ``category_areas_m2``): its *pretrained config*
(:class:`~rrsis_geo.pretrained.ModelMetadata`). A checkpoint stores them in their own
``pretrained`` block and the rest, the architecture, in ``config``; these functions do that
once for all families.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from rrsis_geo.pretrained import ModelMetadata

__all__ = [
    "PRETRAINED_NAMES",
    "build_named",
    "check_keys",
    "encoders_summary",
    "joined_config",
    "pretrained_fields",
    "pretrained_of",
    "split_config",
    "summary_of",
    "weight_source",
]

Config = TypeVar("Config")


def check_keys(config_class: Any, data: Mapping[str, Any], family: str) -> None:
    """Refuse keys a family's config dataclass does not have (``from_dict``'s first check).

    Raises:
        ValueError: Naming the unknown keys.
    """
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        raise ValueError(f"unknown {family} config keys: {', '.join(unknown)}")


def build_named(configs: Mapping[str, Callable[[], Config]], name: str) -> Config:
    """A fresh copy of the named config ``name`` of ``configs``.

    Raises:
        KeyError: For an unknown name (the message lists the known ones).
    """
    try:
        return configs[name]()
    except KeyError:
        raise KeyError(f"unknown config {name!r}; known: {', '.join(configs)}") from None


PRETRAINED_NAMES = {"tile_size": "input_size", "overlap": "tile_overlap", "margin": "tile_margin"}
"""Fields of the pretrained config whose family config attribute has another name."""


def pretrained_fields(config_class: Any) -> dict[str, str]:
    """The pretrained config's fields a family's config holds: field -> config attribute."""
    held = {f.name for f in dataclasses.fields(config_class)}
    names = (f.name for f in dataclasses.fields(ModelMetadata) if f.name not in ("sha256", "extra"))
    return {n: PRETRAINED_NAMES.get(n, n) for n in names if PRETRAINED_NAMES.get(n, n) in held}


def pretrained_of(config: Any, sha256: str | None = None) -> ModelMetadata:
    """The pretrained config (what the scene pipeline reads) of a family's config.

    Args:
        config: The family's config (its inference fields, see the module).
        sha256: Hash of the weights, when known.
    """
    values = {key: getattr(config, name) for key, name in pretrained_fields(type(config)).items()}
    if "vocabulary" in values:
        values["vocabulary"] = tuple(values["vocabulary"])
    if "category_areas_m2" in values:
        values["category_areas_m2"] = dict(values["category_areas_m2"])
    return ModelMetadata(**values, sha256=sha256)


def split_config(config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A family's config as a checkpoint stores it: the architecture, the pretrained config.

    Each value is in one of the two: the pretrained block holds the inference fields (what
    :func:`pretrained_of` gives), the architecture block every other field.
    """
    held = set(pretrained_fields(type(config)).values())
    architecture = {k: v for k, v in config.to_dict().items() if k not in held}
    return architecture, pretrained_of(config).to_dict()


def joined_config(config_class: Any, document: dict[str, Any]) -> Any:
    """The family's config of a checkpoint's ``config.json``: both blocks joined.

    The ``pretrained`` block is the authority on the inference fields (threshold, tile size,
    normalization...): the pipeline, training and evaluation then read the same values.
    Checkpoints written before the split, with every field in ``config``, load as they are.

    Raises:
        KeyError, TypeError, ValueError: An invalid block (from the config's ``from_dict``).
    """
    values = dict(document["config"])
    block = document.get("pretrained")
    if block is not None:
        for key, name in pretrained_fields(config_class).items():
            if key in block:
                values[name] = block[key]
    return config_class.from_dict(values)


def weight_source(name: str, weights: str | None) -> str | None:
    """Where an encoder's weights come from; None when it starts random.

    A ``package:`` source, else the encoder's own name (timm, a hub id or a folder); ``weights``
    None or ``"random"`` means random.
    """
    if not weights or weights == "random":
        return None
    return weights if weights.startswith("package:") else name


def summary_of(
    config: Any, text: Any, vision: str, text_name: str, sources: tuple[str | None, ...]
) -> dict[str, Any]:
    """What ``rrsis models`` shows of a config: its inference fields, tokens and encoders.

    Args:
        config: The family's config.
        text: Its tokenizer's settings (``max_tokens``, ``tokenizer``, ``name``).
        vision: The image encoder, in words.
        text_name: The text encoder, in words.
        sources: Where its pretrained weights come from (hub ids, timm names, packages; None
            for a part that starts random).
    """
    return {
        "sources": [source for source in sources if source],
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


def encoders_summary(config: Any) -> dict[str, Any]:
    """:func:`summary_of` a config with a ``vision`` and a ``text`` encoder (CroBIM, LGCE)."""
    vision, text = config.vision, config.text
    sources = (weight_source(vision.name, vision.weights), weight_source(text.name, text.weights))
    return summary_of(config, text, vision.name, text.name, sources)
