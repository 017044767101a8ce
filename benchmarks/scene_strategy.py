"""Wall time and model forwards of ``--strategy scene`` against ``--strategy tile``.

The same command line, scene, sentence, model and outputs, one strategy after the other, in one
run on one machine: `rrsis segment SCENE SENTENCE -o out.tif -o out.gpkg --strategy S --json`.
Scenes are drawn by ``rrsis data synth scene`` with seeds no figure or training uses. The
relation sentence needs a second pass (its anchor), so it is timed on its own line.

    python benchmarks/scene_strategy.py                  # 4096 and 8192 px, into the doc
    python benchmarks/scene_strategy.py --sizes 1024 --no-doc   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reporting import machine_line, write_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- scene-strategy:begin -->", "<!-- scene-strategy:end -->"
SEEDS = {1024: 7301, 4096: 7302, 8192: 7303}
SENTENCES = {
    "size": "The largest storage tank.",
    "relation": "The storage tank closest to the building.",
}
RELATION_SIZES = (4096, 8192)
"""Sizes at which the relation sentence (two passes) is also timed."""


def rrsis(*args: object) -> dict:
    """Run ``rrsis`` as users do and return its ``--json`` summary."""
    run = subprocess.run(
        [sys.executable, "-m", "rrsis_geo", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(f"rrsis {' '.join(map(str, args))} failed: {run.stderr.strip()}")
    return json.loads(run.stdout) if run.stdout.strip() else {}


def measure(scene: Path, sentence: str, strategy: str, folder: Path) -> dict:
    """One timed run; wall time includes start-up, the same for both strategies."""
    outputs = [folder / f"{strategy}.tif", folder / f"{strategy}.gpkg"]
    args = [a for o in outputs for a in ("-o", o)]
    started = time.perf_counter()
    summary = rrsis("segment", scene, sentence, *args, "--strategy", strategy, "--json",
                    "--overwrite", "--progress", "none")  # fmt: skip
    wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 1),
        "forwards": summary["tiles"]["predicted"],
        "check_forwards": summary["tiles"].get("check_forwards", 0),
        "passes": summary["tiles"]["passes"],
        "tiles": summary["tiles"]["total"],
        "polygons": summary["polygons"],
    }


def forward_shares(repeat: int = 3) -> dict[str, float]:
    """Seconds of one model call on a batch of 8 tiles: the vision encoder alone, one sentence,
    two sentences sharing the vision pass (what a relation's description and anchor cost)."""
    import numpy as np
    import torch

    from rrsis_geo.inference.model import default_model, encode_sentence, load_model, predict_many

    model = load_model(str(default_model()), "cpu")
    tiles = np.random.default_rng(0).random((8, 3, 320, 320), dtype=np.float32)
    one = [encode_sentence(model, "The storage tank.", True)]
    two = [*one, encode_sentence(model, "The building.", True)]
    images = torch.from_numpy(tiles).contiguous(memory_format=torch.channels_last)

    def best(call: Any) -> float:
        call()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return round(min(times), 3)

    with torch.inference_mode():
        vision = best(lambda: model.model.vision(images))  # type: ignore[attr-defined]
    return {
        "vision": vision,
        "one": best(lambda: predict_many(model, tiles, one)),
        "two": best(lambda: predict_many(model, tiles, two)),
    }


def main() -> None:
    """Measure and print; write the doc section unless --no-doc."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--work", type=Path, default=None, help="Keep scenes here.")
    parser.add_argument("--repeat", type=int, default=2, help="Runs per strategy (min kept).")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="rrsis-strategy-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        scene = work / f"scene_{size}.tif"
        if not scene.exists():
            rrsis("data", "synth", "scene", scene, "--size", size, "--seed", SEEDS[size], "-q")
        for kind, sentence in SENTENCES.items():
            if kind == "relation" and size not in RELATION_SIZES:
                continue
            # Each strategy twice, alternating, the faster run kept: one slow run (a cache, a
            # neighbour process) must not decide the ratio.
            runs: dict[str, list[dict]] = {"tile": [], "scene": []}
            for _ in range(args.repeat):
                for strategy in runs:
                    runs[strategy].append(measure(scene, sentence, strategy, work))
            tile, scene_run = (min(r, key=lambda m: m["wall_s"]) for r in runs.values())
            ratio = scene_run["wall_s"] / tile["wall_s"]
            rows.append((size, kind, sentence, tile, scene_run, ratio))
            print(f"{size} px {kind}: tile {tile} scene {scene_run} ratio {ratio:.2f}", flush=True)
    shares = forward_shares()
    print(f"one model call on 8 tiles: {shares}", flush=True)
    relation = " and ".join(f"{r[5]:.2f}x ({r[0]} px)" for r in rows if r[1] == "relation")
    lines = [
        "## Scene strategy: cost against the per-tile run",
        "",
        f"`python benchmarks/scene_strategy.py --sizes {' '.join(map(str, args.sizes))}` on "
        f"{machine_line()}, {datetime.date.today().isoformat()}; default model, "
        "`rrsis segment SCENE SENTENCE -o out.tif -o out.gpkg --strategy S` (wall time includes "
        "start-up; the faster of "
        f"{args.repeat} alternating runs of each strategy; scenes from `rrsis data synth scene` "
        f"with seeds {', '.join(str(SEEDS[s]) for s in args.sizes)}). Forwards: tiles "
        "predicted per sentence; check: the chips x categories the check of the referent read.",
        "",
        "| scene | sentence | tile: wall s | tile: forwards | scene: wall s | scene: forwards "
        "(passes) | scene: check | scene / tile |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size, kind, sentence, tile, scene_run, ratio in rows:
        lines.append(
            f"| {size} px | {kind}: {sentence} | {tile['wall_s']} | {tile['forwards']} | "
            f"{scene_run['wall_s']} | {scene_run['forwards']} ({scene_run['passes']}) | "
            f"{scene_run['check_forwards']} | {ratio:.2f}x |"
        )
    lines += [
        "",
        "A sentence of size, extreme, order or region words is one pass over the tiles, as the "
        "per-tile run is (of its description instead of the whole sentence), plus the regions "
        "and the ranking, and the check of the referent: one chip per region that decides the "
        "choice, read for each category of the model's vocabulary in one call. A relation also "
        "needs its anchor's map: both sentences run in the same tiling loop, the tiles read "
        "once and seen once by the vision encoder (`CroBIMPredictor.predict_many`), so the "
        "anchor costs the text-conditioned part of the network only; a call holds "
        "`--batch-size` tile-sentence pairs (4 tiles of both sentences), since on this CPU a "
        "call on twice the batch costs more than twice as much. In the default model the "
        f"text-conditioned part is most of the network: one call on 8 tiles took {shares['one']} "
        f"s, of which the vision encoder {shares['vision']} s, and the same 8 tiles with a "
        f"second sentence {shares['two']} s (same run, best of 3). A relation costs "
        f"{relation or 'more than'} the per-tile run here "
        "(issue #14 asks for at most 1.3x). The anchor cannot be left out of the tiles far from "
        "the candidates: before the check, the description's matches cover the whole scene "
        '(183 regions of "The storage tank." on the 4096 px scene, on 2026-12-03), and '
        "only those that decide the answer are checked. What is left is the text-conditioned "
        "part's own cost, a matter of the model (a lighter head), not of the pipeline.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_doc:
        write_section(DOC, body, BEGIN, END)


if __name__ == "__main__":
    main()
