"""``rrsis doctor``: check that this install can run a default ``rrsis segment``.

Registered in :mod:`rrsis_geo.cli.app` as ``app.command()(doctor)``. The checks are library code
(:mod:`rrsis_geo.environment`); this command prints one line per check and sets the exit code:
0 when everything a default run needs is in order, 1 when something is missing (the fix on the
same line), 2 usage, 3 internal error, 130 interrupted.
"""

from __future__ import annotations

import json

import typer

from rrsis_geo.cli.common import EXIT_USER_ERROR, JsonOption, command_errors


def doctor(json_output: JsonOption = False) -> None:
    """Check versions, GDAL drivers, the default model, caches and what the QGIS plugin runs."""
    with command_errors("nothing checked"):
        from rrsis_geo.environment import run_checks

        checks = run_checks()
    if json_output:
        typer.echo(json.dumps([check.to_dict() for check in checks]))
    else:
        for check in checks:
            typer.echo(f"rrsis: doctor: {check.line()}")
    failed = [check.name for check in checks if check.status == "failed"]
    warned = [check.name for check in checks if check.status == "warning"]
    if not json_output:
        notes = f" ({len(warned)} warning(s): {', '.join(warned)})" if warned else ""
        if failed:
            typer.echo(
                f"rrsis: doctor: a default run cannot work here: {', '.join(failed)} failed{notes}"
            )
        else:
            typer.echo(f"rrsis: doctor: everything a default run needs is in order{notes}")
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)
