"""The options of ``rrsis segment`` that the plugin offers, declared once.

Each :class:`CliOption` becomes one Processing parameter (in every algorithm that segments)
and, from the value the user chose, the command-line arguments for ``rrsis``. When the CLI
gains an option, offering it in QGIS is one more line in :data:`SEGMENT_OPTIONS`.

This module imports nothing from QGIS so that the table can be checked against the CLI by
tests that run outside QGIS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INTEGER = "integer"
DECIMAL = "decimal"
TEXT = "text"
CHOICE = "choice"


@dataclass(frozen=True)
class CliOption:
    """One ``rrsis segment`` option as a Processing parameter.

    Attributes:
        name: Processing parameter name (upper case, as QGIS names them).
        flag: The CLI flag, e.g. ``--tile-size``. For a :data:`CHOICE`, the CLI option the
            choice stands for: one option with a value (``--strategy``), or switches
            (``--binary/--float32``); the arguments come from ``choices``.
        kind: :data:`INTEGER`, :data:`DECIMAL`, :data:`TEXT` or :data:`CHOICE`.
        description: Label in the algorithm dialog.
        default: The CLI's own default, or None when the CLI derives it (from the model).
            An option left at its default is not passed, so the CLI's default always wins.
        minimum: Smallest accepted number, if any.
        maximum: Largest accepted number, if any.
        advanced: Shown under "Advanced Parameters".
        help: Longer help shown in the dialog.
        choices: For :data:`CHOICE`: (label, CLI arguments) pairs; the first is the CLI's
            default.
    """

    name: str
    flag: str
    kind: str
    description: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    advanced: bool = False
    help: str = ""
    choices: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)

    def arguments(self, value: Any) -> list[str]:
        """The CLI arguments for ``value`` (empty when the CLI's default applies).

        Args:
            value: The parameter's value: a number, a string, a choice index, or None.

        Returns:
            Arguments to append to ``rrsis segment``. A choice the user made is passed as it
            is, the default one included (the run does what the dialog said); None (unset)
            passes nothing.
        """
        if self.kind == CHOICE:
            return [] if value is None else list(self.choices[int(value)][1])
        if value is None or value == "" or value == self.default:
            return []
        if self.kind == INTEGER:
            return [self.flag, str(int(value))]
        if self.kind == DECIMAL:
            return [self.flag, repr(float(value))]
        return [self.flag, str(value).strip()]


SEGMENT_OPTIONS: tuple[CliOption, ...] = (
    CliOption(
        "MODEL",
        "--model",
        TEXT,
        "Model (empty: the CLI's default model)",
        help="A shipped model's name, a CroBIM checkpoint folder, a hub repo id[@revision], "
        "or python:PACKAGE.MODULE:FACTORY (python:FILE.py:FACTORY). Empty: crobim-lite-synth, "
        "trained on synthetic scenes only.",
    ),
    CliOption(
        "STRATEGY",
        "--strategy",
        CHOICE,
        "Strategy",
        choices=(
            ("Whole scene (sentence resolved over the scene)", ("--strategy", "scene")),
            ("Per tile (old behaviour, for comparison)", ("--strategy", "tile")),
        ),
        help="Whole scene: words such as largest, northernmost, second from the left, at the "
        "top right, closest to the pier are answered over the whole scene (every instance of "
        "the description is a candidate; the words choose among them). Per tile: every tile "
        "answers the whole sentence on its own, as rrsis did before; kept for comparison.",
    ),
    CliOption(
        "CHECK",
        "--no-check",
        CHOICE,
        "Check candidates against the model's categories",
        choices=(
            ("Check (reject a candidate that reads as another category)", ()),
            ("No check", ("--no-check",)),
        ),
        advanced=True,
        help="Whole scene: before a candidate is chosen, the model is asked which of the "
        "categories it knows the candidate is; one that reads as another (a red vehicle found "
        "as a building) is rejected and the next candidate takes its place.",
    ),
    CliOption(
        "VOCABULARY",
        "--vocabulary",
        TEXT,
        "Categories to check against, comma-separated (empty: the model's)",
        advanced=True,
    ),
    CliOption(
        "BANDS",
        "--bands",
        TEXT,
        "Bands in model order, e.g. 3,2,1 (empty: the first three)",
        help="Comma-separated 1-based bands in the order the model expects. Default: the "
        "first three, or the only band repeated.",
    ),
    CliOption("TILE_SIZE", "--tile-size", INTEGER, "Tile size in pixels", minimum=2),
    CliOption("OVERLAP", "--overlap", INTEGER, "Tile overlap in pixels", minimum=0),
    CliOption(
        "THRESHOLD",
        "--threshold",
        DECIMAL,
        "Foreground probability threshold",
        minimum=0.0,
        maximum=1.0,
        help="Probability above which a pixel belongs to the object (polygons, binary "
        "raster). Default: the model's.",
    ),
    CliOption(
        "RASTER_KIND",
        "--binary/--float32",
        CHOICE,
        "Raster output",
        choices=(
            ("Probability 0-1 (8-bit)", ()),
            ("Binary mask 0/1", ("--binary",)),
            ("Probability 0-1 (float32)", ("--float32",)),
        ),
    ),
    CliOption(
        "MARGIN",
        "--margin",
        INTEGER,
        "Tile margin discarded on interior sides (pixels)",
        minimum=0,
        advanced=True,
    ),
    CliOption("BATCH_SIZE", "--batch-size", INTEGER, "Tiles per model call", 8, 1, advanced=True),
    CliOption(
        "DEVICE", "--device", TEXT, "Device (auto, cpu, cuda, cuda:N, mps)", "auto", advanced=True
    ),
    CliOption(
        "GSD",
        "--gsd",
        DECIMAL,
        "Resample to this ground resolution (m/pixel; 0 keeps the native one)",
        minimum=0.0,
        advanced=True,
    ),
    CliOption(
        "MAX_UPSAMPLING",
        "--max-upsampling",
        DECIMAL,
        "Largest upsampling factor to the model's resolution",
        4.0,
        1.0,
        advanced=True,
        help="A scene coarser than the model's ground resolution (or the chosen one) by more "
        "than this factor is refused rather than upsampled into many tiles of what the model "
        "never saw.",
    ),
    CliOption(
        "PERCENTILES",
        "--percentiles",
        TEXT,
        "Percentile stretch, e.g. 2,98 (empty: the model's normalization)",
        advanced=True,
    ),
    CliOption(
        "SIEVE",
        "--sieve",
        INTEGER,
        "Drop polygons and holes under this many pixels",
        16,
        0,
        advanced=True,
    ),
    CliOption(
        "SIMPLIFY",
        "--simplify",
        DECIMAL,
        "Polygon simplification tolerance (pixels)",
        1.0,
        0.0,
        advanced=True,
    ),
    CliOption(
        "MIN_AREA",
        "--min-area",
        DECIMAL,
        "Drop polygons under this area (m²)",
        0.0,
        0.0,
        advanced=True,
    ),
)

# CLI options the plugin sets itself rather than offering them: outputs (and the candidate
# layer) come from the Processing destinations, QGIS's convention is to overwrite the chosen
# file, the plugin reads the JSON summary and the JSON progress lines, and how the sentence
# was read (--explain, on stderr) always goes to the algorithm's log. A cancelled Processing
# run discards its destinations, so the plugin never resumes one (--resume is left off).
PLUGIN_MANAGED_FLAGS = (
    "--output",
    "--candidates",
    "--overwrite",
    "--json",
    "--quiet",
    "--progress",
    "--explain",
    "--resume",
)
FIXED_ARGUMENTS = ("--overwrite", "--json", "--progress", "json", "--explain")
# The same for ``rrsis batch``: its --json is the report of every row, its JSON progress adds
# the row, its --explain prints the reading of each expression once, before the rows run, and
# --quiet would silence the progress. --resume is left off here too.
BATCH_FIXED_ARGUMENTS = ("--overwrite", "--json", "--progress", "json", "--explain")
# ``rrsis batch`` options that set a segment option for every row under the same flag; every
# other segment option is given to it as --set KEY=VALUE.
BATCH_OWN_FLAGS = ("--model", "--device")


def segment_arguments(values: dict[str, Any]) -> list[str]:
    """CLI arguments for the chosen option values.

    Args:
        values: Parameter name to value, for the names in :data:`SEGMENT_OPTIONS` (a missing
            name means the CLI default).

    Returns:
        Arguments for ``rrsis segment`` after the input and the expression.
    """
    arguments: list[str] = []
    for option in SEGMENT_OPTIONS:
        arguments += option.arguments(values.get(option.name))
    return arguments


def batch_arguments(values: dict[str, Any]) -> list[str]:
    """``rrsis batch`` arguments for the chosen option values, for every row of its manifest.

    The same options as :func:`segment_arguments` gives ``rrsis segment``, in batch's form.

    Args:
        values: As for :func:`segment_arguments`.

    Returns:
        ``--model``/``--device`` as they are, every other option as ``--set KEY=VALUE`` (its
        long name with ``_``; a switch such as ``--binary`` as ``binary=true``).
    """
    arguments: list[str] = []
    for option in SEGMENT_OPTIONS:
        # Per option, not over the joined list: a text value may itself start with "-".
        chosen = option.arguments(values.get(option.name))
        if not chosen:
            continue
        flag, *value = chosen
        if flag in BATCH_OWN_FLAGS:
            arguments += chosen
        else:
            key = flag.removeprefix("--").replace("-", "_")
            arguments += ["--set", f"{key}={value[0] if value else 'true'}"]
    return arguments
