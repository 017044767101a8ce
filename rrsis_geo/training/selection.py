"""Fit the object selector afresh on a finished, frozen mask (a run's ``selector_finish``).

While the mask trains, the selector chooses among the regions of a mask that is still
changing, and sees each expression once or twice. Once the mask is finished its regions stop
moving, so what the selector reads of each expression (:class:`SelectionInputs`, tens of
kilobytes) can be computed once, and a fresh selector fitted on it for many passes in minutes.
On the synthetic benchmark this is worth more oIoU than the same minutes of joint training
(figures in ``docs/model.md``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from rrsis_geo.nn.crobim import CroBIM
from rrsis_geo.nn.selection import ObjectSelector, SelectionInputs, referent_candidates
from rrsis_geo.training.config import TrainConfig
from rrsis_geo.training.dataset import collate, collate_groups

__all__ = ["SelectionExamples", "finish_selector", "fit_selector", "gather_selection_examples"]


@dataclass
class SelectionExamples:
    """Selector inputs with the candidate the selector should choose.

    Attributes:
        inputs: :class:`SelectionInputs` of N expressions, on the CPU, floats in float16
            (they are only read by the selector, and this halves their memory).
        referents: ``(N,)`` index of the candidate that is the referent.
    """

    inputs: SelectionInputs
    referents: torch.Tensor

    def __len__(self) -> int:
        return len(self.referents)


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.half() if tensor.is_floating_point() else tensor


@torch.no_grad()
def gather_selection_examples(
    model: CroBIM,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    expressions_per_pass: int | None = None,
) -> SelectionExamples:
    """The selector inputs of every expression whose referent is one of two or more candidates.

    Expressions with a single candidate, an absent referent, or a referent the mask missed
    teach no choice, and are left out (negatives before the forward, to save it).

    Args:
        model: A CroBIM with ``object_selection``; it is run in eval mode and left in it.
        batches: Training batches (``image``, ``input_ids``, ``attention_mask``, ``mask``,
            ``present`` and, for batches grouped by image, ``image_index``).
        device: Where the model runs.
        expressions_per_pass: Passed to the model's forward (a speed setting).

    Raises:
        ValueError: The model has no selector.
    """
    if model.selector is None:
        raise ValueError("this model has no object selector (object_selection is off)")
    model.eval()
    parts: list[SelectionInputs] = []
    referents: list[torch.Tensor] = []
    for batch in batches:
        batch = _present_only(batch)
        batch = {key: value.to(device) for key, value in batch.items()}
        output = model(
            batch["image"],
            batch["input_ids"],
            batch["attention_mask"],
            image_index=batch.get("image_index"),
            expressions_per_pass=expressions_per_pass,
        )
        if output.candidates is None or output.selection_inputs is None:
            raise ValueError("this model has no object selector (object_selection is off)")
        referent, found = referent_candidates(output.candidates, batch["mask"])
        keep = found & batch["present"].bool() & (output.candidates.valid.sum(dim=1) >= 2)

        def kept(tensor: torch.Tensor, keep: torch.Tensor = keep) -> torch.Tensor:
            return _compact(tensor[keep])

        parts.append(output.selection_inputs.map(kept))
        referents.append(referent[keep].cpu())
    if not parts:
        raise ValueError("no batches to gather selection examples from")
    return SelectionExamples(SelectionInputs.concatenate(parts), torch.cat(referents))


def _present_only(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its negatives, which have no referent to gather (a cheaper forward).

    In a batch grouped by image every image stays (``image_index`` keeps naming them), even
    one left with no expression. A batch of negatives only is returned whole, so that its
    (empty) share of the examples keeps their shapes.
    """
    present = batch["present"].bool()
    if bool(present.all()) or not bool(present.any()):
        return batch
    per_image = {"image"} if "image_index" in batch else set()
    return {key: value if key in per_image else value[present] for key, value in batch.items()}


def fit_selector(
    selector: ObjectSelector,
    examples: SelectionExamples,
    steps: int,
    batch_size: int,
    lr: float,
    schedule: Callable[[int], float],
    weight_decay: float = 0.01,
    seed: int = 0,
    device: torch.device | None = None,
) -> float:
    """Train ``selector`` on ``examples`` with cross-entropy towards the referents.

    Batches are drawn at random with replacement, from a generator seeded by ``seed``, so a fit
    is reproducible.

    Args:
        selector: The selector to train (in place; left in train mode).
        examples: What it learns from.
        steps: Optimizer steps.
        batch_size: Expressions per step.
        lr: AdamW's peak learning rate.
        schedule: Factor of ``lr`` at each step (warm-up and decay).
        weight_decay: AdamW's weight decay.
        seed: Seed of the batch draws.
        device: Where the selector is (default: where its parameters are).

    Returns:
        The loss of the last steps (an exponential moving average).

    Raises:
        ValueError: No examples, or steps or batch_size below 1.
    """
    if len(examples) == 0:
        raise ValueError("no selection examples: nothing for the selector to learn from")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    device = device or next(selector.parameters()).device
    selector.train()
    optimizer = torch.optim.AdamW(selector.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(seed)
    running = None
    for _ in range(steps):
        index = torch.randint(len(examples), (batch_size,), generator=generator)

        def batch(tensor: torch.Tensor, index: torch.Tensor = index) -> torch.Tensor:
            tensor = tensor[index].to(device)
            return tensor.float() if tensor.is_floating_point() else tensor

        scores = selector.scores(examples.inputs.map(batch))
        loss = F.cross_entropy(scores, examples.referents[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
    return float(running if running is not None else 0.0)


def finish_selector(
    model: CroBIM, items: Any, config: TrainConfig, device: torch.device | None = None
) -> dict[str, Any]:
    """Replace the selector by a fresh one fitted on the finished mask (``selector_finish``).

    Gathers from ``config.selector_finish.images`` of ``items`` (a choice seeded by
    ``config.seed``), then fits a freshly initialised selector. Every process of a distributed
    run gathers from the same items with the same seeds, so their selectors stay identical
    without communicating. When no expression has a choice to make, the selector is kept.

    Args:
        model: A trained CroBIM with ``object_selection``; left in eval mode.
        items: The run's training items (:func:`~rrsis_geo.training.trainer.training_items`).
        config: The run's config (``selector_finish``, ``batch_size``, ``data.group_by_image``,
            ``optim``, ``seed``, ``num_workers``, ``expressions_per_pass``).
        device: Where the model runs (default: where its parameters are).

    Returns:
        What was done, for the run folder: images, examples, steps, final loss, seconds.
    """
    finish = config.selector_finish
    device = device or next(model.parameters()).device
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    chosen = torch.randperm(len(items), generator=generator)[: finish.images].tolist()
    loader = DataLoader(
        Subset(items, chosen),
        batch_size=config.batch_size,
        collate_fn=collate_groups if config.data.group_by_image else collate,
        num_workers=config.num_workers,
    )
    examples = gather_selection_examples(model, loader, device, config.expressions_per_pass)
    gathered = time.perf_counter()
    facts: dict[str, Any] = {
        "images": len(chosen),
        "examples": len(examples),
        "steps": finish.steps,
        "gather_s": round(gathered - started, 1),
    }
    if len(examples) == 0:
        return {**facts, "steps": 0, "skipped": "no expression with a choice to make"}
    model.reset_selector()
    assert model.selector is not None  # reset_selector keeps a selector
    loss = fit_selector(
        model.selector,
        examples,
        finish.steps,
        finish.batch_size,
        finish.lr,
        config.optim.lr_factor(finish.steps, finish.warmup_steps),
        config.optim.weight_decay,
        config.seed,
        device,
    )
    model.eval()
    fit_s = round(time.perf_counter() - gathered, 1)
    return {**facts, "final_loss": round(loss, 6), "fit_s": fit_s}
