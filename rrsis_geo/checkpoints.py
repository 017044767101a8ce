"""The checkpoint folder format: what every model family writes and the registry reads.

A checkpoint is a folder: ``config.json`` (``architecture``, ``format_version``, the family's
``config``, the ``weights`` entry with the sha256 of ``model.safetensors``, the ``tokenizer``
folder), ``model.safetensors`` and ``tokenizer/``. No pickle is ever loaded. It lives on the
ground floor: the families (:mod:`rrsis_geo.nn`) write it, the registry
(:mod:`rrsis_geo.models`) finds and checks it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rrsis_geo.errors import InputError

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "TOKENIZER_DIR",
    "WEIGHTS_FILE",
    "file_sha256",
    "read_checkpoint_config",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint_config(folder: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder: a JSON object of a known format.

    Raises:
        InputError: No ``config.json``, not JSON, no ``architecture``, or a newer format.
    """
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"{folder} is not a checkpoint: no {CONFIG_FILE}")
    try:
        document = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("architecture"), str):
        raise InputError(f"{config_path}: not a checkpoint config (no architecture)")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{config_path}: written by a newer rrsis_geo (format {document['format_version']})"
        )
    return document
