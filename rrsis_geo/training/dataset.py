"""Benchmark samples as model-ready tensors: resized, normalized, tokenized.

Each chip is normalized exactly as a scene would be (its own percentile statistics, then the
model's mean and std), so a model trained here sees at inference what it saw in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rrsis_geo.geo.normalization import compute_array_statistics
from rrsis_geo.nn.config import CroBIMConfig

__all__ = ["TrainingSamples", "collate", "prepare_sample"]


class TrainingSamples(Dataset):
    """Wrap a referring dataset (``Sample`` items) for a CroBIM config.

    Args:
        samples: Any sequence of :class:`rrsis_geo.data.sample.Sample`.
        config: The model's config (input size, normalization, max tokens).
        tokenizer: Its tokenizer.
        negatives: Share of extra items pairing an image with another image's expression,
            target empty and presence 0. Which items they are is fixed by ``seed``.
        seed: Seed of the negative pairing.
    """

    def __init__(
        self,
        samples: Sequence[Any],
        config: CroBIMConfig,
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
        # (image index, expression index): pairs of different images
        self.negative_pairs = []
        for _ in range(extra):
            image = rng.randrange(count)
            other = rng.randrange(count - 1)
            self.negative_pairs.append((image, other if other < image else other + 1))

    def __len__(self) -> int:
        return len(self.samples) + len(self.negative_pairs)

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
        encoded = self.tokenizer(
            expression,
            padding="max_length",
            truncation=True,
            max_length=self.config.text.max_tokens,
            return_tensors="pt",
        )
        return {
            "image": image,
            "mask": mask,
            "input_ids": encoded["input_ids"][0],
            "attention_mask": encoded["attention_mask"][0],
            "present": torch.tensor(float(present)),
        }

    def prepare(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """See :func:`prepare_sample`."""
        return prepare_sample(image, mask, self.config)


def prepare_sample(
    image: np.ndarray, mask: np.ndarray, config: CroBIMConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize ``(H, W, 3)`` uint8 and resize image and mask to the model's input size."""
    bands = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    statistics = compute_array_statistics(bands, config.normalization)
    tensor = torch.from_numpy(statistics.apply(bands)).unsqueeze(0)
    target = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    size = config.input_size
    if tensor.shape[-2:] != (size, size):
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
        target = F.interpolate(target, size=(size, size), mode="nearest")
    return tensor[0], target[0, 0]


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items into a batch."""
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}
