"""Where a training step of a run's config goes: forward, backward, and each part's forward.

Builds the config's model and reads its own training split as ``rrsis train`` does (same task,
same items, same loss), then times a few steps on this CPU: forward and backward of the loss,
and the forward of each top-level part of the model (forward hooks; parts called inside other
parts' methods, such as the selector, count in no line). The first step, with its one-off
costs, is left out. Prints only: the figures go into the doc that quotes them, with this
command.

    HF_HUB_OFFLINE=1 python benchmarks/train_step_parts.py models/configs/crobim-lite-synth.yaml
    HF_HUB_OFFLINE=1 python benchmarks/train_step_parts.py models/configs/crobim-lite-synth.yaml \
        model_overrides.head_width=64
    HF_HUB_OFFLINE=1 python benchmarks/train_step_parts.py models/configs/crobim-lite-synth.yaml \
        expressions_per_pass=4
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from rrsis_geo.training.config import load_config
from rrsis_geo.training.dataset import collate, collate_groups
from rrsis_geo.training.trainer import task_for, training_items


def time_parts(model: torch.nn.Module) -> dict[str, float]:
    """Seconds of forward per top-level part, accumulated while the hooks are in place."""
    seconds: dict[str, float] = defaultdict(float)
    started: dict[str, float] = {}
    for name, part in model.named_children():

        def before(*_: Any, name: str = name) -> None:
            started[name] = time.perf_counter()

        def after(*_: Any, name: str = name) -> None:
            seconds[name] += time.perf_counter() - started[name]

        part.register_forward_pre_hook(before)
        part.register_forward_hook(after)
    return seconds


def main() -> None:
    """Time the steps and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE, as for rrsis train.")
    parser.add_argument("--steps", type=int, default=6, help="Timed steps (one more is run).")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    torch.manual_seed(config.seed)
    task = task_for(config)
    model_config = task.model_config(config)
    model: Any = task.build(model_config).train()
    items = training_items(config, model_config, task.tokenizer(model_config))
    loader = DataLoader(
        items,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate_groups if config.data.group_by_image else collate,
        generator=torch.Generator().manual_seed(config.seed),
    )
    parts = time_parts(model)
    forward = backward = 0.0
    expressions = 0
    for step, batch in zip(range(args.steps + 1), loader, strict=False):
        if step == 1:  # the first step's one-off costs are left out
            parts.clear()
        started = time.perf_counter()
        loss = task.loss(model, batch, config)
        middle = time.perf_counter()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if step >= 1:
            forward += middle - started
            backward += time.perf_counter() - middle
            expressions += batch["mask"].shape[0]
    steps = args.steps
    print(
        f"{args.config} {' '.join(args.overrides)}: {steps} steps of {config.batch_size} items, "
        f"{expressions / steps:.1f} expressions per step, {torch.get_num_threads()} threads"
    )
    print(f"forward {forward / steps:.3f} s, backward {backward / steps:.3f} s per step")
    for name, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"  forward of {name}: {seconds / steps:.3f} s")


if __name__ == "__main__":
    main()
