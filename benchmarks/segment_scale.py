"""Scale benchmark: wall time and peak RSS of ``rrsis segment`` against a plain block copy.

For each size, a synthetic scene is generated (``make_scene.py``), then two child processes are
timed on it: ``block_copy.py`` (the I/O floor) and ``rrsis segment`` with the per-pixel
reference model. Wall time and peak RSS (``ru_maxrss`` from ``os.wait4``) are taken for the
whole child process. The results are printed and written to ``docs/performance.md`` between
the ``segment-scale`` markers, with pass/fail against the targets.

    python benchmarks/segment_scale.py --sizes 5000,10000,20000
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from make_scene import make_scene
from reporting import machine_line, write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "python:rrsis_geo.inference.reference_models:brightness"
BEGIN, END = "<!-- segment-scale:begin -->", "<!-- segment-scale:end -->"
RSS_LIMIT = 1.3e9  # bytes, at the largest size
RSS_GROWTH = 1.3  # largest / 5000 peak
TIME_RATIO = 2.0  # segment / copy, at 10000 and above
PEERS = (
    ("geoai", 72.8, "14.5 GB", 3.0),
    ("samgeo", 58.2, "1.2 GB", 2.6),
    ("Raster Vision", 133.5, "3.8 GB", 5.2),
)


@dataclass
class Run:
    seconds: float
    peak_bytes: int
    stdout: str


@dataclass
class Result:
    size: int
    copy: list[Run] = field(default_factory=list)
    segment: list[Run] = field(default_factory=list)

    def best(self, runs: list[Run]) -> tuple[float, int]:
        """Fastest time and highest peak over repeats."""
        return min(r.seconds for r in runs), max(r.peak_bytes for r in runs)


def measure(command: list[str]) -> Run:
    """Run ``command`` and return its wall time and peak RSS; raise if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} exited {process.returncode}:\n"
                f"{err.read().decode(errors='replace')}"
            )
        return Run(seconds, usage.ru_maxrss * 1024, out.read().decode())


def rrsis_command() -> str:
    """The ``rrsis`` script beside this interpreter (no pyenv shim in the timing)."""
    beside = Path(sys.executable).with_name("rrsis")
    return str(beside) if beside.exists() else shutil.which("rrsis") or "rrsis"


def source_digest() -> str:
    """Short sha256 of the package sources: which code the figures belong to."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "rrsis_geo").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def versions() -> str:
    import numpy
    import rasterio
    import torch

    return (
        f"Python {platform.python_version()}, numpy {numpy.__version__}, rasterio "
        f"{rasterio.__version__}, GDAL {rasterio.__gdal_version__}, torch {torch.__version__}, "
        f"GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX', 'unset')}, "
        f"rrsis_geo sources sha256 {source_digest()}"
    )


def run_size(size: int, data: Path, repeat: int) -> Result:
    scene = make_scene(data / f"scene_{size}.tif", size)
    copy_target, output = data / f"copy_{size}.tif", data / f"segment_{size}.tif"
    result = Result(size)
    for _ in range(repeat):
        result.copy.append(
            measure([sys.executable, str(HERE / "block_copy.py"), str(scene), str(copy_target)])
        )
        copy_target.unlink()
        result.segment.append(
            measure(
                [
                    rrsis_command(),
                    "segment",
                    str(scene),
                    "bright fields",
                    "-o",
                    str(output),
                    "--model",
                    MODEL,
                    "--quiet",
                    "--overwrite",
                    "--json",
                ]
            )
        )
    return result


def report(results: list[Result], command: str) -> str:
    """The markdown section (without markers)."""
    base = next((r.best(r.segment)[1] for r in results if r.size == 5000), None)
    rows, timing_rows, verdicts = [], [], []
    for r in results:
        copy_s, copy_rss = r.best(r.copy)
        seg_s, seg_rss = r.best(r.segment)
        growth = seg_rss / base if base else None
        rows.append(
            f"| {r.size} | {copy_s:.1f} | {seg_s:.1f} | {seg_s / copy_s:.2f}x | "
            f"{copy_rss / 1e6:.0f} | {seg_rss / 1e6:.0f} | "
            f"{f'{growth:.2f}x' if growth else 'n/a'} |"
        )
        timings = json.loads(r.segment[-1].stdout)["timings"]
        timing_rows.append(
            f"| {r.size} | "
            + " | ".join(
                f"{timings.get(k, 0.0):.1f}"
                for k in ("statistics", "tiles", "model", "cog", "total")
            )
            + " |"
        )
        if r.size >= 10000:
            ok = seg_s <= TIME_RATIO * copy_s
            verdicts.append(
                f"- time at {r.size}: {seg_s / copy_s:.2f}x copy "
                f"(target <= {TIME_RATIO}x): {'PASS' if ok else 'FAIL'}"
            )
    largest = max(results, key=lambda r: r.size)
    peak = largest.best(largest.segment)[1]
    verdicts.append(
        f"- peak RSS at {largest.size}: {peak / 1e9:.2f} GB "
        f"(target <= {RSS_LIMIT / 1e9} GB): {'PASS' if peak <= RSS_LIMIT else 'FAIL'}"
    )
    if base:
        ok = peak <= RSS_GROWTH * base
        verdicts.append(
            f"- peak RSS at {largest.size} vs 5000: {peak / base:.2f}x "
            f"(target <= {RSS_GROWTH}x): {'PASS' if ok else 'FAIL'}"
        )
    peers = [f"| {name} | {s} | {rss} | {ratio}x |" for name, s, rss, ratio in PEERS]
    return "\n".join(
        [
            "## Scene scale: `rrsis segment` vs a plain block copy",
            "",
            f"Produced by `{command}` on {datetime.date.today().isoformat()}.",
            "",
            f"- Machine: {machine_line()}",
            f"- Software: {versions()}",
            f"- Scene: synthetic N x N x 3 uint8 GeoTIFF, 512 x 512 tiles, DEFLATE "
            f"(`benchmarks/make_scene.py`); model `{MODEL}`; repeats per size: "
            f"{len(results[0].copy)} (fastest time, highest peak).",
            "- Copy: `benchmarks/block_copy.py`, every block window read and written to a tiled "
            'DEFLATE GeoTIFF with the same profile. Segment: `rrsis segment SCENE "bright fields" '
            "-o OUT.tif --model ... --quiet --overwrite --json`. Both are whole child processes "
            "(interpreter start and imports included); peak RSS is `ru_maxrss` from `os.wait4`.",
            "",
            "| size (px) | copy (s) | segment (s) | segment / copy | copy peak RSS (MB) "
            "| segment peak RSS (MB) | segment RSS vs 5000 |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Targets (1 GB = 10^9 bytes):",
            "",
            *verdicts,
            "",
            "Where segment time goes (seconds, from `--json` `timings` of the last run; `model` is "
            "part of `tiles`):",
            "",
            "| size (px) | statistics | tiles | model | cog | total |",
            "|---:|---:|---:|---:|---:|---:|",
            *timing_rows,
            "",
            "Peers on this machine for reference (20000 px scene, per-pixel model, whole process; "
            "reported in the issue, not measured by this script):",
            "",
            "| tool | time (s) | peak RSS | time vs block copy |",
            "|---|---:|---:|---:|",
            *peers,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000,20000")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "data")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/segment_scale.py", *sys.argv[1:]])
    results = []
    for size in sorted(int(s) for s in args.sizes.split(",")):
        results.append(run_size(size, args.data_dir, args.repeat))
        copy_s, copy_rss = results[-1].best(results[-1].copy)
        seg_s, seg_rss = results[-1].best(results[-1].segment)
        print(
            f"{size}: copy {copy_s:.1f} s {copy_rss / 1e6:.0f} MB, "
            f"segment {seg_s:.1f} s {seg_rss / 1e6:.0f} MB",
            flush=True,
        )
    body = report(results, command)
    print(body)
    if not args.no_doc:
        write_section(args.doc, body, BEGIN, END)


if __name__ == "__main__":
    main()
