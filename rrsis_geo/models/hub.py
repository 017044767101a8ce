"""Finding a checkpoint: a shipped name, a local folder or a hub repo id, checked once.

Whatever way a model is named, :func:`open_checkpoint` returns the same thing: the folder,
its ``config.json`` and the sha256 of its weights (checked against the one ``config.json``
pins), so every output records which weights made it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrsis_geo.checkpoints import (
    CONFIG_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    file_sha256,
    read_checkpoint_config,
)
from rrsis_geo.errors import InputError
from rrsis_geo.models import shipped_model

__all__ = ["ResolvedCheckpoint", "open_checkpoint", "resolve_checkpoint"]


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint found and checked.

    Attributes:
        folder: The local folder (a hub snapshot in the cache for a repo id).
        document: Its parsed ``config.json``.
        weights: Its weights file.
        sha256: The weights' sha256 (equal to the pinned one when ``config.json`` pins one).
    """

    folder: Path
    document: dict[str, Any]
    weights: Path
    sha256: str

    @property
    def architecture(self) -> str:
        """The architecture ``config.json`` names (the registry dispatches on it)."""
        return str(self.document["architecture"])


def resolve_checkpoint(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint folder for a path, a shipped model's name or a hub repo id.

    Hub ids (``owner/name``, optionally at ``revision``) go through ``huggingface_hub``;
    ``HF_HUB_OFFLINE=1`` uses its local cache only.

    Raises:
        InputError: With what to do when nothing is found.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    shipped = shipped_model(name)
    if shipped is not None:
        return shipped
    if path.exists() or name.startswith((".", "/")) or name.count("/") != 1:
        raise InputError(f"model not found: {name} (not a checkpoint folder or a hub repo id)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                name,
                revision=revision,
                allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, f"{TOKENIZER_DIR}/*"],
            )
        )
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        reason = "HF_HUB_OFFLINE is set and it is not cached" if offline else "hub unreachable"
        raise InputError(f"model {name} not found locally ({reason})") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise InputError(f"model {name}: {str(error).splitlines()[0]}") from None


def open_checkpoint(name_or_path: str | Path, revision: str | None = None) -> ResolvedCheckpoint:
    """Resolve a checkpoint (:func:`resolve_checkpoint`), read its config, hash its weights.

    Raises:
        InputError: Not found, an unreadable config, no weights, or weights that do not match
            the sha256 ``config.json`` pins.
    """
    folder = resolve_checkpoint(name_or_path, revision)
    document = read_checkpoint_config(folder)
    weights = folder / dict(document.get("weights") or {}).get("file", WEIGHTS_FILE)
    if not weights.is_file():
        raise InputError(
            f"checkpoint {folder} has no {weights.name} (weights load from safetensors "
            "only: pickle files such as pytorch_model.bin are never unpickled)"
        )
    sha256 = file_sha256(weights)
    pinned = dict(document.get("weights") or {}).get("sha256")
    if pinned and sha256 != pinned:
        raise InputError(
            f"{weights} does not match the sha256 pinned in {CONFIG_FILE} "
            "(corrupted or replaced weights)"
        )
    return ResolvedCheckpoint(folder, document, weights, sha256)
