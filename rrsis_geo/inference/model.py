"""The model protocol the scene pipeline runs, and loading a model from a ``--model`` spec.

A model takes a batch of normalized tiles plus one encoded expression and returns per-pixel
probabilities (and optionally a presence score per tile). The expression is encoded once per
run, not once per tile. Any object with these two methods and a ``metadata`` attribute works:
``--model python:PACKAGE.MODULE:FACTORY`` (or ``python:path/to/file.py:FACTORY``) loads one.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rrsis_geo.errors import InputError
from rrsis_geo.models import DEFAULT_MODEL, default_model, shipped_model
from rrsis_geo.pretrained import ModelMetadata

__all__ = [
    "DEFAULT_MODEL",
    "ModelMetadata",
    "SegmentationModel",
    "TilePrediction",
    "default_model",
    "encode_sentence",
    "load_model",
    "predict_many",
    "shipped_model",
]


@dataclass
class TilePrediction:
    """A model's output for a batch of ``B`` tiles of ``H x W`` pixels.

    Attributes:
        probabilities: float32 ``(B, H, W)`` in [0, 1].
        presence: Optional float32 ``(B,)``: probability that the referent is in each tile.
    """

    probabilities: np.ndarray
    presence: np.ndarray | None = None


@runtime_checkable
class SegmentationModel(Protocol):
    """What the scene pipeline needs from a model."""

    metadata: ModelMetadata

    def encode_expression(self, expression: str) -> Any:
        """Encode the referring expression once; the result is passed to every :meth:`predict`."""
        ...

    def predict(self, tiles: np.ndarray, encoded: Any) -> TilePrediction | np.ndarray:
        """Predict a batch.

        Args:
            tiles: float32 ``(B, C, H, W)``, normalized as the metadata asks.
            encoded: What :meth:`encode_expression` returned.

        Returns:
            A :class:`TilePrediction`, or just the ``(B, H, W)`` probabilities.
        """
        ...


def as_prediction(output: TilePrediction | np.ndarray) -> TilePrediction:
    """Accept either return form of :meth:`SegmentationModel.predict`."""
    if isinstance(output, TilePrediction):
        return output
    return TilePrediction(np.asarray(output, dtype=np.float32))


def encode_sentence(model: SegmentationModel, sentence: str, instances: bool) -> Any:
    """Encode a sentence once: with ``instances``, for every instance of a description.

    ``instances`` uses the model's ``encode_description`` when it has one (CroBIM reads its
    mask before object selection); otherwise, and without ``instances``, ``encode_expression``.
    """
    encode = getattr(model, "encode_description", None) if instances else None
    return (encode or model.encode_expression)(sentence)


def predict_many(
    model: SegmentationModel, tiles: np.ndarray, encodings: Sequence[Any]
) -> list[TilePrediction]:
    """Predictions of several encoded sentences for the same tiles, in order.

    A model with a ``predict_many(tiles, encodings)`` method (the CroBIM predictor) sees the
    tiles once for all the sentences; any other model is called once per sentence.
    """
    many = getattr(model, "predict_many", None)
    if many is not None and len(encodings) > 1:
        return [as_prediction(p) for p in many(tiles, list(encodings))]
    return [as_prediction(model.predict(tiles, encoded)) for encoded in encodings]


PYTHON_PREFIX = "python:"


def load_model(spec: str, device: str = "auto") -> SegmentationModel:
    """Load a model from a ``--model`` value.

    Args:
        spec: The name of a model shipped in ``models/`` (e.g. ``crobim-lite-synth``), a
            checkpoint folder of any registered family or Hugging Face repo id
            (optionally ``ID@REVISION``),
            or ``python:PACKAGE.MODULE:FACTORY`` / ``python:path/to/file.py:FACTORY``: FACTORY
            is called (with ``device=`` when it takes that argument) and must return an object
            that follows :class:`SegmentationModel`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...

    Raises:
        InputError: When the spec cannot be resolved or the result is not a model.
    """
    with _collector_paused():
        if spec.startswith(PYTHON_PREFIX):
            return _load_python_model(spec[len(PYTHON_PREFIX) :], device)
        from rrsis_geo.inference.predictor import load_predictor

        name, revision = spec, None
        if "@" in spec and not Path(spec).exists():
            name, _, revision = spec.partition("@")
        return load_predictor(name, device, revision or None)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a model loads.

    Loading imports torch, timm and transformers: millions of new objects, each allocation
    burst triggering a collection that walks them all again, which is 20-25 % of those imports
    (about 1 s on a 2-CPU machine). The little cyclic garbage made meanwhile is collected once
    the collector resumes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_python_model(target: str, device: str) -> SegmentationModel:
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise InputError(
            f"--model python:{target} is not of the form python:PACKAGE.MODULE:FACTORY"
        )
    module = _import_module(module_name)
    factory = getattr(module, attribute, None)
    if factory is None:
        raise InputError(f"{module_name} has no attribute {attribute!r}")
    model = factory
    if callable(factory) and not isinstance(factory, SegmentationModel):
        parameters = inspect.signature(factory).parameters
        model = factory(device=device) if "device" in parameters else factory()
    if not isinstance(model, SegmentationModel):
        raise InputError(
            f"python:{target} did not give a model (needs metadata, encode_expression, predict)"
        )
    return model


def _import_module(name: str) -> Any:
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise InputError(f"cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    # A console script does not put the working directory on sys.path; `python -m` does.
    # Researchers expect their local package to import either way.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise InputError(f"cannot import {name}: {error}") from None
