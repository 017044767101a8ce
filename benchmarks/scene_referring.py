"""Scene-level referring accuracy on large synthetic scenes, scene strategy beside tile strategy.

Draws the evaluation scenes (``write_scene``: seeds 7101-7120, never used by training or other
figures; 18 of 4096 px and 2 of 12288 px by default), reads each scene's own scene-level
sentences (``NAME.scene_expressions.json``: size, extreme, order, region, relation), answers
them with the default model through :func:`~rrsis_geo.inference.pipeline.refer_sentences`
(what ``rrsis segment --strategy scene`` runs, sharing one pass per description), and scores the
chosen polygon against the referent's true polygon (correct: IoU >= 0.5). The per-tile strategy
costs one full pass per sentence, so it runs on a stated subset (``--tile-scenes`` scenes,
``--tile-per-kind`` sentences of each kind) through ``segment(..., strategy="tile")``; its
answer is what a user gets, the union of every polygon it writes.

    HF_HUB_OFFLINE=1 python benchmarks/scene_referring.py --work /tmp/scenes   # ~1 h on 2 CPUs
    HF_HUB_OFFLINE=1 python benchmarks/scene_referring.py --quick --no-doc     # smoke run
    # another checkpoint on chosen scenes, no relations, no tile strategy (printed only)
    HF_HUB_OFFLINE=1 python benchmarks/scene_referring.py --model CHECKPOINT --seeds 7102 7106 \
        --no-relations --tile-scenes 0 --no-doc

Only a run that writes the doc replaces ``benchmarks/results/scene_referring.json``, when it
has finished; every run keeps its rows so far in the work folder (``scene_referring.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import geopandas as gpd
from shapely.ops import unary_union

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reporting import machine_line, write_section

from rrsis_geo.data.synth import scene_paths, write_scene
from rrsis_geo.data.synth.scene_expressions import SCENE_KINDS
from rrsis_geo.inference.model import default_model, load_model
from rrsis_geo.inference.pipeline import SegmentOptions, refer_sentences, segment

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scene-referring.md"
RESULTS = ROOT / "benchmarks" / "results" / "scene_referring.json"
BEGIN, END = "<!-- scene-referring:begin -->", "<!-- scene-referring:end -->"
FIRST_SEED = 7101


def scene_set(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(seed, size) of every evaluation scene."""
    if args.quick:
        return [(FIRST_SEED, 2048), (FIRST_SEED + 1, 2048)]
    if args.seeds:
        return [(seed, args.size) for seed in args.seeds]
    sizes = [args.size] * args.scenes + [args.large_size] * args.large_scenes
    return [(FIRST_SEED + i, size) for i, size in enumerate(sizes)]


def iou(chosen: list[Any], truth: Any) -> float:
    """IoU of the union of the chosen polygons with the true polygon(s)."""
    if not chosen:
        return 0.0
    answer = unary_union(chosen)
    union = answer.union(truth).area
    return answer.intersection(truth).area / union if union else 0.0


def truth_of(objects: gpd.GeoDataFrame, ids: list[int]) -> Any:
    """The union of the referents' true polygons."""
    return unary_union(list(objects[objects["object_id"].isin(ids)].geometry))


def evaluate_scene(
    path: Path, model: Any, tile_quota: dict[str, int], relations: bool = True
) -> list[dict[str, Any]]:
    """Every scene sentence through the scene strategy, and the quota through the tile one.

    Without ``relations`` the relation sentences are left out (they cost a second pass, for
    their anchor: on the 12288 px scenes that is 8 more minutes each on 2 CPUs).
    """
    paths = scene_paths(path)
    objects = gpd.read_file(paths["objects"])
    sentences = json.loads(paths["scene_expressions"].read_text())
    sentences = [s for s in sentences if relations or s["kind"] != "relation"]
    started = time.perf_counter()
    before = getattr(model, "tiles_predicted", 0)
    answers = refer_sentences(path, [s["text"] for s in sentences], model)
    seconds = time.perf_counter() - started
    forwards = getattr(model, "tiles_predicted", 0) - before
    rows = []
    for sentence, answer in zip(sentences, answers, strict=True):
        truth = truth_of(objects, sentence["object_ids"])
        score = iou(answer.chosen, truth)
        same = objects[objects["category"] == sentence["category"]]
        rows.append({
            "scene": path.name, "text": sentence["text"], "kind": sentence["kind"],
            "strategy": "scene", "iou": round(score, 4), "correct": score >= 0.5,
            "candidates": len(answer.regions), "chosen": len(answer.chosen),
            # Why a wrong answer was wrong: the referent was never a candidate, or a region
            # that is no object of the category (a false positive) won.
            "referent_found": any(iou([r.geometry], truth) >= 0.5 for r in answer.regions),
            "chosen_is_category": any(
                iou([g], t) >= 0.5 for g in answer.chosen for t in same.geometry
            ),
        })  # fmt: skip
    print(f"{path.name}: {len(sentences)} sentences, {forwards} forwards, {seconds:.0f} s, "
          f"{sum(r['correct'] for r in rows)} correct", flush=True)  # fmt: skip
    for sentence in sentences:
        if tile_quota.get(sentence["kind"], 0) <= 0:
            continue
        tile_quota[sentence["kind"]] -= 1
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "tile.gpkg"
            segment(path, sentence["text"], model, [out], SegmentOptions(strategy="tile"))
            polygons = list(gpd.read_file(out).to_crs(objects.crs).geometry)
        score = iou(polygons, truth_of(objects, sentence["object_ids"]))
        rows.append({
            "scene": path.name, "text": sentence["text"], "kind": sentence["kind"],
            "strategy": "tile", "iou": round(score, 4), "correct": score >= 0.5,
            "candidates": len(polygons), "chosen": len(polygons),
        })  # fmt: skip
        print(
            f"  tile: {sentence['text']} -> {len(polygons)} polygons, IoU {score:.2f}", flush=True
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Per kind: sentences, correct and mean IoU, scene strategy beside tile strategy."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["strategy"], row["kind"])].append(row)

    def cell(strategy: str, kind: str) -> str:
        found = groups.get((strategy, kind), [])
        if not found:
            return "– | – | –"
        correct = sum(r["correct"] for r in found) / len(found)
        mean = sum(r["iou"] for r in found) / len(found)
        return f"{len(found)} | {100 * correct:.0f}% | {mean:.2f}"

    lines = [
        "| kind | scene: n | scene: correct | scene: mean IoU | tile: n | tile: correct "
        "| tile: mean IoU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in SCENE_KINDS:
        lines.append(f"| {kind} | {cell('scene', kind)} | {cell('tile', kind)} |")
    return "\n".join(lines)


def main() -> None:
    """Draw, answer, score, print; write the JSON rows and the doc section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="Scenes here (reused).")
    parser.add_argument("--scenes", type=int, default=18)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--large-scenes", type=int, default=2)
    parser.add_argument("--large-size", type=int, default=12288)
    parser.add_argument("--tile-scenes", type=int, default=4)
    parser.add_argument("--tile-per-kind", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 scenes of 2048 px.")
    parser.add_argument("--seeds", type=int, nargs="+", help="Only these scenes (at --size).")
    parser.add_argument("--model", default=None, help="Another model (default: the default).")
    parser.add_argument("--no-relations", action="store_true", help="Leave relations out.")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="rrsis-scenes-"))
    work.mkdir(parents=True, exist_ok=True)
    partial = work / RESULTS.name  # rows so far, kept if a later scene fails
    spec = args.model or str(default_model())
    model = load_model(spec, "cpu")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    scenes = scene_set(args)
    for index, (seed, size) in enumerate(scenes):
        path = work / f"scene_{seed}_{size}.tif"
        if not scene_paths(path)["scene_expressions"].exists():
            write_scene(path, size=size, seed=seed, overwrite=True)
        quota = {k: args.tile_per_kind for k in SCENE_KINDS} if index < args.tile_scenes else {}
        relations = size != args.large_size and not args.no_relations
        rows += evaluate_scene(path, model, quota, relations)
        partial.write_text(json.dumps(rows, indent=1) + "\n")
    wall = time.perf_counter() - started
    sizes = ", ".join(
        f"{sum(1 for _, s in scenes if s == n)} x {n} px" for n in sorted({s for _, s in scenes})
    )
    command = " ".join(["python benchmarks/scene_referring.py", *sys.argv[1:]])
    seeds = ", ".join(map(str, args.seeds)) if args.seeds else f"{scenes[0][0]}-{scenes[-1][0]}"
    asked = "no scene" if args.no_relations else f"the {args.size} px scenes only"
    body = "\n".join([
        "## Accuracy on synthetic scenes",
        "",
        f"`HF_HUB_OFFLINE=1 {command}` on {machine_line()}, {datetime.date.today().isoformat()}, "
        f"{wall / 60:.0f} min: model `{args.model or 'crobim-lite-synth'}`, {len(scenes)} scenes "
        f"({sizes}; `rrsis data synth scene` seeds {seeds}, used by no "
        "training split and no other figure), every scene-level sentence the scene's own "
        "`NAME.scene_expressions.json` holds, answered as `rrsis segment` answers them by "
        "default (scene strategy, each referent checked against the model's vocabulary). "
        "Correct: the chosen polygon overlaps the "
        "referent with IoU >= 0.5. The per-tile strategy runs one full pass per sentence, so it "
        f"was run on the first {args.tile_scenes} scenes, {args.tile_per_kind} sentence(s) of "
        "each kind; its answer is what a user gets: the union of all the polygons it writes. "
        f"Relations (a second pass, for the anchor) were asked on {asked}.",
        "",
        table(rows),
    ])  # fmt: skip
    print(body)
    if not args.no_doc:  # the committed rows and the doc change together, at the end
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        write_section(DOC, body, BEGIN, END, title="Scene-level referring")


if __name__ == "__main__":
    main()
