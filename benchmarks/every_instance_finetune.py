"""Experiment: teach the mask before selection that "The {category}." means every instance.

A short fine-tune of a trained CroBIM (the default model by default), on chips drawn in memory
(``chip_world`` seed 7500, used by nothing else): each step holds, per chip, "The {category}."
with every object of that category in the target, and one of the chip's usual single-object
expressions with its referent. The loss is the recipe's BCE + Dice on the mask before
selection, with presence; the text encoder and the selector stay frozen. It saves a checkpoint
for ``benchmarks/instance_probe.py`` and ``benchmarks/synth_eval.py --model``. It is an
experiment, not a recipe: it has no negatives and no hard negatives (see
docs/scene-referring.md for what it showed).

    HF_HUB_OFFLINE=1 python benchmarks/every_instance_finetune.py --steps 300 --out /tmp/ft
    HF_HUB_OFFLINE=1 python benchmarks/instance_probe.py /tmp/ft --no-doc
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

SEED = 7500
"""Chips of this seed: no training split, evaluation, probe or other figure draws with it."""


def chip_batch(
    rng: np.random.Generator, chips: int, config: object, start: int
) -> tuple[list[torch.Tensor], list[str], list[torch.Tensor], int]:
    """Images, sentences and targets of ``chips`` chips from chip index ``start`` on."""
    from rrsis_geo.data.synth import chip_world
    from rrsis_geo.data.synth.expressions import make_expressions
    from rrsis_geo.training.dataset import prepare_image, prepare_mask

    images, sentences, targets = [], [], []
    used = 0
    index = start
    while used < chips:
        world = chip_world(SEED, index)
        index += 1
        categories = sorted({o.category for o in world.objects})
        if not categories:
            continue
        used += 1
        image = prepare_image(world.image, config)
        category = categories[rng.integers(len(categories))]
        every = [o.object_id for o in world.objects if o.category == category]
        pairs = [(f"The {category}.", np.isin(world.labels, every))]
        usual = [e for e in make_expressions(rng, world) if e.object_id]
        if usual:
            chosen = usual[rng.integers(len(usual))]
            pairs.append((chosen.text, world.labels == chosen.object_id))
        for sentence, mask in pairs:
            images.append(image)
            sentences.append(sentence)
            targets.append(prepare_mask(mask, config))
    return images, sentences, targets, index


def main() -> None:
    """Fine-tune and save."""
    from rrsis_geo.models.registry import from_pretrained
    from rrsis_geo.nn.losses import segmentation_loss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="crobim-lite-synth")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--chips", type=int, default=2, help="Chips per step.")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(SEED)
    loaded = from_pretrained(args.checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    model.train()
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not name.startswith(("text.", "selector."))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    started, index = time.perf_counter(), 0
    for step in range(args.steps):
        images, sentences, targets, index = chip_batch(rng, args.chips, model.config, index)
        encoded = tokenizer(
            sentences,
            padding="max_length",
            truncation=True,
            max_length=model.config.text.max_tokens,
            return_tensors="pt",
        )
        output = model(
            torch.stack(images), encoded["input_ids"], encoded["attention_mask"], select=False
        )
        loss = segmentation_loss(
            output.mask_logits.float(),
            torch.stack(targets),
            output.presence_logits.float(),
            torch.ones(len(images)),
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            print(f"step {step}: loss {loss.item():.4f}, {time.perf_counter() - started:.0f} s")
    model.eval()
    model.save_pretrained(args.out, tokenizer=tokenizer, include_text_encoder=False)
    print(f"saved {args.out} after {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
