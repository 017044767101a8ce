"""What every benchmark script shares: the machine description and writing its doc section."""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

__all__ = ["cpu_model", "gpu_name", "machine_line", "ram_gib", "section_markers", "write_section"]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    with open("/proc/cpuinfo") as cpuinfo:
        return next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")),
            platform.processor() or "unknown CPU",
        )


def ram_gib() -> float:
    """Total memory in GiB from /proc/meminfo."""
    with open("/proc/meminfo") as meminfo:
        return next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal")) / 1024**2


def gpu_name() -> str | None:
    """The name of the first GPU the run sees (torch's CUDA device 0), or None."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_line() -> str:
    """CPU count, CPU model, RAM, the GPU when one is seen, and platform, in one line."""
    gpu = gpu_name()
    return (
        f"{os.cpu_count()} CPUs ({cpu_model()}), {ram_gib():.1f} GiB RAM"
        + (f", GPU {gpu}" if gpu else "")
        + f", {platform.platform()}"
    )


def section_markers(name: str) -> tuple[str, str]:
    """The doc markers of section ``name``; a run that sees a GPU writes its own section.

    Scripts whose commands run on the default device (``auto``) measure another thing where a
    GPU is: their figures go beside the CPU ones instead of replacing them.
    """
    kind = "-gpu" if gpu_name() else ""
    return f"<!-- {name}{kind}:begin -->", f"<!-- {name}{kind}:end -->"


def write_section(path: Path, body: str, begin: str, end: str, title: str = "Performance") -> None:
    """Replace the text between ``begin`` and ``end`` in ``path``, or append it.

    The file is read right before it is replaced (atomically), so sections that other scripts
    wrote meanwhile are kept.
    """
    section = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.exists() else f"# {title}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.chmod(tmp.name, path.stat().st_mode & 0o777 if path.exists() else 0o644)
    os.replace(tmp.name, path)
