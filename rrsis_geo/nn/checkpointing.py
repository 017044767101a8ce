"""Writing and strictly loading a family's checkpoint folder (:mod:`rrsis_geo.checkpoints`).

Every family saves and loads the same way: the weights as safetensors (optionally float16,
optionally without a text encoder that loads from its source), ``config.json`` with the
architecture, the family's config, its pretrained config as its own block and the weights'
sha256, and the tokenizer; loading checks the pinned hash and fails on any missing,
unexpected or misshapen tensor, naming it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrsis_geo.checkpoints import (
    CONFIG_FILE,
    FORMAT_VERSION,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    file_sha256,
    read_checkpoint_config,
)
from rrsis_geo.errors import InputError
from rrsis_geo.geo.writers import atomic_output
from rrsis_geo.nn.family import joined_config, split_config

__all__ = [
    "TEXT_PREFIX",
    "checkpoint_tokenizer",
    "family_config",
    "fill_strictly",
    "initialisation_skipped",
    "load_strictly",
    "owned_tensors",
    "save_checkpoint",
    "weights_of",
]

TEXT_PREFIX = "text."
"""Where a family keeps its text encoder (``model.text``), whose weights may stay at source."""


_INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "orthogonal_",
)


@contextlib.contextmanager
def initialisation_skipped() -> Iterator[None]:
    """Build modules on the meta device with torch's initialisers turned into no-ops.

    For a model whose every weight a checkpoint is about to fill: no memory, no random
    numbers. A random initialiser on a meta tensor would also import ``torch._dynamo`` and
    sympy (half a second of every ``rrsis segment``), which is why they are skipped rather
    than run on meta. Not thread-safe: ``torch.nn.init`` is patched while the block runs.
    """
    saved = {name: getattr(nn.init, name) for name in _INITIALISERS}
    for name in _INITIALISERS:
        setattr(nn.init, name, _unchanged)
    try:
        with torch.device("meta"):
            yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _unchanged(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def save_checkpoint(
    model: nn.Module,
    folder: str | Path,
    architecture: str,
    tokenizer: Any,
    include_text_encoder: bool = True,
    half: bool = False,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` of ``model``.

    Args:
        model: The network; ``model.config`` is its family's config dataclass.
        folder: Created if missing; existing files of a checkpoint are replaced.
        architecture: The name the registry dispatches on.
        tokenizer: The tokenizer to store.
        include_text_encoder: False leaves out the weights under :data:`TEXT_PREFIX`, loaded
            from the config's source on load: only valid when they were not fine-tuned.
        half: Store floating-point tensors as float16 (loading casts them back).

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if include_text_encoder or not k.startswith(TEXT_PREFIX)
    }
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_output(folder / WEIGHTS_FILE, overwrite=True) as temporary:
        save_file(state, str(temporary), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    architecture_config, pretrained = split_config(model.config)
    document = {
        "architecture": architecture,
        "format_version": FORMAT_VERSION,
        "config": architecture_config,
        # What the scene pipeline reads (normalization, bands, tile size, threshold...): its
        # own block, whatever the family.
        "pretrained": pretrained,
        "weights": {
            "file": WEIGHTS_FILE,
            "sha256": file_sha256(folder / WEIGHTS_FILE),
            "text_encoder": "included" if include_text_encoder else "from_source",
            "dtype": "float16" if half else "float32",
        },
        "tokenizer": TOKENIZER_DIR,
    }
    with atomic_output(folder / CONFIG_FILE, overwrite=True) as temporary:
        temporary.write_text(json.dumps(document, indent=2) + "\n")
    return folder


def family_config(
    folder: Path, document: dict[str, Any] | None, architecture: str, config_class: Any
) -> tuple[dict[str, Any], Any]:
    """A checkpoint's ``config.json`` and its family's config, checked to be ``architecture``.

    Args:
        folder: The checkpoint folder.
        document: Its ``config.json`` when the caller read it already (else read here).
        architecture: The family the caller loads.
        config_class: The family's config class (its ``from_dict`` builds it from both blocks,
            :func:`~rrsis_geo.nn.family.joined_config`).

    Raises:
        InputError: Not a checkpoint, another architecture, or an invalid config.
    """
    document = document if document is not None else read_checkpoint_config(folder)
    if document["architecture"] != architecture:
        raise InputError(
            f"{folder / CONFIG_FILE}: a {document['architecture']} checkpoint, not {architecture}"
        )
    try:
        return document, joined_config(config_class, document)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{folder / CONFIG_FILE}: invalid config ({error})") from None


def weights_of(folder: Path, document: dict[str, Any], sha256: str | None = None) -> Path:
    """The checkpoint's safetensors file, present and matching the sha256 it pins.

    Args:
        folder: The checkpoint folder.
        document: Its ``config.json``.
        sha256: The file's sha256 when the caller computed it already.

    Raises:
        InputError: No weights file (pickles are never loaded), or a hash mismatch.
    """
    weights = dict(document.get("weights") or {})
    path = folder / weights.get("file", WEIGHTS_FILE)
    if not path.is_file():
        raise InputError(
            f"checkpoint {folder} has no {path.name} (weights load from safetensors "
            "only: pickle files such as pytorch_model.bin are never unpickled)"
        )
    pinned = weights.get("sha256")
    if pinned and (sha256 or file_sha256(path)) != pinned:
        raise InputError(
            f"{path} does not match the sha256 pinned in {CONFIG_FILE} "
            "(corrupted or replaced weights)"
        )
    return path


def load_strictly(
    model: nn.Module, path: Path, name: str, skip_text: bool = False, assign: bool = False
) -> None:
    """Fill ``model`` from a safetensors file; every key must match, shapes included.

    Args:
        model: The network to fill.
        path: The weights file.
        name: The model's name, for messages.
        skip_text: The file holds no text encoder weights (they came from their source).
        assign: The model is on the meta device: its tensors become the file's.

    Raises:
        InputError: Unreadable file, missing or unexpected keys (named), or a shape mismatch.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state: dict[str, torch.Tensor] = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path}: not readable safetensors ({error})") from None
    fill_strictly(model, state, str(path), name, skip_text, assign=assign)


def owned_tensors(
    state: Mapping[str, torch.Tensor], dtypes: Mapping[str, torch.dtype] | None = None
) -> dict[str, torch.Tensor]:
    """Each tensor copied into storage of its own, cast to ``dtypes[name]`` where given.

    safetensors gives views into one buffer at the file's offsets, which need not be 64-byte
    aligned. A module that takes such views over (``load_state_dict(assign=True)``) may run
    other SIMD paths than one whose weights were allocated by torch, and its results then
    differ in the last bits from the model that was saved (seen on AMD EPYC: a presence logit
    7e-9 off after a round trip). The copy takes about 20 ms per 100 MB on a 2-CPU machine.
    """
    dtypes = dtypes or {}
    return {k: v.to(dtype=dtypes.get(k, v.dtype), copy=True) for k, v in state.items()}


def fill_strictly(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    name: str,
    skip_text: bool = False,
    shapes_from: str = CONFIG_FILE,
    assign: bool = False,
) -> None:
    """Fill ``model`` from ``state``; every key must match, shapes included.

    Args:
        model: The network to fill.
        state: The tensors by name.
        source: Where they came from, for messages.
        name: The model's name, for messages.
        skip_text: ``state`` holds no text encoder weights (they came from their source).
        shapes_from: What decided the model's shapes, for messages.
        assign: Make the tensors the model's (cast to its dtypes) instead of copying into
            its storage: for a model built on the meta device (:func:`initialisation_skipped`).

    Raises:
        InputError: Missing or unexpected keys (named), or a shape mismatch.
    """
    expected = {k for k in model.state_dict() if not (skip_text and k.startswith(TEXT_PREFIX))}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise InputError(
            f"{source} does not fit a {name} model: "
            f"missing {_names(missing)}; unexpected {_names(unexpected)}"
        )
    try:
        if assign:
            own = model.state_dict()
            floating = {k: own[k].dtype for k, v in state.items() if v.is_floating_point()}
            state = owned_tensors(state, floating)
        model.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
        first = lines[0].rstrip(".") if lines else str(error).splitlines()[0]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise InputError(f"{source} does not fit {shapes_from}: {first}{more}") from None


def checkpoint_tokenizer(folder: Path, document: dict[str, Any], text_config: Any) -> Any:
    """The tokenizer stored in the checkpoint, else the one of its text encoder's config."""
    from rrsis_geo.nn.encoders import load_tokenizer, tokenizer_of_folder

    tokenizer_dir = folder / document.get("tokenizer", TOKENIZER_DIR)
    if tokenizer_dir.is_dir():
        return tokenizer_of_folder(tokenizer_dir)
    return load_tokenizer(text_config)


def _names(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:5])
    return f"{shown} (+{len(keys) - 5} more)" if len(keys) > 5 else shown
