"""Fit a fresh object selector on a finished checkpoint, as a run's ``selector_finish`` does.

For trying the finishing fit (images, steps, selection switches) on a model that is already
trained, without training its mask again. The fitted model is saved; measure it with
``benchmarks/selection_sharpness.py`` on val (or on a diagnosis split, never on test):

    HF_HUB_OFFLINE=1 python benchmarks/selector_finish.py \\
        runs/crobim-lite-synth/checkpoints/best /tmp/finished --images 2000 --steps 3000
    HF_HUB_OFFLINE=1 python benchmarks/selection_sharpness.py /tmp/finished

The training images, batch size and seed come from the run config (``--config``); the fit's
settings from its ``selector_finish`` section unless given here. Switches such as
``--switch selection_ranks`` turn selection switches on for the fresh selector (its inputs are
computed by the switched selector, so a model trained without them can be tried with them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from rrsis_geo.models.registry import from_pretrained
from rrsis_geo.training.config import load_config
from rrsis_geo.training.selection import finish_selector
from rrsis_geo.training.trainer import training_items

SWITCHES = ("selection_ranks", "selection_nearness", "selection_geometry_weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("output", type=Path)
    parser.add_argument("--config", default="models/configs/crobim-lite-synth.yaml")
    parser.add_argument("--images", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--switch", action="append", default=[], choices=SWITCHES)
    args = parser.parse_args()
    overrides = [f"selector_finish.{k}={v}" for k in ("images", "steps") if (v := getattr(args, k))]
    config = load_config(args.config, overrides)
    if config.selector_finish.images < 1:
        parser.error("give --images (the config's selector_finish.images is 0)")
    loaded = from_pretrained(args.checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    if model.selector is None:
        parser.error(f"{args.checkpoint} has no object selection")
    if args.switch:
        model.config = dataclasses.replace(model.config, **dict.fromkeys(args.switch, True))
        model.reset_selector()
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    facts = finish_selector(model, training_items(config, model.config, tokenizer), config)
    facts["total_s"] = round(time.perf_counter() - started, 1)
    model.eval().save_pretrained(args.output, tokenizer)
    (args.output / "selector_finish.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
