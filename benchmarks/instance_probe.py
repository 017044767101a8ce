"""Does a description find every instance? "The ship." on chips that hold several ships.

The scene strategy reads a sentence's description ("the largest ship" -> "The ship.") as the
mask before object selection and expects every instance of the category in it. This probe
asks that of the model on synthetic chips it never trained on: for each chip and each category
with objects in it, it runs "The {category}." (mask before selection, as the description
pass does) and counts an object found when at least half of its pixels are above 0.5. Recall
is given by how many objects of the category the chip holds (one alone, or several) and by
colour. The chips are drawn in memory (``chip_world``, seeds no training or other figure
uses), so it needs no data folder; the figures go into docs/scene-referring.md.

    HF_HUB_OFFLINE=1 python benchmarks/instance_probe.py                 # the default model
    HF_HUB_OFFLINE=1 python benchmarks/instance_probe.py runs/x/checkpoints/best --no-doc
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "scene-referring.md"
BEGIN, END = "<!-- instance-probe:begin -->", "<!-- instance-probe:end -->"
SEED = 7401
"""Chips of this seed: no training split, evaluation or other figure draws with it."""
FOUND = 0.5
"""An object is found when at least this share of its pixels is above 0.5."""


def probe(checkpoint: str, chips: int) -> tuple[Counter, Counter]:
    """Objects seen and found, keyed by (alone or several, colour, category)."""
    from rrsis_geo.data.synth import chip_world
    from rrsis_geo.models.registry import from_pretrained
    from rrsis_geo.training.dataset import prepare_image

    loaded = from_pretrained(checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    seen: Counter = Counter()
    found: Counter = Counter()
    for index in range(chips):
        world = chip_world(SEED, index)
        categories = sorted({o.category for o in world.objects})
        if not categories:
            continue
        image = prepare_image(world.image, model.config)[None].expand(len(categories), -1, -1, -1)
        encoded = tokenizer(
            [f"The {category}." for category in categories],
            padding="max_length",
            truncation=True,
            max_length=model.config.text.max_tokens,
            return_tensors="pt",
        )
        with torch.inference_mode():
            output = model(image, encoded["input_ids"], encoded["attention_mask"], select=False)
        size = world.labels.shape
        maps = F.interpolate(output.mask_logits[:, None], size=size, mode="bilinear")[:, 0]
        for category, logits in zip(categories, maps.sigmoid().numpy(), strict=True):
            objects = [o for o in world.objects if o.category == category]
            company = "alone" if len(objects) == 1 else "several"
            for obj in objects:
                pixels = logits[world.labels == obj.object_id]
                key = (company, obj.colour, category)
                seen[key] += 1
                found[key] += bool(pixels.size and (pixels > 0.5).mean() >= FOUND)
    return seen, found


def recall_rows(seen: Counter, found: Counter, part: int) -> list[tuple[str, str, int, float]]:
    """Recall by one part of the key (0: alone/several, 1: colour, 2: category), per company."""
    rows = []
    for company in ("alone", "several"):
        names = sorted({key[part] for key in seen if key[0] == company})
        for name in names if part else [company]:
            keys = [k for k in seen if k[0] == company and (not part or k[part] == name)]
            total = sum(seen[k] for k in keys)
            rows.append((company, name, total, sum(found[k] for k in keys) / total))
    return rows


def report(checkpoint: str, chips: int, seen: Counter, found: Counter, seconds: float) -> str:
    sys.path.insert(0, str(HERE))
    from reporting import machine_line

    lines = [
        "## Every instance of a description: a probe",
        "",
        f"`HF_HUB_OFFLINE=1 python benchmarks/instance_probe.py {checkpoint}` on {machine_line()}, "
        f"{datetime.date.today().isoformat()}, {seconds:.0f} s: {chips} synthetic chips "
        f'(`chip_world` seed {SEED}, never trained on), "The {{category}}." for each category '
        "in a chip, read before object selection as the description pass reads it; an object "
        f"is found when at least {FOUND:.0%} of its pixels are above 0.5. *alone*: the only "
        "object of its category in the chip; *several*: one of two or more.",
        "",
        "| objects of the category in the chip | objects | found |",
        "|---|---:|---:|",
        *(f"| {c} | {n} | {r:.0%} |" for c, _, n, r in recall_rows(seen, found, 0)),
        "",
        "| company | colour | objects | found |",
        "|---|---|---:|---:|",
        *(f"| {c} | {name} | {n} | {r:.0%} |" for c, name, n, r in recall_rows(seen, found, 1)),
        "",
        "| company | category | objects | found |",
        "|---|---|---:|---:|",
        *(f"| {c} | {name} | {n} | {r:.0%} |" for c, name, n, r in recall_rows(seen, found, 2)),
    ]
    return "\n".join(lines)


def main() -> None:
    """Probe, print, and write the doc section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="crobim-lite-synth")
    parser.add_argument("--chips", type=int, default=300)
    parser.add_argument("--no-doc", action="store_true", help="Print only.")
    args = parser.parse_args()
    started = time.perf_counter()
    seen, found = probe(args.checkpoint, args.chips)
    body = report(args.checkpoint, args.chips, seen, found, time.perf_counter() - started)
    print(body)
    if not args.no_doc:
        from reporting import write_section

        write_section(DOC, body, BEGIN, END)


if __name__ == "__main__":
    main()
