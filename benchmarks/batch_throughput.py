"""Rows per minute: N separate ``rrsis segment`` calls against one ``rrsis batch``, in-process
and on a local Dask cluster of 2 workers, on the same small scenes with the default model.

The scenes are windows of one ``rrsis data synth scene``, each one tile of the default model.
All four ways write the same outputs (checked: the same polygons), one after another in this
run, on this machine. The figures go into docs/performance.md.

    python benchmarks/batch_throughput.py            # 50 scenes
    python benchmarks/batch_throughput.py --scenes 10 --no-doc
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "performance.md"
SENTENCE = "the largest storage tank"
SIDE = 320  # one tile of the default model


def rrsis(*args: object) -> float:
    """Run ``rrsis ARGS`` offline; its wall time in seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RRSIS_MODEL", None)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rrsis_geo", *map(str, args)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def make_scenes(folder: Path, count: int) -> list[Path]:
    """``count`` windows of SIDE px from one synthetic scene, georeferenced."""
    import rasterio
    from rasterio.windows import Window

    per_side = int(count**0.5) + 1
    big = folder / "big.tif"
    rrsis("data", "synth", "scene", big, "--size", per_side * SIDE, "--seed", 9001, "--quiet")
    scenes = folder / "scenes"
    scenes.mkdir()
    with rasterio.open(big) as source:
        for index in range(count):
            window = Window((index % per_side) * SIDE, (index // per_side) * SIDE, SIDE, SIDE)
            profile = {
                **source.profile,
                "width": SIDE,
                "height": SIDE,
                "transform": source.window_transform(window),
            }
            with rasterio.open(scenes / f"w{index:03d}.tif", "w", **profile) as target:
                target.write(source.read(window=window))
    return sorted(scenes.glob("*.tif"))


def polygons(folder: Path) -> dict[str, object]:
    """Each output's union of polygons (to check that the runs wrote the same)."""
    import geopandas

    return {p.name: geopandas.read_file(p).geometry.union_all() for p in folder.glob("*.gpkg")}


def run(count: int) -> dict[str, float]:
    """Seconds of each way of running ``count`` rows."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        scenes = make_scenes(folder, count)
        separate = folder / "separate"
        separate.mkdir()
        seconds = {"separate": 0.0}
        for scene in scenes:
            name = f"{scene.stem}.the_largest_storage_tank.gpkg"
            seconds["separate"] += rrsis("segment", scene, SENTENCE, "-o", separate / name, "-q")
        seconds["batch"] = rrsis("batch", scenes[0].parent, "-e", SENTENCE, "-o",
                                 folder / "batch", "-q", "--rows-in-flight", 1)  # fmt: skip
        seconds["side_by_side"] = rrsis("batch", scenes[0].parent, "-e", SENTENCE, "-o",
                                        folder / "side_by_side", "-q",
                                        "--rows-in-flight", 2)  # fmt: skip
        seconds["dask"] = rrsis("batch", scenes[0].parent, "-e", SENTENCE, "-o", folder / "dask",
                                "--engine", "dask", "--workers", "2", "-q")  # fmt: skip
        reference = polygons(separate)
        for way in ("batch", "side_by_side", "dask"):
            got = polygons(folder / way)
            assert got.keys() == reference.keys() and len(got) == count, way
            for name, union in got.items():
                assert union.symmetric_difference(reference[name]).area == 0, (way, name)
    return seconds


def report(count: int, seconds: dict[str, float]) -> str:
    """The doc section."""
    from reporting import machine_line

    lines = [
        f"`python benchmarks/batch_throughput.py --scenes {count}` — {count} scenes of "
        f"{SIDE} x {SIDE} px (windows of `rrsis data synth scene --seed 9001`, one tile each), "
        f'"{SENTENCE}", the default model, outputs .gpkg; the four ways one after another, '
        f"the same outputs (checked). {machine_line()}, {datetime.date.today().isoformat()}, "
        f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| way | seconds | rows per minute | vs separate calls |",
        "|---|---:|---:|---:|",
    ]
    ways = {
        "separate": f"{count} separate `rrsis segment` calls",
        "batch": "one `rrsis batch` (in-process, one row at a time: the CPU default)",
        "side_by_side": "one `rrsis batch --rows-in-flight 2` (two rows side by side, one model)",
        "dask": "`rrsis batch --engine dask --workers 2` (local cluster, start-up included)",
    }
    for way, label in ways.items():
        rate = 60 * count / seconds[way]
        speedup = seconds["separate"] / seconds[way]
        lines.append(f"| {label} | {seconds[way]:.1f} | {rate:.1f} | {speedup:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    """Measure, print, and write the doc section."""
    sys.path.insert(0, str(HERE))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--no-doc", action="store_true", help="Print only.")
    options = parser.parse_args()
    if shutil.which("dask") is None:
        sys.exit("needs the cluster extra: pip install -e '.[cluster]'")
    body = report(options.scenes, run(options.scenes))
    print(body)
    if not options.no_doc:
        from reporting import gpu_name, section_markers, write_section

        title = "## Batch throughput: rows per minute" + (" (GPU)" if gpu_name() else "")
        write_section(DOC, f"{title}\n\n{body}", *section_markers("batch-throughput"))


if __name__ == "__main__":
    main()
