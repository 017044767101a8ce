"""Model benchmark: CroBIM parameters per part, forward latency per tile, text-encoder share.

For each named config (``crobim-lite`` at 512, ``crobim-swinb`` at 480; the latter builds with
random weights when its hub weights are out of reach, which does not change its cost), this:

1. counts parameters per part (``CroBIM.parameter_counts``);
2. times ``CroBIMPredictor.predict`` on random float32 tiles ``(B, 3, S, S)`` for B = 1 and 8
   (one warm-up call, then the median of N calls), the expression encoded once beforehand;
3. runs a 64-tile scene (8 batches of 8) for one expression with forward hooks on the text
   encoder (calls and time) and on every other part (time), to measure what the text encoder
   costs: the plain pass runs once per expression, CAPM's prompted pass once per batch;
4. repeats the latency on the GPU with autocast when one is available, with peak memory.

Results are printed and written to ``docs/performance.md`` between the ``model-latency``
markers, and a short table into ``models/<name>.md`` between the ``figures`` markers.

    HF_HUB_OFFLINE=1 python benchmarks/model_latency.py --configs crobim-lite,crobim-swinb
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from reporting import cpu_model, ram_gib, write_section
from torch import nn

from rrsis_geo.inference.predictor import CroBIMPredictor
from rrsis_geo.nn.crobim import CroBIM
from rrsis_geo.nn.encoders import load_tokenizer

HERE = Path(__file__).resolve().parent

ROOT = HERE.parent
BEGIN, END = "<!-- model-latency:begin -->", "<!-- model-latency:end -->"
FIG_BEGIN, FIG_END = "<!-- figures:begin -->", "<!-- figures:end -->"
EXPRESSION = "the largest storage tank"
PARTS = ("vision", "text", "capm", "lgfa", "mid", "heads")
NO_GPU = "not measured: no GPU lent to this session"


@dataclass
class Latency:
    """Timed calls of ``predict`` for one batch size on one device."""

    batch: int
    seconds: list[float]
    cpu_seconds: list[float]
    other_seconds: list[float]
    peak_bytes: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def per_tile(self) -> float:
        return self.median / self.batch

    @property
    def cpu_use(self) -> float:
        """Process CPU time over wall time (at most the thread count; lower: other load)."""
        return sum(self.cpu_seconds) / sum(self.seconds)

    @property
    def other_use(self) -> float:
        """CPU time of every other process over wall time, in cores."""
        return sum(self.other_seconds) / sum(self.seconds)


@dataclass
class TextShare:
    """A whole scene of ``tiles`` tiles for one expression, with hook timings."""

    tiles: int
    batch: int
    plain_passes: int
    prompted_passes: int
    encode_seconds: float  # encode_expression, wall
    predict_seconds: float  # sum of predict calls, wall
    predict_cpu_seconds: float  # the same in process CPU time
    predict_other_seconds: float  # CPU time of other processes meanwhile
    text_seconds: float  # inside the text encoder, plain + prompted
    plain_pass_seconds: float  # median of separate timed plain passes (batch 1)
    part_seconds: dict[str, float] = field(default_factory=dict)  # summed over the batches

    @property
    def total(self) -> float:
        return self.encode_seconds + self.predict_seconds

    @property
    def share(self) -> float:
        return self.text_seconds / self.total

    @property
    def per_tile_text(self) -> float:
        """Text time if the plain pass ran once per tile instead of once per scene."""
        return self.text_seconds + (self.tiles - 1) * self.plain_pass_seconds

    @property
    def per_tile_total(self) -> float:
        return self.total + (self.tiles - 1) * self.plain_pass_seconds

    @property
    def per_tile_share(self) -> float:
        return self.per_tile_text / self.per_tile_total


@dataclass
class ConfigResult:
    name: str
    size: int
    params: dict[str, int]
    build_warnings: list[str]
    cpu: list[Latency] = field(default_factory=list)
    gpu: list[Latency] = field(default_factory=list)
    share: TextShare | None = None


def machine() -> dict[str, str]:
    """CPU count, CPU model, RAM and platform."""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "ram": f"{ram_gib():.1f} GiB",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "interop": str(torch.get_num_interop_threads()),
    }


def busy_seconds() -> float:
    """CPU seconds all processes have spent so far (``/proc/stat``; 0 where it is missing)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Guard:
    """Keeps other processes' load out of the timings (this machine may be shared).

    Before a timed call, wait (up to ``max_wait`` seconds) until other processes use less than
    ``limit`` cores over one second; after it, discard and repeat the call (up to ``retries``
    times) when they used more than ``limit`` cores meanwhile.
    """

    limit: float = 0.15
    retries: int = 3
    max_wait: float = 300.0
    discarded: int = 0
    waited: float = 0.0

    def wait_quiet(self) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < self.max_wait:
            busy, cpu, wall = busy_seconds(), time.process_time(), time.perf_counter()
            time.sleep(1.0)
            other = busy_seconds() - busy - (time.process_time() - cpu)
            if other / (time.perf_counter() - wall) < self.limit:
                break
        self.waited += time.perf_counter() - start

    def measure(self, call: Callable[[], object], device: torch.device) -> tuple[float, ...]:
        """Wall, own CPU and others' CPU seconds of ``call``, retried while others were busy."""
        for attempt in range(self.retries + 1):
            self.wait_quiet()
            start, cpu_start, busy_start = time.perf_counter(), time.process_time(), busy_seconds()
            call()
            synchronize(device)
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            other = max(0.0, busy_seconds() - busy_start - cpu)
            if other / wall <= self.limit or attempt == self.retries:
                return wall, cpu, other
            self.discarded += 1
            print(f"    discarded a {wall:.2f} s call: others used {other / wall:.2f} cores")
        raise AssertionError("unreachable")


GUARD = Guard()


def build(name: str) -> tuple[CroBIM, object, list[str]]:
    """Model (eval), tokenizer, and the warnings the build emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = CroBIM.from_config(name).eval()
        tokenizer = load_tokenizer(model.config.text)
    messages = []
    for warning in caught:
        if warning.category.__name__ == "RandomInitWarning":
            messages.append(str(warning.message))
            print(f"  warning: {warning.category.__name__}: {warning.message}", flush=True)
    return model, tokenizer, messages


def tiles(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Random float32 tiles, roughly what a normalized image looks like."""
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)


def time_predict(predictor: CroBIMPredictor, batch: int, runs: int) -> Latency:
    """One warm-up call, then ``runs`` timed calls of ``predict`` (the expression encoded once)."""
    device = predictor.device
    encoded = predictor.encode_expression(EXPRESSION)
    images = tiles(batch, predictor.model.config.input_size)
    predictor.predict(images, encoded)  # warm-up
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, cpu_seconds, other_seconds = [], [], []
    for _ in range(runs):
        wall, cpu, other = GUARD.measure(lambda: predictor.predict(images, encoded), device)
        seconds.append(wall)
        cpu_seconds.append(cpu)
        other_seconds.append(other)
        print(
            f"    batch {batch}: {seconds[-1]:.3f} s (CPU use: ours "
            f"{cpu_seconds[-1] / seconds[-1]:.2f}, others {other_seconds[-1] / seconds[-1]:.2f})",
            flush=True,
        )
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return Latency(batch, seconds, cpu_seconds, other_seconds, peak)


def part_modules(model: CroBIM) -> dict[str, list[nn.Module]]:
    """The same grouping as ``CroBIM.parameter_counts``."""
    return {
        "vision": [model.vision],
        "text": [model.text],
        "capm": [model.capm],
        "lgfa": [model.lgfa],
        "mid": [model.mid],
        "heads": [model.sentence, model.mask_head, model.presence_head],
    }


@contextmanager
def part_timers(
    model: CroBIM, device: torch.device
) -> Iterator[tuple[dict[str, float], dict[str, int]]]:
    """Seconds and calls per part, from forward pre-hooks and hooks (parts do not nest)."""
    seconds = dict.fromkeys(PARTS, 0.0)
    calls = dict.fromkeys(PARTS, 0)
    handles = []

    def hooks(part: str) -> tuple[Callable[..., None], Callable[..., None]]:
        started: list[float] = []

        def pre(module: nn.Module, args: object) -> None:
            synchronize(device)
            started.append(time.perf_counter())

        def post(module: nn.Module, args: object, output: object) -> None:
            synchronize(device)
            seconds[part] += time.perf_counter() - started.pop()
            calls[part] += 1

        return pre, post

    for part, modules in part_modules(model).items():
        for module in modules:
            pre, post = hooks(part)
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
    try:
        yield seconds, calls
    finally:
        for handle in handles:
            handle.remove()


def plain_pass_seconds(predictor: CroBIMPredictor, runs: int = 7) -> float:
    """Median wall time of the plain text pass (batch 1) alone, after one warm-up."""
    seconds = []
    with part_timers(predictor.model, predictor.device) as (parts, _):
        for _ in range(runs + 1):
            before = parts["text"]
            predictor.encode_expression(EXPRESSION)
            seconds.append(parts["text"] - before)
    return statistics.median(seconds[1:])


def text_share(predictor: CroBIMPredictor, total_tiles: int, batch: int) -> TextShare:
    """A scene of ``total_tiles`` tiles in batches of ``batch`` for one expression."""
    device = predictor.device
    size = predictor.model.config.input_size
    batches = [tiles(batch, size, seed) for seed in range(total_tiles // batch)]
    # Warm up outside the hooks so that first-call costs do not land in one part.
    predictor.predict(batches[0], predictor.encode_expression(EXPRESSION))
    GUARD.wait_quiet()
    plain = plain_pass_seconds(predictor)
    with part_timers(predictor.model, device) as (parts, calls):
        start = time.perf_counter()
        encoded = predictor.encode_expression(EXPRESSION)
        synchronize(device)
        encode_seconds = time.perf_counter() - start
        plain_passes = calls["text"]
        plain_in_scene = parts["text"]
        predict_seconds = predict_cpu_seconds = predict_other_seconds = 0.0
        for i, images in enumerate(batches):
            kept_parts, kept_calls = dict(parts), dict(calls)

            def call(
                images: np.ndarray = images,
                kept_parts: dict[str, float] = kept_parts,
                kept_calls: dict[str, int] = kept_calls,
            ) -> None:
                # A discarded attempt must not count: restore the hooks' totals first.
                parts.update(kept_parts)
                calls.update(kept_calls)
                predictor.predict(images, encoded)

            wall, cpu, other = GUARD.measure(call, device)
            predict_seconds += wall
            predict_cpu_seconds += cpu
            predict_other_seconds += other
            print(f"    scene batch {i + 1}/{len(batches)}: {predict_seconds:.1f} s", flush=True)
        prompted_passes = calls["text"] - plain_passes
        text_seconds = parts["text"]
        # Per-part times of the predict calls only (the plain pass is in encode_seconds).
        part_seconds = dict(parts)
    part_seconds["text"] -= plain_in_scene
    return TextShare(
        tiles=len(batches) * batch,
        batch=batch,
        plain_passes=plain_passes,
        prompted_passes=prompted_passes,
        encode_seconds=encode_seconds,
        predict_seconds=predict_seconds,
        predict_cpu_seconds=predict_cpu_seconds,
        predict_other_seconds=predict_other_seconds,
        text_seconds=text_seconds,
        plain_pass_seconds=plain,
        part_seconds=part_seconds,
    )


def run_config(name: str, args: argparse.Namespace) -> ConfigResult:
    print(f"{name}: building (load average {os.getloadavg()[0]:.2f})", flush=True)
    model, tokenizer, messages = build(name)
    counts = model.parameter_counts()
    counts["total"] = sum(counts.values())
    result = ConfigResult(name, model.config.input_size, counts, messages)
    print("  parameters (M): " + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in counts.items()))
    predictor = CroBIMPredictor(model, tokenizer, device="cpu")
    for batch, runs in ((1, args.runs_1), (8, args.runs_8)):
        latency = time_predict(predictor, batch, runs)
        result.cpu.append(latency)
        print(
            f"  cpu batch {batch}: {latency.median:.3f} s/batch, {latency.per_tile:.3f} s/tile",
            flush=True,
        )
    if name in args.share_configs:
        print(f"  text share: {args.share_tiles} tiles in batches of 8", flush=True)
        result.share = text_share(predictor, args.share_tiles, 8)
        share = result.share
        print(
            f"  plain passes {share.plain_passes}, prompted passes {share.prompted_passes}, "
            f"text {share.text_seconds:.2f} s of {share.total:.2f} s ({share.share:.1%}); "
            f"per-tile re-encoding: {share.per_tile_share:.1%}",
            flush=True,
        )
        print("  parts (s): " + ", ".join(f"{k} {v:.2f}" for k, v in share.part_seconds.items()))
    if torch.cuda.is_available():
        predictor = CroBIMPredictor(model, tokenizer, device="cuda")
        for batch, runs in ((1, max(args.runs_1, 5)), (8, max(args.runs_8, 5))):
            latency = time_predict(predictor, batch, runs)
            result.gpu.append(latency)
            print(
                f"  gpu batch {batch}: {latency.median * 1e3:.1f} ms/batch, "
                f"peak {latency.peak_bytes / 2**20:.0f} MiB",
                flush=True,
            )
        model.cpu()
    del predictor, model
    return result


def gpu_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def param_table(results: list[ConfigResult]) -> list[str]:
    columns = [*PARTS, "total"]
    lines = [
        "| config | input | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for r in results:
        cells = " | ".join(f"{r.params[c] / 1e6:.2f}" for c in columns)
        lines.append(f"| {r.name} | {r.size} | {cells} |")
    return lines


def latency_rows(results: list[ConfigResult]) -> list[str]:
    lines = [
        "| config | input | batch | runs | s / batch (median) | s / tile | all runs (s) "
        "| CPU use: ours | CPU use: others |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        for lat in r.cpu:
            runs = ", ".join(f"{s:.2f}" for s in lat.seconds)
            lines.append(
                f"| {r.name} | {r.size} | {lat.batch} | {len(lat.seconds)} | "
                f"{lat.median:.2f} | {lat.per_tile:.3f} | {runs} | {lat.cpu_use:.2f} | "
                f"{lat.other_use:.2f} |"
            )
    return lines


def share_lines(r: ConfigResult) -> list[str]:
    s = r.share
    assert s is not None
    predict_total = s.predict_seconds
    parts_total = sum(s.part_seconds.values())
    lines = [
        f"{r.name} at {r.size}: {s.tiles} tiles in {s.tiles // s.batch} batches of {s.batch}, "
        f'one expression ("{EXPRESSION}"). Text-encoder calls counted and timed with a forward '
        "pre-hook and hook on `predictor.model.text`.",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| plain text passes (`encode_expression`) | {s.plain_passes} |",
        f"| prompted text passes (CAPM, one per batch) | {s.prompted_passes} |",
        f"| `encode_expression` wall time (s) | {s.encode_seconds:.3f} |",
        f"| `predict` wall time, all batches (s) | {s.predict_seconds:.2f} |",
        f"| CPU use during `predict`: ours | {s.predict_cpu_seconds / s.predict_seconds:.2f} |",
        f"| CPU use during `predict`: other processes | "
        f"{s.predict_other_seconds / s.predict_seconds:.2f} |",
        f"| time inside the text encoder (s) | {s.text_seconds:.2f} |",
        f"| text-encoder share of the total | {s.share:.1%} |",
        f"| one plain pass, batch 1 (s, median of 7) | {s.plain_pass_seconds:.4f} |",
        f"| plain pass once per tile instead: text time (s) | {s.per_tile_text:.2f} |",
        f"| plain pass once per tile instead: share | {s.per_tile_share:.1%} |",
        f"| saved by encoding once per scene (s) | {(s.tiles - 1) * s.plain_pass_seconds:.2f} |",
        "",
        "The per-tile figures are an estimate: the measured total plus "
        f"{s.tiles - 1} more plain passes at the batch-1 time.",
        "",
        f"Per part, summed over the {s.tiles // s.batch} `predict` calls (forward hooks; "
        "`text` here is the prompted passes only; `other` is the predictor around the model: "
        "tensor conversion, final upsampling, sigmoid):",
        "",
        "| part | s (all batches) | s / batch | share of predict |",
        "|---|---:|---:|---:|",
    ]
    batches = s.tiles // s.batch
    for part in PARTS:
        sec = s.part_seconds[part]
        lines.append(f"| {part} | {sec:.2f} | {sec / batches:.3f} | {sec / predict_total:.1%} |")
    other = max(0.0, predict_total - parts_total)
    lines.append(f"| other | {other:.2f} | {other / batches:.3f} | {other / predict_total:.1%} |")
    return lines


def gpu_lines(results: list[ConfigResult]) -> list[str]:
    if not any(r.gpu for r in results):
        return [f"GPU latency with autocast and `torch.cuda.max_memory_allocated`: {NO_GPU}."]
    lines = [
        f"GPU: {gpu_name()}, autocast (the predictor's default on CUDA), "
        "median of at least 5 calls after one warm-up.",
        "",
        "| config | input | batch | ms / batch | ms / tile | peak allocated (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for lat in r.gpu:
            lines.append(
                f"| {r.name} | {r.size} | {lat.batch} | {lat.median * 1e3:.1f} | "
                f"{lat.per_tile * 1e3:.1f} | {(lat.peak_bytes or 0) / 2**20:.0f} |"
            )
    return lines


def report(results: list[ConfigResult], info: dict[str, str], command: str, date: str) -> str:
    """The ``docs/performance.md`` section (without markers)."""
    lines = [
        "## Model latency: CroBIM parameters and forward time per tile",
        "",
        f"Produced by `{command}` on {date}.",
        "",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, {info['platform']}",
        f"- Software: Python {info['python']}, torch {info['torch']}, "
        f"torch.get_num_threads() = {info['threads']} "
        f"(interop {info['interop']})",
        "- Method: `CroBIM.from_config(name).eval()`, `CroBIMPredictor(model, tokenizer, "
        'device="cpu")`, the expression encoded once with `encode_expression`, then '
        "`predict(tiles, encoded)` on random float32 tiles `(B, 3, S, S)` at the config's input "
        "size (no resizing), under `torch.inference_mode()`; one warm-up call, then the median "
        "of N calls. Weights do not change the cost: `crobim-swinb` is built with random "
        "weights offline (RandomInitWarning for the Swin-B and BERT-base encoders).",
        "",
        "Parameters (millions, `model.parameter_counts()`; heads = sentence query + mask head + "
        "presence head):",
        "",
        *param_table(results),
        "",
        "CPU latency per call of `predict`. CPU use is CPU time over wall time of the timed "
        "calls, in cores: ours (this process, at most the thread count) and others (every other "
        "process, from `/proc/stat`). The machine may be shared: before each timed call the "
        f"script waits (up to {GUARD.max_wait:.0f} s) until other processes use under "
        f"{GUARD.limit} cores, and repeats a call (up to {GUARD.retries} times) when they used "
        f"more meanwhile; {GUARD.discarded} calls were discarded, {GUARD.waited:.0f} s spent "
        "checking for quiet or waiting.",
        "",
        *latency_rows(results),
        "",
    ]
    for r in results:
        if r.share is not None:
            lines += ["### Text-encoder share of a scene", "", *share_lines(r), ""]
    lines += ["### GPU", "", *gpu_lines(results)]
    return "\n".join(lines)


def figures(r: ConfigResult, info: dict[str, str], command: str, date: str) -> str:
    """The short ``models/<name>.md`` section (without markers)."""
    columns = [*PARTS, "total"]
    lines = [
        "## Figures",
        "",
        f"Parameters (millions) and CPU forward latency at {r.size} x {r.size}, from "
        f"`{command}` on {date} ({info['nproc']} CPUs, {info['cpu']}, torch {info['torch']}, "
        f"{info['threads']} threads); details in `docs/performance.md`.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---:|" * len(columns),
        "| " + " | ".join(f"{r.params[c] / 1e6:.2f}" for c in columns) + " |",
        "",
        "| device | batch | s / batch | s / tile |",
        "|---|---:|---:|---:|",
    ]
    for lat in r.cpu:
        lines.append(f"| CPU | {lat.batch} | {lat.median:.2f} | {lat.per_tile:.3f} |")
    for lat in r.gpu:
        lines.append(f"| {gpu_name()} | {lat.batch} | {lat.median:.4f} | {lat.per_tile:.4f} |")
    if not r.gpu:
        lines += ["", f"GPU: {NO_GPU}."]
    if r.share is not None:
        lines += [
            "",
            f"Text encoder: {r.share.share:.1%} of a {r.share.tiles}-tile scene "
            f"({r.share.plain_passes} plain pass, {r.share.prompted_passes} prompted passes).",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="crobim-lite,crobim-swinb")
    parser.add_argument("--runs-1", type=int, default=3, help="timed calls at batch 1")
    parser.add_argument("--runs-8", type=int, default=2, help="timed calls at batch 8")
    parser.add_argument(
        "--share-configs", default="crobim-lite", help="configs for the 64-tile text-share run"
    )
    parser.add_argument("--share-tiles", type=int, default=64, help="multiple of 8")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument(
        "--other-limit",
        type=float,
        default=GUARD.limit,
        help="cores other processes may use during a timed call before it is repeated",
    )
    parser.add_argument("--retries", type=int, default=GUARD.retries)
    parser.add_argument(
        "--max-wait", type=float, default=GUARD.max_wait, help="seconds to wait for quiet"
    )
    args = parser.parse_args()
    GUARD.limit, GUARD.retries, GUARD.max_wait = args.other_limit, args.retries, args.max_wait
    args.share_configs = [c for c in args.share_configs.split(",") if c]
    if os.environ.get("HF_HUB_OFFLINE", "") in ("", "0"):
        print("note: HF_HUB_OFFLINE is not set; hub weights may be downloaded", flush=True)
    command = shlex.join(["python", "benchmarks/model_latency.py", *sys.argv[1:]])
    command = "HF_HUB_OFFLINE=1 " + command
    date = datetime.date.today().isoformat()
    info = machine()
    print(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['ram']}, torch {info['torch']}, "
        f"{info['threads']} threads",
        flush=True,
    )
    if not torch.cuda.is_available():
        print("no GPU available: GPU latency and memory not measured", flush=True)
    results = []
    with torch.inference_mode():
        for name in (c for c in args.configs.split(",") if c):
            results.append(run_config(name, args))
    body = report(results, info, command, date)
    print()
    print(body)
    if args.no_doc:
        return
    write_section(args.doc, body, BEGIN, END, "Performance")
    for r in results:
        write_section(
            args.models_dir / f"{r.name}.md",
            figures(r, info, command, date),
            FIG_BEGIN,
            FIG_END,
            r.name,
        )
    written = [str(args.models_dir / f"{r.name}.md") for r in results]
    print(f"wrote {args.doc} and {', '.join(written)}")


if __name__ == "__main__":
    main()
