"""Training throughput and peak memory of ``rrsis train`` for crobim-lite on this machine.

Writes a small RISBench-layout data set of random chips, runs ``rrsis train`` as a child process
for a few optimizer steps per input size, reads samples/s from the run's ``train_log.csv``
(steady state: the first step, with its one-off costs, is left out) and the peak RSS from
``os.wait4``, projects 40 epochs of RRSIS-D's 12,181 training triplets, and writes the figures
into ``docs/performance.md`` between ``<!-- train-throughput:begin/end -->``.

    HF_HUB_OFFLINE=1 python benchmarks/train_throughput.py --sizes 320,512 --steps 6
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from reporting import machine_line, write_section

ROOT = Path(__file__).resolve().parents[1]
RRSISD_TRAIN = 12_181
BEGIN, END = "<!-- train-throughput:begin -->", "<!-- train-throughput:end -->"


def write_chips(folder: Path, count: int, size: int = 512) -> Path:
    """RISBench layout: random chips with one square referent each."""
    root = folder / "RISBench"
    (root / "img_rgb").mkdir(parents=True)
    (root / "mask").mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 2)):
        lines = []
        for index in range(n):
            name = f"train_{index + 1000 * (split == 'val')}_0.png"
            image = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            mask[100:200, 150:260] = 255
            Image.fromarray(image).save(root / "img_rgb" / name)
            Image.fromarray(mask, mode="L").save(root / "mask" / name)
            lines.append(f"{name} the storage tank at the top of the image\n")
        (root / f"output_phrase_{split}.txt").write_text("".join(lines))
    return root


def run(size: int, steps: int, batch: int, data: Path, work: Path) -> dict[str, float]:
    config = {
        "name": f"lite-{size}",
        "output_dir": str(work / "runs"),
        "model": "crobim-lite",
        "model_overrides": {"input_size": size},
        "data": {"root": str(data), "layout": "risbench"},
        "batch_size": batch,
        "max_steps": steps,
        "log_every": 1,
        "checkpoint_every": 10_000,
        "eval_every": 10_000,
    }
    path = work / f"lite-{size}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "rrsis_geo", "train", str(path)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"rrsis train failed: {process.stderr.read().decode()[-2000:]}")
    with open(work / "runs" / f"lite-{size}" / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    elapsed = [float(r["elapsed_s"]) for r in rows]
    steady = (len(rows) - 1) * batch / (elapsed[-1] - elapsed[0])
    return {
        "size": size,
        "batch": batch,
        "steps": steps,
        "samples_per_second": steady,
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,
        "wall_s": wall,
        "rrsisd_40_epochs_h": 40 * RRSISD_TRAIN / steady / 3600,
    }


def render(results: list[dict[str, float]], command: str) -> str:
    lines = [
        BEGIN,
        "## Training throughput: crobim-lite on CPU",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}.",
        "",
        f"- Machine: {machine_line()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, float32 (AMP is GPU-only).",
        "- Method: `rrsis train` as a child process on random 512 x 512 RISBench-layout chips "
        "(resized to the input size), AdamW, batch as below; samples/s from `train_log.csv` "
        "leaving out the first step; peak RSS from `os.wait4`; the projection is "
        f"40 epochs x {RRSISD_TRAIN:,} RRSIS-D training triplets at that rate.",
        "",
        "| input | batch | steps | samples/s | peak RSS (GB) | 40 epochs of RRSIS-D (h) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['steps']} | {r['samples_per_second']:.2f} | "
            f"{r['peak_rss_gb']:.2f} | {r['rrsisd_40_epochs_h']:.0f} |"
        )
    lines += [
        "",
        "GPU (`crobim-swinb` at 480, AMP, batch 8): not measured: no GPU lent to this session.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="320,512")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    command = "HF_HUB_OFFLINE=1 python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        data = write_chips(work, count=args.batch * args.steps)
        results = [
            run(int(size), args.steps, args.batch, data, work) for size in args.sizes.split(",")
        ]
    text = render(results, command.strip())
    print(text)
    if not args.no_doc:
        body = text.removeprefix(BEGIN + "\n").removesuffix("\n" + END)
        write_section(ROOT / "docs" / "performance.md", body, BEGIN, END)


if __name__ == "__main__":
    main()
