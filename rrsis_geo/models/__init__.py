"""The model registry: architectures, named configs, checkpoints (shipped, local, hub).

This package's top level is light (no torch): the shipped checkpoints found by name and their
hashes. The default model (:data:`DEFAULT_MODEL`, 17 MB) is package data of ``rrsis_geo`` so
that a plain ``pip install`` (or a wheel) can segment offline with nothing else downloaded;
its model card and training config live in the repository's top-level ``models/``.

:mod:`rrsis_geo.models.registry` dispatches on a checkpoint's architecture (``create_model``,
``from_pretrained``, ``describe``, ``list_models``); :mod:`rrsis_geo.models.hub` resolves a
name, a folder or a hub id to a checked checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from rrsis_geo.checkpoints import WEIGHTS_FILE, file_sha256

__all__ = [
    "DEFAULT_MODEL",
    "SHIPPED_MODELS",
    "default_model",
    "file_sha256",
    "shipped_model",
    "shipped_model_names",
    "weights_sha256",
]

DEFAULT_MODEL = "crobim-lite-synth"
"""The model ``rrsis segment`` runs when none is given (trained on synthetic scenes only)."""
SHIPPED_MODELS = Path(__file__).resolve().parent
"""The folder holding one sub-folder per shipped checkpoint (``config.json`` and weights)."""


def shipped_model(name: str) -> Path | None:
    """The folder of the checkpoint shipped under ``name``, if there is one."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    folder = SHIPPED_MODELS / name
    return folder if (folder / "config.json").is_file() else None


def shipped_model_names() -> list[str]:
    """The names of the shipped checkpoints, sorted."""
    return sorted(f.name for f in SHIPPED_MODELS.iterdir() if shipped_model(f.name) is not None)


def default_model() -> Path | None:
    """The default model's folder, or None when this install lacks it (a broken install)."""
    return shipped_model(DEFAULT_MODEL)


def weights_sha256(folder: str | Path) -> str | None:
    """SHA-256 (hex) of a checkpoint folder's ``model.safetensors``; None when it has none.

    It names exactly which weights produced an output (sidecars, ``rrsis --version``).
    """
    path = Path(folder) / WEIGHTS_FILE
    return file_sha256(path) if path.is_file() else None
