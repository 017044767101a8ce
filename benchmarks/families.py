"""The model families side by side: parameters and CPU forward latency per tile.

For every named config of every registered architecture (tiny test configs aside), this builds
the model with random weights (the cost of a forward does not depend on them, and most
pretrained weights are out of reach here), counts its parameters, and times one forward of a
single tile at its input size (one warm-up, then the median of N), in eval mode. The table
goes into docs/models.md.

    HF_HUB_OFFLINE=1 python benchmarks/families.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "models.md"
BEGIN, END = "<!-- families:begin -->", "<!-- families:end -->"


def measure(name: str, runs: int) -> dict[str, object]:
    """Parameters and the median forward seconds of one tile of the named config ``name``."""
    from rrsis_geo.models.registry import create_model, find_config

    found = find_config(name)
    assert found is not None
    entry, config = found
    summary = entry.model_class().summary(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # encoders without reachable weights start random
        model = create_model(name, pretrained=False).eval()
    size, tokens = int(summary["tile_size"]), int(summary["max_tokens"])
    images = torch.randn(1, 3, size, size)
    ids = torch.ones(1, tokens, dtype=torch.long)
    mask = torch.ones(1, tokens, dtype=torch.long)
    seconds = []
    with torch.inference_mode():
        for _ in range(runs + 1):
            started = time.perf_counter()
            model(images, ids, mask)
            seconds.append(time.perf_counter() - started)
    return {
        "name": name,
        "architecture": entry.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input": size,
        "seconds": statistics.median(seconds[1:]),
        "vision": summary.get("vision"),
        "text": summary.get("text"),
    }


def table(rows: list[dict[str, object]], runs: int) -> str:
    """The doc section."""
    sys.path.insert(0, str(HERE))
    from reporting import machine_line

    lines = [
        f"`HF_HUB_OFFLINE=1 python benchmarks/families.py --runs {runs}` on {machine_line()}, "
        f"{datetime.date.today().isoformat()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average after: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}. One tile, batch 1, eval mode, "
        f"float32, the median of {runs} forwards after one warm-up.",
        "",
        "| config | architecture | parameters | input px | CPU s / tile | image encoder | text |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['architecture']} | {row['parameters'] / 1e6:.1f} M "
            f"| {row['input']} | {row['seconds']:.2f} | {row['vision']} | {row['text']} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Measure every named config (or those given), print, write the doc section."""
    from rrsis_geo.models.registry import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", help="Comma-separated named configs (default: all).")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    names = (
        args.configs.split(",")
        if args.configs
        else [
            name
            for entry in ARCHITECTURES.values()
            for name in entry.named_configs()
            if "tiny" not in name
        ]
    )
    rows = []
    for name in names:
        rows.append(measure(name, args.runs))
        print(rows[-1], flush=True)
    body = table(rows, args.runs)
    print(body)
    if not args.no_doc:
        sys.path.insert(0, str(HERE))
        from reporting import write_section

        write_section(DOC, body, BEGIN, END, title="Models")


if __name__ == "__main__":
    main()
