"""The real ``rrsis`` command line in a subprocess, as users and scripts run it."""

import os
import subprocess
import sys
from pathlib import Path


def rrsis(
    *args: object, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rrsis_geo ARGS`` offline, without the caller's model or debug settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("RRSIS_MODEL", "RRSIS_DEBUG")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "rrsis_geo", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
