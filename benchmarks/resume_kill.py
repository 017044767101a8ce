"""``rrsis segment --resume`` killed with SIGKILL at random moments resumes to the same pixels.

A 1500 x 1500 px scene (16 tile rows of 128 px tiles, 6 blocks of rows) is segmented once
without interruption (the reference). Then, for each trial, a ``--resume`` run is killed with
``kill -9`` after a random delay between 30% and 100% of the reference run's duration (the
first ~3 s are Python's and torch's start-up: kills land in start-up, in the tile loop, while
a block of rows is flushed and its progress file replaced, or while the COG is written; a
resumed run is shorter and may finish before its kill), one more time in half of the
trials, and a last ``--resume`` run finishes it. While a run is alive the folder is polled for
the final name every 5 ms, and again right after each kill: whenever it exists, its pixels
must already be the reference's (it is renamed only when complete; a kill that lands after the
rename finds the run done). The finished output's pixels are compared with the reference, and
no hidden file may be left in the folder (but after a kill that landed between the rename and
the state's removal).

The model is ``tests/inference/sleepy_model.py`` (the per-pixel brightness model sleeping
``--sleep`` seconds per batch of 8 tiles), so that a run lasts a few seconds.

    python benchmarks/resume_kill.py [--trials 20] [--seed 16] [--sleep 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rasters import textured, write_raster  # noqa: E402

SLEEPY = "python:tests.inference.sleepy_model:factory"
SENTENCE = "the bright fields"


def _command(scene: Path, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "rrsis_geo", "segment", str(scene), SENTENCE, "-o", str(output),
        "-m", SLEEPY, "--tile-size", "128", "--resume", "-q",
    ]  # fmt: skip


def _environment(sleep: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RRSIS_MODEL", "RRSIS_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", RRSIS_TEST_SLEEP=str(sleep), PYTHONPATH=str(ROOT))
    return env


def _pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


def _kill_after(
    command: list[str], env: dict[str, str], delay: float, output: Path, expected: np.ndarray
) -> dict:
    """Start ``command``, poll for ``output`` while it runs, SIGKILL it after ``delay`` s.

    The final name may exist only once complete: whenever it is seen (while the run is alive
    or right after the kill), its pixels are compared with the reference at once.
    """
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    partial = False
    while process.poll() is None and time.monotonic() - started < delay:
        if output.exists():
            partial |= not np.array_equal(_pixels(output), expected)
            break
        time.sleep(0.005)
    exited = process.poll() is not None
    if not exited:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    written = output.exists()  # renamed before the kill landed (or the run ended)
    partial |= written and not np.array_equal(_pixels(output), expected)
    state = output.with_name(f".{output.stem}.resume.tmp.json")
    rows = json.loads(state.read_text())["rows"] if state.exists() else None
    return {"delay_s": round(delay, 2), "written": written, "partial": partial, "rows": rows}


def _trial(
    scene: Path, folder: Path, env: dict, rng: random.Random, span: float, expected: np.ndarray
) -> dict:
    output = folder / "out.tif"
    command = _command(scene, output)
    kills = [_kill_after(command, env, rng.uniform(0.3 * span, span), output, expected)]
    if rng.random() < 0.5 and not kills[-1]["written"]:
        kills.append(_kill_after(command, env, rng.uniform(0.3 * span, span), output, expected))
    if not kills[-1]["written"]:
        subprocess.run(command, env=env, cwd=ROOT, check=True)
    done = ("out.tif", "out.tif.json")
    leftovers = sorted(p.name for p in folder.iterdir() if p.name not in done)
    return {"kills": kills, "pixels": _pixels(output), "leftovers": leftovers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per model call")
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)
    env = _environment(arguments.sleep)
    with tempfile.TemporaryDirectory(prefix="rrsis-resume-kill-") as temporary:
        base = Path(temporary)
        scene = base / "scene.tif"
        write_raster(scene, textured(3, 1500, 1500, seed=3))
        reference = base / "reference" / "out.tif"
        reference.parent.mkdir()
        started = time.monotonic()
        subprocess.run(_command(scene, reference), env=env, cwd=ROOT, check=True)
        span = time.monotonic() - started
        expected = _pixels(reference)
        print(f"uninterrupted run: {span:.1f} s; kills drawn in [{0.3 * span:.1f}, {span:.1f}] s")
        failures = 0
        for index in range(arguments.trials):
            folder = base / f"trial{index:02d}"
            folder.mkdir()
            result = _trial(scene, folder, env, rng, span, expected)
            same = np.array_equal(result["pixels"], expected)
            partial = any(kill["partial"] for kill in result["kills"])
            # A kill landing after the outputs were renamed (complete) may leave the state.
            late = result["kills"][-1]["written"]
            ok = same and not partial and (late or not result["leftovers"])
            failures += not ok
            kills = ", ".join(
                f"{k['delay_s']:.2f} s -> "
                + ("output already complete" if k["written"] else f"rows saved {k['rows']}")
                for k in result["kills"]
            )
            print(
                f"trial {index + 1:2d}: kills at {kills}; identical pixels {same}, incomplete "
                f"file under the final name {partial}, leftovers {result['leftovers'] or 'none'}"
            )
    print(f"{arguments.trials - failures}/{arguments.trials} trials passed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
