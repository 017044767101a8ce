"""LGCE: the RefSegRS baseline, LAVT with language-guided cross-scale enhancement.

The model of Yuan et al., "RRSIS: Referring Remote Sensing Image Segmentation" (TGRS 2024).

Data flow for images ``(B, 3, S, S)`` and one tokenized expression per image::

    BERT(words) -> word features (B, T, D_t)
    Swin patch embedding -> for stage i in 1..4:
        x = stage_i(x)                       (timm: PatchMerging, then the Swin blocks)
        m_i = PWAM(x, words)                 (pixel-word attention: language-aware map)
        x = x + tanh-gate(m_i) * m_i         (language pathway; stages 1-3)
        F_i = LayerNorm(m_i)                 (what the decoder reads)
    F_3' = LGCE(F_3, F_4, sentence)          (sentence = masked mean of the words)
    decoder(F_4, F_3', F_2, F_1) -> logits at stride 4 -> bilinear to (B, S, S)

Paper facts (RefSegRS / LAVT, as the papers describe them):

- Swin-B (window 12) image encoder and BERT-base text encoder, 480 x 480 inputs, 20 tokens.
- After every Swin stage a PWAM: the pixels attend to the words (scaled dot product, padding
  words masked), the attended language features multiply element-wise a projection of the
  visual features; a tanh-gated residual adds the result back into the visual stream (LAVT's
  language pathway); the decoder reads the PWAM outputs.
- LGCE enhances the stage-3 features with the deepest (stage-4) ones under the guidance of a
  sentence-level feature, and the enhanced map feeds the decoder.
- LAVT's progressive decoder: top-down, upsample, concatenate the next finer level, two
  3x3 conv-BN-ReLU, hidden width C_4 / 2; a 1x1 conv to the logits, bilinear to the input size.

Our choices (the paper text leaves them open or we depart on purpose):

- LGCE's exact layers: the sentence vector (masked mean of BERT's word features) gives a
  per-channel sigmoid weight of the stage-4 map; a 1x1 conv-BN brings it to C_3 channels, it is
  upsampled (bilinear) to stage 3's grid, concatenated with F_3, fused by a 3x3 conv-BN-ReLU
  and added to F_3 as a residual (so an untrained LGCE starts close to the plain LAVT path).
- The gate: LAVT zero-initialises both of its linear layers, and then neither ever receives a
  gradient (ReLU(0) = 0 feeds the second, the zero second blocks the first): the language
  pathway would stay closed. We zero only the second one: the gate still opens at exactly 0,
  the second layer learns from the first step, the first one from the second step on.
- No gate after stage 4: nothing reads the visual stream after the last stage, so that gate
  (present in LAVT) would be a parameter without gradient.
- One mask logit per pixel (LAVT: two-class logits) and no presence head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.nn.checkpointing import (
    checkpoint_tokenizer,
    family_config,
    load_strictly,
    save_checkpoint,
    weights_of,
)
from rrsis_geo.nn.crobim import TextState, text_pass
from rrsis_geo.nn.encoders import TextEncoder, create_timm_model, load_tokenizer
from rrsis_geo.nn.family import encoders_summary
from rrsis_geo.nn.lgce_config import LGCEConfig, SwinConfig, named_config
from rrsis_geo.nn.lgfa import masked_mean

__all__ = [
    "ARCHITECTURE",
    "LGCE",
    "CrossScaleEnhancement",
    "LGCEOutput",
    "LanguageGate",
    "PixelWordAttention",
    "ProgressiveDecoder",
    "SwinStages",
]

ARCHITECTURE = "lgce"
"""The ``architecture`` of LGCE checkpoints (the registry dispatches on it)."""
TEXT_PREFIX = "text."


class SwinStages(nn.Module):
    """A timm Swin Transformer as its patch embedding and 4 stages (head and final norm dropped).

    Stages take and return NHWC maps; stage ``i > 1`` starts with its patch merging.

    Attributes:
        channels: Channels of the 4 stages' outputs (strides 4, 8, 16, 32).
    """

    def __init__(self, config: SwinConfig, pretrained: bool = True) -> None:
        super().__init__()
        hub = pretrained and config.weights == "timm"
        swin = create_timm_model(config.name, hub, num_classes=0, **config.kwargs)
        parts: Any = swin  # timm's Swin: patch_embed, layers (the 4 stages), feature_info
        self.patch_embed: nn.Module = parts.patch_embed
        self.stages = nn.ModuleList(parts.layers)
        self.channels: list[int] = [int(info["num_chs"]) for info in parts.feature_info]
        if len(self.stages) != 4:
            raise ValueError(f"{config.name}: LGCE needs a 4-stage Swin, not {len(self.stages)}")


class PixelWordAttention(nn.Module):
    """LAVT's PWAM: every pixel attends to the words; the result gates a visual projection.

    Shapes: pixels ``(B, N, C)``, words ``(B, T, D_t)``, mask ``(B, T)`` -> ``(B, N, C)``.
    Padding words (mask 0) get no attention weight and carry no value, so the output does not
    depend on how much padding follows the sentence.
    """

    def __init__(self, dim: int, text_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{dim} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.visual = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(text_dim, dim)
        self.value = nn.Linear(text_dim, dim)
        self.attended = nn.Linear(dim, dim)
        self.fused = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))

    def forward(
        self, pixels: torch.Tensor, words: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Language-aware pixel features ``(B, N, C)``."""
        batch, count, dim = pixels.shape
        heads = self.num_heads
        # LAVT instance-normalises the queries and the attended values over the pixels.
        query = _instance_norm(self.query(pixels))
        query = query.reshape(batch, count, heads, dim // heads).transpose(1, 2)
        # Padding words are zeroed as well as masked (as LAVT does): a sentence of padding
        # alone then attends to nothing rather than to the mean of its padding.
        keep = mask.to(words.dtype).unsqueeze(-1)
        key = (self.key(words) * keep).reshape(batch, -1, heads, dim // heads).transpose(1, 2)
        value = (self.value(words) * keep).reshape(batch, -1, heads, dim // heads).transpose(1, 2)
        similarity = query @ key.transpose(-1, -2) * dim**-0.5  # (B, heads, N, T)
        padding = ~mask.bool()[:, None, None, :]
        similarity = similarity.masked_fill(padding, torch.finfo(similarity.dtype).min)
        attended = (similarity.softmax(dim=-1) @ value).transpose(1, 2).reshape(batch, count, dim)
        language = _instance_norm(self.attended(attended))
        return self.fused(self.visual(pixels) * language)


def _instance_norm(tokens: torch.Tensor) -> torch.Tensor:
    """Normalise ``(B, N, C)`` per image and channel over the N positions (no affine)."""
    return F.instance_norm(tokens.transpose(1, 2)).transpose(1, 2)


class LanguageGate(nn.Module):
    """LAVT's language pathway gate: ``tanh(W2 ReLU(W1 m))``, per position and channel.

    ``W2`` starts at zero, so the gate starts closed (the visual stream is the plain Swin one)
    while still receiving gradient; see the module docstring on LAVT's double zero start.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """Gate values in (-1, 1), shaped like ``fused``."""
        return torch.tanh(self.out(F.relu(self.hidden(fused))))


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """A conv (no bias), batch norm and ReLU, keeping the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CrossScaleEnhancement(nn.Module):
    """LGCE: the sentence weighs the deep (stage-4) map, which then enhances stage 3.

    Shapes: shallow ``(B, C3, H, W)``, deep ``(B, C4, h, w)``, sentence ``(B, D_t)`` ->
    ``(B, C3, H, W)``.
    """

    def __init__(self, shallow_channels: int, deep_channels: int, text_dim: int) -> None:
        super().__init__()
        self.sentence_weights = nn.Linear(text_dim, deep_channels)
        self.deep = nn.Sequential(
            nn.Conv2d(deep_channels, shallow_channels, 1, bias=False),
            nn.BatchNorm2d(shallow_channels),
        )
        self.fuse = conv_bn_relu(2 * shallow_channels, shallow_channels)

    def forward(
        self, shallow: torch.Tensor, deep: torch.Tensor, sentence: torch.Tensor
    ) -> torch.Tensor:
        """The enhanced shallow map."""
        weights = torch.sigmoid(self.sentence_weights(sentence))[:, :, None, None]
        guided = self.deep(deep * weights)
        guided = F.interpolate(
            guided, size=shallow.shape[-2:], mode="bilinear", align_corners=False
        )
        return shallow + self.fuse(torch.cat([shallow, guided], dim=1))


class ProgressiveDecoder(nn.Module):
    """LAVT's simple decoder: stage 4 -> 3 -> 2 -> 1, two conv-BN-ReLU per step, 1 logit.

    Shapes: 4 maps ``(B, C_i, H_i, W_i)``, finest first -> logits ``(B, 1, H_1, W_1)``.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        hidden = channels[3] // 2
        inputs = [channels[3] + channels[2], hidden + channels[1], hidden + channels[0]]
        self.steps = nn.ModuleList(
            nn.Sequential(conv_bn_relu(width, hidden), conv_bn_relu(hidden, hidden))
            for width in inputs
        )
        self.logits = nn.Conv2d(hidden, 1, 1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Logits at the finest level's resolution."""
        decoded = levels[3]
        for step, finer in zip(self.steps, (levels[2], levels[1], levels[0]), strict=True):
            decoded = F.interpolate(
                decoded, size=finer.shape[-2:], mode="bilinear", align_corners=True
            )
            decoded = step(torch.cat([decoded, finer], dim=1))
        return self.logits(decoded)


@dataclass
class LGCEOutput:
    """Model outputs: ``mask_logits`` ``(B, S, S)``; LGCE has no presence head (None)."""

    mask_logits: torch.Tensor
    presence_logits: torch.Tensor | None = None


class LGCE(nn.Module):
    """The RefSegRS baseline on a timm Swin and a transformers text encoder.

    Args:
        config: The architecture (see :mod:`rrsis_geo.nn.lgce_config`).
        pretrained: Load the encoders' pretrained weights (False when a checkpoint will
            provide every weight).
        text: An already built text encoder to use instead of building one from ``config``.
    """

    config_class = LGCEConfig
    """Its config: ``from_dict``, ``to_dict``, the inference fields."""

    def __init__(
        self, config: LGCEConfig, pretrained: bool = True, text: TextEncoder | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.vision = SwinStages(config.vision, pretrained)
        self.text = text if text is not None else TextEncoder(config.text, pretrained)
        channels, text_dim = self.vision.channels, self.text.dim
        self.fusions = nn.ModuleList(
            PixelWordAttention(width, text_dim, heads, config.fusion_dropout)
            for width, heads in zip(channels, config.fusion_heads, strict=True)
        )
        self.gates = nn.ModuleList(LanguageGate(width) for width in channels[:3])
        self.norms = nn.ModuleList(nn.LayerNorm(width) for width in channels)
        self.enhancement = CrossScaleEnhancement(channels[2], channels[3], text_dim)
        self.decoder = ProgressiveDecoder(channels)

    @classmethod
    def from_config(cls, name_or_config: str | LGCEConfig, pretrained: bool = True) -> LGCE:
        """Build an untrained model from a named config or a config object."""
        config = named_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
        return cls(config, pretrained)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextState:
        """The text pass: once per expression, whatever the number of images."""
        return text_pass(self.text, input_ids, attention_mask)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text: TextState | None = None,
        image_index: torch.Tensor | None = None,
        select: bool = True,
    ) -> LGCEOutput:
        """Mask logits ``(B, S, S)``.

        Args:
            images: ``(B, 3, S, S)``, normalized.
            input_ids: ``(B, T)`` token ids (when ``text`` is not given).
            attention_mask: ``(B, T)``, 1 for real tokens.
            text: A :class:`~rrsis_geo.nn.crobim.TextState` from :meth:`encode_text`.
            image_index: ``(N,)``: expression ``i`` is about ``images[image_index[i]]``. The
                language enters the image encoder from its first stage, so nothing is shared:
                the images are repeated.
            select: Ignored (LGCE has no object selector); accepted for CroBIM's callers.
        """
        if text is None:
            if input_ids is None or attention_mask is None:
                raise ValueError("give input_ids and attention_mask, or text")
            text = self.encode_text(input_ids, attention_mask)
        if image_index is not None:
            images = images.index_select(0, image_index)
        text = text.expand(images.shape[0])
        levels = self.encode_image(images, text.features, text.attention_mask)
        sentence = masked_mean(text.features, text.attention_mask)
        levels[2] = self.enhancement(levels[2], levels[3], sentence)
        logits = self.decoder(levels)
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=True)
        return LGCEOutput(logits[:, 0])

    def encode_image(
        self, images: torch.Tensor, words: torch.Tensor, mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """The language-aware Swin: 4 maps ``(B, C_i, H_i, W_i)`` (PWAM outputs), finest first."""
        visual = self.vision.patch_embed(images)  # NHWC
        levels = []
        for index, stage in enumerate(self.vision.stages):
            visual = stage(visual)
            batch, height, width, channels = visual.shape
            fused = self.fusions[index](visual.reshape(batch, -1, channels), words, mask)
            fused = fused.reshape(batch, height, width, channels)
            if index < len(self.gates):
                visual = visual + self.gates[index](fused) * fused
            levels.append(self.norms[index](fused).permute(0, 3, 1, 2).contiguous())
        return levels

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: vision, text, fusion (PWAM, gates, norms), lgce, decoder."""
        parts: dict[str, list[nn.Module]] = {
            "vision": [self.vision],
            "text": [self.text],
            "fusion": [self.fusions, self.gates, self.norms],
            "lgce": [self.enhancement],
            "decoder": [self.decoder],
        }
        return {
            name: sum(p.numel() for module in modules for p in module.parameters())
            for name, modules in parts.items()
        }

    def save_pretrained(
        self,
        folder: str | Path,
        tokenizer: Any = None,
        include_text_encoder: bool = True,
        half: bool = False,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` into ``folder``.

        Args:
            folder: Created if missing; existing files of a checkpoint are replaced.
            tokenizer: The tokenizer to store (default: the config's).
            include_text_encoder: False leaves out the text encoder's weights, which are then
                loaded from the config's source on load: only valid when not fine-tuned.
            half: Store floating-point tensors as float16 (loading casts them back).

        Returns:
            The folder.
        """
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.config.text)
        return save_checkpoint(self, folder, ARCHITECTURE, tokenizer, include_text_encoder, half)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, document: dict[str, Any] | None = None, sha256: str | None = None
    ) -> tuple[LGCE, Any]:
        """Load a local checkpoint folder; returns ``(model, tokenizer)``.

        The weights' sha256 is checked when ``config.json`` pins one, and loading is strict:
        missing or unexpected keys are an error naming them.

        Args:
            folder: The checkpoint folder.
            document: Its ``config.json``, when the caller read it already.
            sha256: The weights' sha256, when the caller computed it already.

        Raises:
            InputError: Missing, corrupted or mismatched checkpoints.
        """
        folder = Path(folder)
        document, config = family_config(folder, document, ARCHITECTURE, LGCEConfig)
        weights_path = weights_of(folder, document, sha256)
        text_from_source = document.get("weights", {}).get("text_encoder") == "from_source"
        # Inference never falls back to random weights: a missing text source is an error.
        text = TextEncoder(config.text, pretrained=text_from_source, allow_random=False)
        model = cls(config, pretrained=False, text=text)
        load_strictly(model, weights_path, config.name, skip_text=text_from_source)
        return model.eval(), checkpoint_tokenizer(folder, document, config.text)

    @staticmethod
    def summary(config: LGCEConfig) -> dict[str, Any]:
        """What inference reads from a config, and the encoders, for ``rrsis models``."""
        return encoders_summary(config)
