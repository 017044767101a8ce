"""Does a model hear place words? Swap left/right and top/bottom in the val position expressions.

For every val position expression with a place word whose referent has another object of its
class in the chip, runs the model on the expression and on its mirror ("top left" -> "bottom
right") and prints the mean probability on the referent and on the other objects of its class,
before and after. A model that hears the words moves its probability to the other objects.

    rrsis data synth chips data/synth --split val --images 100 --seed 1
    HF_HUB_OFFLINE=1 python benchmarks/place_word_probe.py rrsis_geo/models/crobim-lite-synth
    HF_HUB_OFFLINE=1 python benchmarks/place_word_probe.py runs/crobim-lite-synth/checkpoints/best
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rrsis_geo.data.readers import open_dataset
from rrsis_geo.data.synth import chip_world
from rrsis_geo.models.registry import from_pretrained
from rrsis_geo.training.dataset import prepare_image

MIRROR = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    loaded = from_pretrained(args.checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    records = {
        row["sample_id"]: row
        for row in map(
            json.loads, (args.data / f"synth_{args.split}.jsonl").read_text().split("\n")[:-1]
        )
    }
    figures = []
    for sample in open_dataset(args.data, args.split, "risbench"):
        record = records[sample.sample_id]
        words = record["sent"].rstrip(".").split()
        if record["kind"] != "position" or not any(w in MIRROR for w in words):
            continue
        world = chip_world(record["seed"], record["image_index"])
        others = [
            o.object_id
            for o in world.objects
            if o.category == record["category_name"] and o.object_id != record["object_id"]
        ]
        if not others:
            continue
        mirrored = " ".join(MIRROR.get(w, w) for w in words) + "."
        image = prepare_image(sample.image, model.config)[None].expand(2, -1, -1, -1)
        encoded = tokenizer(
            [record["sent"], mirrored],
            padding="max_length",
            truncation=True,
            max_length=model.config.text.max_tokens,
            return_tensors="pt",
        )
        with torch.no_grad():
            logits = model(image, encoded["input_ids"], encoded["attention_mask"]).mask_logits
        size = world.labels.shape
        probability = F.interpolate(logits[:, None], size=size, mode="bilinear")[:, 0].sigmoid()
        referent, rest = world.labels == record["object_id"], np.isin(world.labels, others)
        figures.append(
            [float(p.numpy()[mask].mean()) for p in probability for mask in (referent, rest)]
        )
    table = np.array(figures)
    print(f"{len(table)} position expressions with a place word and others of the class")
    print(f"as written: referent {table[:, 0].mean():.2f}, others {table[:, 1].mean():.2f}")
    print(f"mirrored:   referent {table[:, 2].mean():.2f}, others {table[:, 3].mean():.2f}")


if __name__ == "__main__":
    main()
