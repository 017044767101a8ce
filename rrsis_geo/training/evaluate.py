"""``rrsis eval``: a checkpoint on a benchmark split, with an explicit metric protocol.

Predictions are made at the model's input size; with ``resolution="original"`` (the default)
the logits are resized back to each image's own size before thresholding and compared with the
original mask, with ``"model_input"`` the mask is resized (nearest) to the input size instead.
Under torchrun every rank evaluates a shard and the metric states are merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from rrsis_geo.nn.crobim import CroBIM
from rrsis_geo.training.dataset import prepare_image, prepare_mask
from rrsis_geo.training.metrics import MetricResult, Protocol, RunningMetrics

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: CroBIM,
    tokenizer: Any,
    samples: Any,
    protocol: Protocol | None = None,
    batch_size: int = 8,
    env: Any = None,
    predictions_dir: Path | None = None,
    threshold: float | None = None,
    groups: Mapping[str, str] | None = None,
) -> MetricResult:
    """Metrics of ``model`` on ``samples`` (any sequence of ``Sample``).

    Args:
        model: The network (its config gives input size, normalization, tokens, threshold).
        tokenizer: Its tokenizer.
        samples: The split.
        protocol: Metric protocol (default: original resolution, ``>=``).
        batch_size: Images per forward pass.
        env: A :class:`~rrsis_geo.training.trainer.Distributed`; None for one process.
        predictions_dir: When given, each prediction is written there as ``<sample_id>.png``.
        threshold: Foreground threshold (default: the model's).
        groups: Sample id -> group (e.g. the expression kind); when given, the per-category
            rows are these groups instead of the samples' categories.
    """
    protocol = protocol or Protocol()
    config = model.config
    threshold = config.threshold if threshold is None else threshold
    rank, world = (env.rank, env.world_size) if env is not None else (0, 1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    metrics = RunningMetrics(protocol)
    indices = list(range(rank, len(samples), world))
    if predictions_dir is not None:
        predictions_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(indices), batch_size):
        batch = [samples[i] for i in indices[start : start + batch_size]]
        images = torch.stack([prepare_image(s.image, config) for s in batch])
        encoded = tokenizer(
            [s.expression for s in batch],
            padding="max_length",
            truncation=True,
            max_length=config.text.max_tokens,
            return_tensors="pt",
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            output = model(
                images.to(device),
                encoded["input_ids"].to(device),
                encoded["attention_mask"].to(device),
            )
        logits = output.mask_logits.float()
        for index, sample in enumerate(batch):
            if protocol.resolution == "original":
                height, width = sample.mask.shape
                resized = F.interpolate(
                    logits[index][None, None],
                    size=(height, width),
                    mode="bilinear",
                    align_corners=False,
                )[0, 0]
                target = np.asarray(sample.mask, dtype=bool)
            else:
                resized = logits[index]
                target = prepare_mask(sample.mask, config).numpy() > 0.5
            prediction = (resized.sigmoid() >= threshold).cpu().numpy()
            label = sample.category if groups is None else groups.get(sample.sample_id)
            metrics.update(prediction, target, label, sample.sample_id)
            if predictions_dir is not None:
                from PIL import Image

                name = f"{sample.sample_id}".replace("/", "_")
                Image.fromarray(prediction.astype(np.uint8) * 255).save(
                    predictions_dir / f"{name}.png"
                )
    if world > 1:
        states: list[Any] = [None] * world
        dist.all_gather_object(states, metrics.state())
        metrics = RunningMetrics.from_states(states)
    if was_training:
        model.train()
    return metrics.compute("category" if groups is None else "group")
