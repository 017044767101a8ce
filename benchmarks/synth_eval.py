"""Accuracy of the shipped default model on the held-out synthetic test split, into its card.

Runs ``rrsis eval`` of ``models/crobim-lite-synth`` on the test split (seed 2026, a seed that
training and validation never used), once overall and by expression kind, reads the training
run's log for its wall time, and writes the figures into ``models/crobim-lite-synth.md``
between ``<!-- figures:begin/end -->``.

    rrsis data synth chips data/synth --split test --images 300 --seed 2026
    HF_HUB_OFFLINE=1 python benchmarks/synth_eval.py --run runs/crobim-lite-synth
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reporting import machine_line, write_section

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "crobim-lite-synth.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def run_eval(model: str, data: Path, split: str) -> tuple[str, dict, float]:
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "results.json"
        command = [
            sys.executable, "-m", "rrsis_geo", "eval", model, str(data),
            "--split", split, "--groups", str(data / f"expression_kinds_{split}.json"),
            "--json", str(out),
        ]  # fmt: skip
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if run.returncode != 0:
            sys.exit(f"rrsis eval failed: {run.stderr.strip()}")
        return run.stdout.strip(), json.loads(out.read_text()), seconds


def training_summary(run_dir: Path) -> str:
    with open(run_dir / "train_log.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    minutes = float(last["elapsed_s"]) / 60
    return (
        f"Training: {last['step']} optimizer steps of batch 8 ({int(last['step']) * 8} samples) "
        f"in {minutes:.1f} minutes from the first step to the last (`elapsed_s` of the run's "
        "`train_log.csv`; start-up, the final validation and saving add about a minute)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/crobim-lite-synth")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synth")
    parser.add_argument("--split", default="test")
    parser.add_argument("--run", type=Path, default=None, help="Training run folder.")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    table, results, seconds = run_eval(args.model, args.data, args.split)
    print(table)
    today = datetime.date.today().isoformat()
    lines = [
        "## Figures",
        "",
        f"Held-out synthetic test split ({results['count']} expressions from 300 chips drawn "
        f"with seed 2026, never used in training or validation), from "
        f"`HF_HUB_OFFLINE=1 python benchmarks/synth_eval.py` on {today} "
        f"({machine_line()}; evaluation took {seconds:.0f} s). Rows by expression kind; "
        "a negative scores 1 when the prediction is empty too (the default empty rule), and "
        "the `positive only` line leaves negatives out.",
        "",
        "```",
        table,
        "```",
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
    if not args.no_write:
        write_section(CARD, body, BEGIN, END, title="crobim-lite-synth")
        print(f"wrote {CARD}")


if __name__ == "__main__":
    main()
