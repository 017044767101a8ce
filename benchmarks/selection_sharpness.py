"""Choose ``selection_sharpness`` on val: mIoU / oIoU for several values from one model pass.

Sharpness is an inference setting of object selection (no loss reads the selected mask): the
logits of a region drop by sharpness x its score's shortfall from the best candidate. Upsampling
is linear, so the selected logits for any sharpness follow from one pass: the unselected logits
plus the upsampled fading. Also prints, per expression kind, how often the best-scored candidate
is the one that best overlaps the referent, among expressions with two or more candidates and a
candidate over the referent (IoU >= 0.3, the training loss's rule).

    HF_HUB_OFFLINE=1 python benchmarks/selection_sharpness.py \
        runs/crobim-lite-synth/checkpoints/best
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rrsis_geo.data.readers import open_dataset
from rrsis_geo.models.registry import from_pretrained
from rrsis_geo.nn.selection import fading, referent_candidates
from rrsis_geo.training.dataset import prepare_image, prepare_mask
from rrsis_geo.training.metrics import RunningMetrics

HARD = 1e4  # "keep only the best region"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--sharpness", default="1,2,4,8,16,hard")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    values = [HARD if v == "hard" else float(v) for v in args.sharpness.split(",")]
    loaded = from_pretrained(args.checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    if model.selector is None:
        parser.error(f"{args.checkpoint} has no object selection")
    kinds = json.loads((args.data / f"expression_kinds_{args.split}.json").read_text())
    metrics = {value: RunningMetrics() for value in values}
    picks: Counter[tuple[str, bool]] = Counter()
    samples = list(open_dataset(args.data, args.split, "risbench"))
    threshold = np.log(model.config.threshold / (1 - model.config.threshold))
    for start in range(0, len(samples), args.batch_size):
        batch = samples[start : start + args.batch_size]
        images = torch.stack([prepare_image(s.image, model.config) for s in batch])
        encoded = tokenizer(
            [s.expression for s in batch],
            padding="max_length",
            truncation=True,
            max_length=model.config.text.max_tokens,
            return_tensors="pt",
        )
        with torch.no_grad():
            output = model(images, encoded["input_ids"], encoded["attention_mask"])
        assert output.candidates is not None and output.candidate_scores is not None
        assert output.unselected_logits is not None
        candidates, scores = output.candidates, output.candidate_scores
        faded = fading(scores, candidates)
        faded = F.interpolate(faded[:, None], size=images.shape[-2:], mode="bilinear")[:, 0]
        targets = torch.stack([prepare_mask(s.mask, model.config) for s in batch])
        referent, covered = referent_candidates(candidates, targets)
        for index, sample in enumerate(batch):
            target = np.asarray(sample.mask) > 0
            kind = kinds.get(sample.sample_id, "unknown")
            for value in values:
                logits = output.unselected_logits[index] + value * faded[index]
                logits = F.interpolate(logits[None, None], size=target.shape, mode="bilinear")
                metrics[value].update(logits[0, 0].numpy() > threshold, target, kind)
            if int(candidates.valid[index].sum()) >= 2 and bool(covered[index]):
                picks[kind, int(scores[index].argmax()) == int(referent[index])] += 1
    print(f"{args.checkpoint} on {args.data} [{args.split}], threshold {model.config.threshold}")
    print("| sharpness | mIoU | oIoU |\n|---:|---:|---:|")
    for value in values:
        result = metrics[value].compute()
        name = "hard" if value == HARD else f"{value:g}"
        print(f"| {name} | {result.miou:.3f} | {result.oiou:.3f} |")
    print("\n| kind | with a choice | best-scored candidate is the referent's |\n|:---|---:|---:|")
    for kind in sorted({k for k, _ in picks}):
        right, wrong = picks[kind, True], picks[kind, False]
        print(f"| {kind} | {right + wrong} | {right / (right + wrong):.0%} |")


if __name__ == "__main__":
    main()
