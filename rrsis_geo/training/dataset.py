"""Benchmark samples as model-ready tensors: resized, normalized, tokenized.

Each chip is normalized exactly as a scene would be (its own percentile statistics, then the
model's mean and std), so a model trained here sees at inference what it saw in training.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rrsis_geo.data.sample import ReferringDataset
from rrsis_geo.geo.normalization import NormalizationSpec, compute_array_statistics
from rrsis_geo.nn.config import TextEncoderConfig

__all__ = [
    "ImageGroups",
    "InputConfig",
    "TrainingSamples",
    "collate",
    "collate_groups",
    "prepare_image",
    "prepare_mask",
    "prepare_sample",
]


class InputConfig(Protocol):
    """What preparing samples reads from a model's config (every family's config has it)."""

    @property
    def input_size(self) -> int:
        """Side of the square image the model reads."""
        ...

    @property
    def normalization(self) -> NormalizationSpec:
        """How bands are scaled."""
        ...

    @property
    def text(self) -> TextEncoderConfig:
        """The tokenizer's settings (``max_tokens``)."""
        ...


class TrainingSamples(Dataset):
    """Wrap a referring dataset (``Sample`` items) for a model's config.

    Args:
        samples: Any sequence of :class:`rrsis_geo.data.sample.Sample`.
        config: The model's config (input size, normalization, max tokens).
        tokenizer: Its tokenizer.
        negatives: Share of extra items pairing an image with an expression of another image
            (another file), target empty and presence 0. Which items they are is fixed by
            ``seed``.
        seed: Seed of the negative pairing.
    """

    def __init__(
        self,
        samples: Sequence[Any],
        config: InputConfig,
        tokenizer: Any,
        negatives: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.samples = samples
        self.config = config
        self.tokenizer = tokenizer
        count = len(samples)
        rng = random.Random(seed)
        extra = round(negatives * count) if count > 1 else 0
        # An expression of the same image is no negative (its referent is there): RRSIS-D refs
        # share image files, and synthetic chips hard-link them.
        records = getattr(samples, "records", None) if extra else None
        images = [_file_identity(r.image_path) for r in records] if records else list(range(count))
        if len(set(images)) < 2:
            extra = 0
        # (image index, expression index): pairs of different images
        self.negative_pairs = []
        for _ in range(extra):
            image = rng.randrange(count)
            other = rng.randrange(count)
            while images[other] == images[image]:
                other = rng.randrange(count)
            self.negative_pairs.append((image, other))

    def __len__(self) -> int:
        return len(self.samples) + len(self.negative_pairs)

    def image_of(self, index: int) -> int:
        """The sample whose image item ``index`` shows (itself, or a negative's image)."""
        if index < len(self.samples):
            return index
        return self.negative_pairs[index - len(self.samples)][0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        present = index < len(self.samples)
        if present:
            sample = self.samples[index]
            expression = sample.expression
        else:
            image_index, text_index = self.negative_pairs[index - len(self.samples)]
            sample = self.samples[image_index]
            expression = self.samples[text_index].expression
        image, mask = self.prepare(sample.image, sample.mask)
        if not present:
            mask = torch.zeros_like(mask)
        return {"image": image, "mask": mask, **self.encode(expression, present)}

    def encode(self, expression: str, present: bool) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and presence target of one expression."""
        encoded = self.tokenizer(
            expression,
            padding="max_length",
            truncation=True,
            max_length=self.config.text.max_tokens,
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"][0],
            "attention_mask": encoded["attention_mask"][0],
            "present": torch.tensor(float(present)),
        }

    def prepare(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """See :func:`prepare_sample`."""
        return prepare_sample(image, mask, self.config)


class ImageGroups(Dataset):
    """Items of a :class:`TrainingSamples` grouped by image.

    One item is an image with all its expressions (and the negatives paired with it). The
    vision encoder then runs once per image instead of once per expression, and every batch
    shows the model one image under several expressions with different referents, which is
    what teaches it to tell same-class objects apart. Samples are on the same image when their
    image is the same file: the same path (RRSIS-D) or hard links to one file (synthetic
    chips); other layouts give groups of one.

    Args:
        items: The samples; ``items.samples`` must be a
            :class:`~rrsis_geo.data.sample.ReferringDataset` (its records name the files).

    Raises:
        TypeError: ``items.samples`` is not a ``ReferringDataset``.
    """

    def __init__(self, items: TrainingSamples) -> None:
        if not isinstance(items.samples, ReferringDataset):
            raise TypeError("grouping by image needs a ReferringDataset (it reads file names)")
        self.items = items
        self.dataset: ReferringDataset = items.samples
        records = self.dataset.records
        groups: dict[tuple[int, int] | str, list[int]] = {}
        for index in range(len(items)):
            path = records[items.image_of(index)].image_path
            groups.setdefault(_file_identity(path), []).append(index)
        self.groups = list(groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        members = self.groups[index]
        samples, config = self.dataset, self.items.config
        image_array = samples.read_image(self.items.image_of(members[0]))
        size = (image_array.shape[0], image_array.shape[1])
        rows = []
        for member in members:
            present = member < len(samples)
            if present:
                mask = prepare_mask(samples.load_mask(member, size), config)
                expression = samples.records[member].expression
            else:
                mask = torch.zeros(config.input_size, config.input_size)
                text_index = self.items.negative_pairs[member - len(samples)][1]
                expression = samples.records[text_index].expression
            rows.append({"mask": mask, **self.items.encode(expression, present)})
        return {"image": prepare_image(image_array, config).unsqueeze(0), **collate(rows)}


def _file_identity(path: os.PathLike[str] | str) -> tuple[int, int] | str:
    try:
        status = os.stat(path)
    except OSError:
        return os.fspath(path)
    return (status.st_dev, status.st_ino)


def collate_groups(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate :class:`ImageGroups` items into one batch.

    Images become ``(G, 3, S, S)``, per-expression tensors ``(N, ...)``, and ``image_index``
    ``(N,)`` names the image of each expression.
    """
    batch = {key: torch.cat([item[key] for item in items]) for key in items[0]}
    counts = torch.tensor([item["mask"].shape[0] for item in items])
    batch["image_index"] = torch.repeat_interleave(torch.arange(len(items)), counts)
    return batch


def prepare_sample(
    image: np.ndarray, mask: np.ndarray, config: InputConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize ``(H, W, 3)`` uint8 and resize image and mask to the model's input size."""
    return prepare_image(image, config), prepare_mask(mask, config)


def prepare_image(image: np.ndarray, config: InputConfig) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> normalized ``(3, S, S)`` at the model's input size (bilinear)."""
    bands = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    statistics = compute_array_statistics(bands, config.normalization)
    tensor = torch.from_numpy(statistics.apply(bands)).unsqueeze(0)
    size = config.input_size
    if tensor.shape[-2:] != (size, size):
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return tensor[0]


def prepare_mask(mask: np.ndarray, config: InputConfig) -> torch.Tensor:
    """``(H, W)`` mask -> float ``(S, S)`` at the model's input size (nearest)."""
    target = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    size = config.input_size
    if target.shape[-2:] != (size, size):
        target = F.interpolate(target, size=(size, size), mode="nearest")
    return target[0, 0]


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items into a batch."""
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}
