"""A BERT encoder in plain torch, interchangeable with ``transformers.BertModel``.

Importing ``transformers`` costs about a second (it pulls in ``torch._dynamo`` and sympy), a
third of ``rrsis segment``'s budget to its first tile. The default text encoder, MiniLM-L6, is a
plain BERT, so this module reimplements BERT's encoder (no pooler) with the exact parameter
names of ``transformers.BertModel(config, add_pooling_layer=False)``: state dicts load both ways
with ``strict=True``, and eval-mode outputs match transformers' default (SDPA) attention to
float32 rounding. Only what the package uses is supported: absolute position embeddings, exact
(erf) GELU, an encoder (no decoder, no cache), token type 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

__all__ = [
    "BertArchitecture",
    "BertEncoderOutput",
    "PlainBertModel",
    "load_plain_bert",
]

# Checkpoint entries that BertModel(add_pooling_layer=False) has no parameter for, dropped on
# load as transformers drops them: the pooler and the pretraining heads (``cls.``) of
# BertFor* checkpoints, and the position/token-type id buffers older transformers saved.
_IGNORED_PREFIXES = ("pooler.", "cls.")
_IGNORED_KEYS = frozenset({"embeddings.position_ids", "embeddings.token_type_ids"})


@dataclass(frozen=True)
class BertArchitecture:
    """The hyperparameters of a BERT encoder (the defaults are BERT-base's, as BertConfig's).

    Attributes:
        vocab_size: Number of word embeddings.
        hidden_size: Width of every token's features.
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer (they split ``hidden_size``).
        intermediate_size: Width of the feed-forward block.
        max_position_embeddings: Longest sequence the position embeddings cover.
        type_vocab_size: Number of token type (segment) embeddings.
        layer_norm_eps: Epsilon of every LayerNorm.
        pad_token_id: Padding index of the word embeddings (its row starts at zero).
        hidden_act: Feed-forward activation; only ``"gelu"`` (exact, erf-based) is supported.
        hidden_dropout_prob: Dropout on embeddings and on each residual branch (training only).
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        initializer_range: Standard deviation of the random initialisation.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_act != "gelu":
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported (only 'gelu', the exact GELU)"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_config_json(cls, source: str | Path | Mapping[str, Any]) -> BertArchitecture:
        """The architecture of a transformers ``config.json`` (a path or its parsed content).

        Keys this class does not know (``architectures``, ``transformers_version``...) are
        ignored; missing ones take BertConfig's defaults.

        Raises:
            ValueError: The config is not a plain BERT encoder: ``model_type`` other than
                ``"bert"``, ``position_embedding_type`` other than ``"absolute"``, a decoder,
                or an activation other than ``"gelu"``.
        """
        if isinstance(source, Mapping):
            document = dict(source)
        else:
            document = json.loads(Path(source).read_text(encoding="utf-8"))
        model_type = document.get("model_type")
        if model_type != "bert":
            raise ValueError(f"model_type {model_type!r} is not supported (only 'bert')")
        position_type = document.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"position_embedding_type {position_type!r} is not supported (only 'absolute')"
            )
        if document.get("is_decoder") or document.get("add_cross_attention"):
            raise ValueError("a BERT decoder (is_decoder, add_cross_attention) is not supported")
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in document.items() if key in known})


@dataclass
class BertEncoderOutput:
    """What :meth:`PlainBertModel.forward` returns, named as transformers names it.

    Attributes:
        last_hidden_state: Features of the last layer ``(B, T, hidden_size)``.
    """

    last_hidden_state: torch.Tensor


DeviceLike = torch.device | str | None


def _embedding(
    count: int, width: int, device: DeviceLike, padding_idx: int | None = None
) -> nn.Embedding:
    """An embedding table left uninitialised (:class:`PlainBertModel` initialises it).

    nn.Embedding otherwise draws normal weights, and that draw on the meta device (where
    :func:`load_plain_bert` builds) imports torch._dynamo: 0.9 s, what this module avoids.
    """
    table = torch.empty(count, width, device=device)
    return nn.Embedding(count, width, padding_idx=padding_idx, _weight=table)


class BertEmbeddings(nn.Module):
    """Word + token type 0 + absolute position embeddings, then LayerNorm and dropout."""

    def __init__(self, architecture: BertArchitecture, device: DeviceLike = None) -> None:
        super().__init__()
        hidden = architecture.hidden_size
        self.word_embeddings = _embedding(
            architecture.vocab_size, hidden, device, padding_idx=architecture.pad_token_id
        )
        self.position_embeddings = _embedding(architecture.max_position_embeddings, hidden, device)
        self.token_type_embeddings = _embedding(architecture.type_vocab_size, hidden, device)
        self.LayerNorm = nn.LayerNorm(hidden, eps=architecture.layer_norm_eps, device=device)
        self.dropout = nn.Dropout(architecture.hidden_dropout_prob)

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Word embeddings ``(B, T, H)`` -> layer input ``(B, T, H)``."""
        length = inputs_embeds.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence of {length} tokens is longer than the "
                f"{self.position_embeddings.num_embeddings} position embeddings"
            )
        # Same additions in the same order as transformers, so the sums round identically.
        embeddings = inputs_embeds + self.token_type_embeddings.weight[0]
        embeddings = embeddings + self.position_embeddings.weight[:length]
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention over the whole sequence."""

    def __init__(self, architecture: BertArchitecture, device: DeviceLike = None) -> None:
        super().__init__()
        hidden = architecture.hidden_size
        self.head_size = architecture.head_size
        self.dropout_probability = architecture.attention_probs_dropout_prob
        self.query = nn.Linear(hidden, hidden, device=device)
        self.key = nn.Linear(hidden, hidden, device=device)
        self.value = nn.Linear(hidden, hidden, device=device)

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Features ``(B, T, H)``, keys to attend ``(B, 1, T, T)`` bool or None -> ``(B, T, H)``."""
        batch, length, _ = hidden_states.shape
        split = (batch, length, -1, self.head_size)
        query = self.query(hidden_states).view(split).transpose(1, 2)
        key = self.key(hidden_states).view(split).transpose(1, 2)
        value = self.value(hidden_states).view(split).transpose(1, 2)
        attended = functional.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=keep,
            dropout_p=self.dropout_probability if self.training else 0.0,
            scale=self.head_size**-0.5,
        )
        return attended.transpose(1, 2).reshape(batch, length, -1)


class BertResidualOutput(nn.Module):
    """Projection, dropout, then LayerNorm of the residual sum (``output`` in transformers)."""

    def __init__(
        self, in_features: int, architecture: BertArchitecture, device: DeviceLike = None
    ) -> None:
        super().__init__()
        hidden = architecture.hidden_size
        self.dense = nn.Linear(in_features, hidden, device=device)
        self.LayerNorm = nn.LayerNorm(hidden, eps=architecture.layer_norm_eps, device=device)
        self.dropout = nn.Dropout(architecture.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Branch output and the branch's input ``(B, T, H)`` -> ``(B, T, H)``."""
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class BertAttention(nn.Module):
    """Self-attention and its residual output (``attention.self``, ``attention.output``)."""

    def __init__(self, architecture: BertArchitecture, device: DeviceLike = None) -> None:
        super().__init__()
        self.self = BertSelfAttention(architecture, device)
        self.output = BertResidualOutput(architecture.hidden_size, architecture, device)

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """See :class:`BertSelfAttention`."""
        return self.output(self.self(hidden_states, keep), hidden_states)


class BertIntermediate(nn.Module):
    """The feed-forward expansion with its exact GELU."""

    def __init__(self, architecture: BertArchitecture, device: DeviceLike = None) -> None:
        super().__init__()
        self.dense = nn.Linear(
            architecture.hidden_size, architecture.intermediate_size, device=device
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(B, T, H)`` -> ``(B, T, intermediate_size)``."""
        return functional.gelu(self.dense(hidden_states))


class BertLayer(nn.Module):
    """One transformer layer: attention, then feed-forward, each post-LayerNorm residual."""

    def __init__(self, architecture: BertArchitecture, device: DeviceLike = None) -> None:
        super().__init__()
        self.attention = BertAttention(architecture, device)
        self.intermediate = BertIntermediate(architecture, device)
        self.output = BertResidualOutput(architecture.intermediate_size, architecture, device)

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """See :class:`BertSelfAttention`."""
        attended = self.attention(hidden_states, keep)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    """The stack of layers (``encoder.layer.N``)."""

    def __init__(self, architecture: BertArchitecture, device: DeviceLike = None) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            BertLayer(architecture, device) for _ in range(architecture.num_hidden_layers)
        )

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """See :class:`BertSelfAttention`."""
        for layer in self.layer:
            hidden_states = layer(hidden_states, keep)
        return hidden_states


class PlainBertModel(nn.Module):
    """BERT's encoder without pooler, a drop-in for ``BertModel(add_pooling_layer=False)``.

    Args:
        architecture: Its hyperparameters. A new model is initialised as transformers
            initialises BERT (normal weights, zero biases, unit LayerNorms, a zero padding row).
        device: Where to allocate the parameters; on ``"meta"`` they are left without values,
            for ``load_state_dict(..., assign=True)`` to supply.

    Attributes:
        config: The architecture (``config.hidden_size`` as on a transformers model).
        embeddings: Word, position and token type embeddings.
        encoder: The transformer layers.
    """

    def __init__(self, architecture: BertArchitecture, *, device: DeviceLike = None) -> None:
        super().__init__()
        self.config = architecture
        self.embeddings = BertEmbeddings(architecture, device)
        self.encoder = BertEncoder(architecture, device)
        # Meta tensors hold no values to draw, and drawing them imports torch._dynamo.
        if torch.device(device or "cpu").type != "meta":
            self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # transformers' BERT initialisation, so that a model built to train starts alike.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        """The word embeddings (token ids -> vectors before positions are added)."""
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> BertEncoderOutput:
        """Encode token ids or word embeddings.

        Args:
            input_ids: Token ids ``(B, T)``; exclusive with ``inputs_embeds``.
            attention_mask: ``(B, T)``, 1 for real tokens and 0 for padding: no token attends
                to padding. None attends to every token.
            inputs_embeds: Word embeddings ``(B, T, H)`` used in place of looking up
                ``input_ids`` (vectors appended after the words are encoded like words).

        Returns:
            The last layer's features ``(B, T, H)``.

        Raises:
            ValueError: Neither or both of ``input_ids`` and ``inputs_embeds``, or a sequence
                longer than the position embeddings.
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give one of input_ids and inputs_embeds")
            inputs_embeds = self.embeddings.word_embeddings(input_ids)
        elif input_ids is not None:
            raise ValueError("give input_ids or inputs_embeds, not both")
        hidden_states = self.embeddings(inputs_embeds)
        keep = _attention_keep_mask(attention_mask, hidden_states)
        return BertEncoderOutput(last_hidden_state=self.encoder(hidden_states, keep))


def _attention_keep_mask(
    attention_mask: torch.Tensor | None, hidden_states: torch.Tensor
) -> torch.Tensor | None:
    """The boolean SDPA mask ``(B, 1, T, T)`` of keys to attend, or None to attend to all.

    transformers drops a mask without padding (SDPA then runs unmasked) and otherwise passes
    this boolean mask; doing the same keeps the outputs identical to its, to the last bit
    where the kernels are the same.
    """
    if attention_mask is None:
        return None
    keep = attention_mask.to(device=hidden_states.device, dtype=torch.bool)
    if bool(keep.all()):
        return None
    batch, length = keep.shape
    return keep[:, None, None, :].expand(batch, 1, length, length)


def load_plain_bert(folder: str | Path) -> PlainBertModel:
    """The BERT encoder of a transformers folder: ``config.json`` and ``model.safetensors``.

    Weights keep float32 whatever the file stores. A ``bert.`` prefix on the keys (BertFor*
    checkpoints) is stripped; the pooler, pretraining heads and id buffers are ignored.

    Args:
        folder: The model folder.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        ValueError: The config is not a plain BERT encoder, or the weights miss a parameter
            or hold one the model does not have (the message names them).
        FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
    """
    from safetensors.torch import load_file

    from rrsis_geo.nn.checkpointing import owned_tensors

    folder = Path(folder)
    architecture = BertArchitecture.from_config_json(folder / "config.json")
    weights_file = folder / "model.safetensors"
    if not weights_file.is_file():
        raise FileNotFoundError(f"{weights_file} not found (only safetensors weights are read)")
    state = owned_tensors(_encoder_state(load_file(str(weights_file))))
    # Built without storage: the checkpoint supplies every tensor, so a random initialisation
    # (a fifth of a second for MiniLM) would be thrown away.
    model = PlainBertModel(architecture, device="meta")
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"{weights_file} does not fit a BERT encoder: missing {missing or 'nothing'}, "
            f"unexpected {unexpected or 'nothing'}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _encoder_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's entries of a checkpoint, named as BertModel names them, in float32."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix("bert.")
        if name.startswith(_IGNORED_PREFIXES) or name in _IGNORED_KEYS:
            continue
        state[name] = tensor.float() if tensor.is_floating_point() else tensor
    return state
