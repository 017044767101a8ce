"""The CroBIM predictor: model + tokenizer + normalization, behind the pipeline's protocol.

``CroBIMPredictor.from_pretrained(folder_or_repo_id)`` gives an object that ``rrsis segment``
runs like any other model: the expression is tokenized and its plain text pass run once
(:meth:`encode_expression`); each batch of tiles then goes through the rest of the network under
``torch.inference_mode`` (autocast on GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rrsis_geo.inference.model import ModelMetadata, TilePrediction
from rrsis_geo.inference.torch_model import resolve_device
from rrsis_geo.nn.crobim import CroBIM, TextState

__all__ = ["CroBIMPredictor", "EveryInstance", "ForwardPredictor", "load_predictor", "tokenize"]


@dataclass(frozen=True)
class EveryInstance:
    """A description encoded so that :meth:`CroBIMPredictor.predict` marks every instance.

    With object selection, CroBIM keeps one object per tile and fades the others: right for a
    chip, wrong for a tile of a scene, where the referent may be in another tile. The scene
    strategy reads the mask before selection instead and chooses over the whole scene.
    """

    text: TextState


def tokenize(
    tokenizer: Any, expressions: list[str], max_tokens: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask ``(B, max_tokens)``, padded and truncated."""
    encoded = tokenizer(
        expressions,
        padding="max_length",
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
    )
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)


class CroBIMPredictor:
    """Runs a :class:`~rrsis_geo.nn.crobim.CroBIM` on tiles for the scene pipeline.

    Args:
        model: The network (its config carries normalization, tile size, threshold...).
        tokenizer: Its tokenizer.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        sha256: Hash of the weights, written into outputs.
        metadata: Its pretrained config (the checkpoint's ``pretrained`` block); default: the
            model's config's.
    """

    def __init__(
        self,
        model: CroBIM,
        tokenizer: Any,
        device: str = "auto",
        sha256: str | None = None,
        metadata: ModelMetadata | None = None,
    ) -> None:
        self.device = resolve_device(device)
        # Convolutions run ~15% faster on channels-last tensors (measured on CPU, batch 8).
        model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.metadata: ModelMetadata = metadata or model.config.metadata(sha256)
        self.expressions_encoded = 0
        self.tiles_predicted = 0

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, device: str = "auto", revision: str | None = None
    ) -> CroBIMPredictor:
        """Load a shipped name, checkpoint folder or hub repo id through the model registry."""
        from rrsis_geo.models.registry import from_pretrained

        loaded = from_pretrained(name_or_path, revision)
        model, tokenizer, sha256 = loaded.model, loaded.tokenizer, loaded.checkpoint.sha256
        return cls(model, tokenizer, device, sha256, loaded.metadata)

    def encode_expression(self, expression: str) -> TextState:
        """Tokenize and run the plain text pass once for the whole scene."""
        self.expressions_encoded += 1
        input_ids, mask = tokenize(
            self.tokenizer, [expression], self.model.config.text.max_tokens, self.device
        )
        with torch.inference_mode():
            return self.model.encode_text(input_ids, mask)

    def encode_description(self, description: str) -> EveryInstance:
        """Encode a target description ("The white storage tank.") to find every instance."""
        return EveryInstance(self.encode_expression(description))

    def predict(self, tiles: np.ndarray, encoded: TextState | EveryInstance) -> TilePrediction:
        """Probabilities ``(B, H, W)`` and presence ``(B,)`` for normalized tiles.

        With an :class:`EveryInstance` the probabilities are the mask before object selection.
        """
        return self.predict_many(tiles, [encoded])[0]

    def predict_many(
        self, tiles: np.ndarray, encodings: Sequence[TextState | EveryInstance]
    ) -> list[TilePrediction]:
        """:meth:`predict` for several encoded sentences, the vision encoder run once.

        Sentences that all ask for every instance, or none, share one forward (CroBIM's
        ``image_index``); a mix runs as two.
        """
        every = [isinstance(e, EveryInstance) for e in encodings]
        if any(every) and not all(every):
            kept = [e for e in encodings if isinstance(e, EveryInstance)]
            chosen = [e for e in encodings if not isinstance(e, EveryInstance)]
            found = iter(self.predict_many(tiles, kept))
            selected = iter(self.predict_many(tiles, chosen))
            return [next(found) if flag else next(selected) for flag in every]
        texts = [e.text if isinstance(e, EveryInstance) else e for e in encodings]
        self.tiles_predicted += len(tiles) * len(texts)
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        batch = batch.contiguous(memory_format=torch.channels_last)
        size = self.model.config.input_size
        count, (height, width) = len(tiles), batch.shape[-2:]
        if (height, width) != (size, size):
            batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
        text = texts[0] if len(texts) == 1 else TextState.concat(texts, count)
        index = None if len(texts) == 1 else torch.arange(count).repeat(len(texts))
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, enabled=self.device.type == "cuda"),
        ):
            output = self.model(
                batch, text=text, image_index=None if index is None else index.to(self.device),
                select=not all(every),
            )  # fmt: skip
        logits = output.mask_logits.float().unsqueeze(1)
        if (height, width) != (size, size):
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        probabilities = logits[:, 0].sigmoid().cpu().numpy()
        presence = output.presence_logits.float().sigmoid().cpu().numpy()
        rows = [slice(k * count, (k + 1) * count) for k in range(len(texts))]
        return [TilePrediction(probabilities[r], presence[r]) for r in rows]


class ForwardPredictor:
    """Any registered family behind the pipeline's protocol, through its plain forward.

    The expression is tokenized once (:meth:`encode_expression`); each batch of tiles runs
    ``model(images, input_ids, attention_mask)`` with the ids repeated, resized to the
    model's input size and back. Families without a presence head give no presence.

    Args:
        model: The network (its forward returns ``mask_logits`` and ``presence_logits``,
            the latter possibly None).
        tokenizer: Its tokenizer.
        metadata: Its pretrained config (normalization, tile size, threshold...).
        max_tokens: Tokens per expression, padding included.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        metadata: ModelMetadata,
        max_tokens: int,
        device: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer, self.metadata, self.max_tokens = tokenizer, metadata, max_tokens
        self.expressions_encoded = 0

    def encode_expression(self, expression: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask ``(1, T)``, once per run."""
        self.expressions_encoded += 1
        return tokenize(self.tokenizer, [expression], self.max_tokens, self.device)

    def predict(
        self, tiles: np.ndarray, encoded: tuple[torch.Tensor, torch.Tensor]
    ) -> TilePrediction:
        """Probabilities ``(B, H, W)`` (and presence ``(B,)`` when the model has it)."""
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        size, (height, width) = self.metadata.tile_size, batch.shape[-2:]
        if (height, width) != (size, size):
            batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
        input_ids, mask = (part.expand(len(tiles), -1) for part in encoded)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, enabled=self.device.type == "cuda"),
        ):
            output = self.model(batch, input_ids, mask)
        logits = output.mask_logits.float().unsqueeze(1)
        if (height, width) != (size, size):
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        presence = getattr(output, "presence_logits", None)
        return TilePrediction(
            logits[:, 0].sigmoid().cpu().numpy(),
            None if presence is None else presence.float().sigmoid().cpu().numpy(),
        )


def load_predictor(
    name_or_path: str | Path, device: str = "auto", revision: str | None = None
) -> CroBIMPredictor | ForwardPredictor:
    """A trained model of any registered family, ready for the scene pipeline.

    CroBIM gets its own predictor (its text pass once per scene, every instance before object
    selection, several sentences per forward); every other family a :class:`ForwardPredictor`.
    """
    from rrsis_geo.models.registry import from_pretrained

    loaded = from_pretrained(name_or_path, revision)
    model, tokenizer, metadata = loaded.model, loaded.tokenizer, loaded.metadata
    if isinstance(model, CroBIM):
        return CroBIMPredictor(model, tokenizer, device, metadata.sha256, metadata)
    return ForwardPredictor(model, tokenizer, metadata, model.config.text.max_tokens, device)
