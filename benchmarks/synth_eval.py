"""Accuracy of the shipped default model on the held-out synthetic test split, into its card.

Runs ``rrsis eval`` of ``rrsis_geo/models/crobim-lite-synth`` on a split of synthetic chips (by
default the test split of ``data/synth``, drawn as below with seed 2026, a seed that training and
validation never used), once overall and by expression kind, reads the training run's log for its
wall time, and writes the figures into ``models/crobim-lite-synth.md`` between
``<!-- figures:begin/end -->``. What was evaluated (folder, split, chips, seeds) is read from the
split's ``synth_<split>.jsonl``, not assumed.

    rrsis data synth chips data/synth --split test --images 300 --seed 2026
    HF_HUB_OFFLINE=1 python benchmarks/synth_eval.py --run runs/crobim-lite-synth
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from reporting import machine_line, write_section

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "crobim-lite-synth.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def run_eval(model: str, data: Path, split: str, predictions: Path) -> tuple[str, dict, float]:
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "results.json"
        command = [
            sys.executable, "-m", "rrsis_geo", "eval", model, str(data),
            "--split", split, "--groups", str(data / f"expression_kinds_{split}.json"),
            "--json", str(out), "--predictions", str(predictions),
        ]  # fmt: skip
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if run.returncode != 0:
            sys.exit(f"rrsis eval failed: {run.stderr.strip()}")
        return run.stdout.strip(), json.loads(out.read_text()), seconds


RECIPE_SEEDS = {"train": 0, "val": 1}
"""The seeds of the shipped model's training and validation splits (the card's recipe)."""


def describe_data(data: Path, split: str, count: int) -> str:
    """What was evaluated, from the split's records: folder, split, chips and their seeds."""
    chips: set[tuple[int, int]] = set()
    for line in (data / f"synth_{split}.jsonl").read_text().splitlines():
        record = json.loads(line)
        chips.add((record["seed"], record["image_index"]))
    seeds = sorted({seed for seed, _ in chips})
    seed_text = ", ".join(map(str, seeds))
    used = sorted(name for name, seed in RECIPE_SEEDS.items() if seed in seeds)
    plural = len(seeds) > 1
    held_out = (
        f"{'seeds' if plural else 'a seed'} the recipe's {' and '.join(used)} "
        f"split{'s' if len(used) > 1 else ''} also used: not held out"
        if used
        else f"{'seeds' if plural else 'a seed'} the recipe's train and val splits (seeds "
        f"{RECIPE_SEEDS['train']} and {RECIPE_SEEDS['val']}) never used"
    )
    try:
        shown = data.resolve().relative_to(ROOT)
    except ValueError:
        shown = data
    return (
        f"split `{split}` of `{shown}`: {count} expressions from {len(chips)} chips drawn with "
        f"seed{'s' if plural else ''} {seed_text}, {held_out}"
    )


OUTCOMES = ("right object", "referent + others of its class", "another object", "empty", "other")


def outcome(
    prediction: np.ndarray, labels: np.ndarray, referent: int, same_class: list[int]
) -> str:
    """What a prediction of a positive expression picked, judged on the chip's object labels."""
    target = labels == referent
    if (prediction & target).sum() >= 0.5 * (prediction | target).sum():
        return "right object"
    if not prediction.any():
        return "empty"
    others = any(
        (prediction & (labels == other)).sum() > 0.3 * (labels == other).sum()
        for other in same_class
    )
    referent_share = (prediction & target).sum() / target.sum()
    if others and referent_share > 0.5:
        return "referent + others of its class"
    if others and referent_share < 0.2:
        return "another object"
    return "other"


def error_table(data: Path, split: str, predictions: Path) -> str:
    """Per kind, how many predictions (IoU < 0.5 or not) picked which objects."""
    from rrsis_geo.data.synth import chip_world

    counts: dict[str, Counter[str]] = {}
    worlds: dict[tuple[int, int], Any] = {}
    for line in (data / f"synth_{split}.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "negative":
            continue
        key = (record["seed"], record["image_index"])
        if key not in worlds:
            worlds.clear()  # records of one chip are consecutive
            worlds[key] = chip_world(*key)
        world = worlds[key]
        same_class = [
            o.object_id
            for o in world.objects
            if o.category == record["category_name"] and o.object_id != record["object_id"]
        ]
        prediction = np.array(Image.open(predictions / f"{record['sample_id']}.png")) > 0
        tally = counts.setdefault(record["kind"], Counter())
        tally[outcome(prediction, world.labels, record["object_id"], same_class)] += 1
    rows = ["| kind | n | " + " | ".join(OUTCOMES) + " |", "|:---|" + "---:|" * (len(OUTCOMES) + 1)]
    for kind, outcomes in sorted(counts.items()):
        total = sum(outcomes.values())
        cells = " | ".join(f"{100 * outcomes[o] / total:.0f}%" for o in OUTCOMES)
        rows.append(f"| {kind} | {total} | {cells} |")
    return "\n".join(rows)


def training_summary(run_dir: Path) -> str:
    with open(run_dir / "train_log.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    state = json.loads((run_dir / "checkpoints" / "last" / "trainer_state.json").read_text())
    minutes = float(last["elapsed_s"]) / 60
    summary = (
        f"Training: {last['step']} optimizer steps, {state['samples_seen']} expressions, in "
        f"{minutes:.1f} minutes from the first step to the last (`elapsed_s` of the run's "
        "`train_log.csv`; start-up, the validations and saving add about two minutes)."
    )
    finish_file = run_dir / "selector_finish.json"
    if finish_file.is_file():
        finish = json.loads(finish_file.read_text())
        summary += (
            f" Then the selector fit on the finished mask (`selector_finish.json`): "
            f"{finish['examples']} expressions with a choice from {finish['images']} images, "
            f"gathered in {finish['gather_s'] / 60:.1f} minutes, {finish['steps']} steps in "
            f"{finish.get('fit_s', 0) / 60:.1f} minutes."
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rrsis_geo/models/crobim-lite-synth")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synth")
    parser.add_argument("--split", default="test")
    parser.add_argument("--run", type=Path, default=None, help="Training run folder.")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = shlex.join(["HF_HUB_OFFLINE=1", "python", "benchmarks/synth_eval.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as predictions:
        table, results, seconds = run_eval(args.model, args.data, args.split, Path(predictions))
        errors = error_table(args.data, args.split, Path(predictions))
    print(table)
    print(errors)
    today = datetime.date.today().isoformat()
    lines = [
        "## Figures",
        "",
        f"Synthetic chips ({describe_data(args.data, args.split, results['count'])}), from "
        f"`{command}` on {today} "
        f"({machine_line()}; evaluation took {seconds:.0f} s). Rows by expression kind; "
        "a negative scores 1 when the prediction is empty too (the default empty rule), and "
        "the `positive only` line leaves negatives out.",
        "",
        "```",
        table,
        "```",
        "",
        "What the predictions picked, judged on each chip's object labels (`chip_world`): the "
        "right object means IoU >= 0.5 with the referent; *referent + others* covers over half "
        "the referent and over 30% of another object of its class; *another object* covers "
        "under 20% of the referent and over 30% of another of its class.",
        "",
        errors,
        "",
    ]
    kinds = results["per_category"]
    positives = {k: v for k, v in kinds.items() if k != "negative"}
    count = sum(v["count"] for v in positives.values())
    if count:
        miou = sum(v["miou"] * v["count"] for v in positives.values()) / count
        lines += [f"positive only: mIoU {100 * miou:.2f} over {count} expressions.", ""]
    if args.run is not None:
        lines += [training_summary(args.run), ""]
    body = "\n".join(lines).rstrip()
    if args.no_write:
        print(body)
    else:
        write_section(CARD, body, BEGIN, END, title="crobim-lite-synth")
        print(f"wrote {CARD}")


if __name__ == "__main__":
    main()
