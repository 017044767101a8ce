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
RELATION_SIZES = (4096,)
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
        "anchor costs the text-conditioned part of the network only.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_doc:
        write_section(DOC, body, BEGIN, END)


if __name__ == "__main__":
    main()
