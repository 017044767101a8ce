"""The Processing algorithms: segment one expression, or a table of expressions."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMatrix,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)
from qgis.PyQt.QtCore import QCoreApplication

from .inputs import raster_file_for
from .runner import (
    Executable,
    RrsisCanceled,
    RrsisError,
    RunResult,
    check_executable,
    find_executable,
    run_rrsis,
)
from .segment_options import (
    BATCH_FIXED_ARGUMENTS,
    CHOICE,
    DECIMAL,
    FIXED_ARGUMENTS,
    INTEGER,
    SEGMENT_OPTIONS,
    CliOption,
    batch_arguments,
    segment_arguments,
)
from .settings import configured_executable
from .styles import load_on_completion

LOG_TAG = "rrsis"


def _cli_parameter(option: CliOption) -> QgsProcessingParameterDefinition:
    """The Processing parameter for one :class:`CliOption`."""
    optional = option.default is None
    if option.kind in (INTEGER, DECIMAL):
        number_type = (
            QgsProcessingParameterNumber.Integer
            if option.kind == INTEGER
            else QgsProcessingParameterNumber.Double
        )
        parameter = QgsProcessingParameterNumber(
            option.name, option.description, number_type, option.default, optional
        )
        if option.minimum is not None:
            parameter.setMinimum(option.minimum)
        if option.maximum is not None:
            parameter.setMaximum(option.maximum)
    elif option.kind == CHOICE:
        parameter = QgsProcessingParameterEnum(
            option.name,
            option.description,
            [label for label, _ in option.choices],
            defaultValue=0,
        )
    else:
        parameter = QgsProcessingParameterString(
            option.name, option.description, option.default, optional=optional
        )
    if option.advanced:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    if option.help:
        parameter.setHelp(option.help)
    return parameter


def _slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of an expression."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].rstrip("_") or "expression"


@dataclass(frozen=True)
class _PlannedRow:
    """One expression of a batch: its sentence and the files it writes."""

    expression: str
    outputs: list[str]
    candidates: str | None

    def manifest_entry(self, scene: str) -> dict[str, Any]:
        """Its line of the ``rrsis batch`` manifest."""
        entry: dict[str, Any] = {"scene": scene, "sentence": self.expression}
        entry["outputs"] = self.outputs
        if self.candidates:
            entry["candidates"] = self.candidates
        return entry


def _planned_row(
    folder: str, index: int, expression: str, extensions: list[str], write_candidates: bool
) -> _PlannedRow:
    """Expression ``index`` (0-based) of a batch: NN_<slug>.tif / .gpkg / _candidates.gpkg."""
    stem = os.path.join(folder, f"{index + 1:02d}_{_slug(expression)}")
    candidates = f"{stem}_candidates.gpkg" if write_candidates else None
    return _PlannedRow(expression, [stem + extension for extension in extensions], candidates)


class SegmentingAlgorithm(QgsProcessingAlgorithm):
    """What both algorithms share: the rrsis options, the executable, running one segment."""

    INPUT = "INPUT"

    def tr(self, text: str) -> str:
        """Translate ``text``."""
        return QCoreApplication.translate("rrsis", text)

    def group(self) -> str:
        """No group: the algorithms sit directly under the provider."""
        return ""

    def groupId(self) -> str:
        """No group id."""
        return ""

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Run :meth:`execute`; a bug becomes a one-line message, its traceback goes to the log."""
        try:
            return self.execute(parameters, context, feedback)
        except QgsProcessingException:
            raise
        except Exception as error:
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
            raise QgsProcessingException(
                f"internal error in the rrsis plugin: {type(error).__name__}: {error} "
                "(the traceback is in the QGIS log, tab rrsis)"
            ) from None

    def execute(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """The algorithm's work (see :meth:`processAlgorithm`)."""
        raise NotImplementedError

    def add_cli_parameters(self) -> None:
        """Add one parameter per entry of :data:`SEGMENT_OPTIONS`."""
        for option in SEGMENT_OPTIONS:
            self.addParameter(_cli_parameter(option))

    def cli_values(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict:
        """The chosen value of each CLI option; None where left unset (the CLI's default)."""
        values: dict[str, Any] = {}
        for option in SEGMENT_OPTIONS:
            raw = parameters.get(option.name)
            if raw is None or raw == "":
                values[option.name] = None
            elif option.kind == INTEGER:
                values[option.name] = self.parameterAsInt(parameters, option.name, context)
            elif option.kind == DECIMAL:
                values[option.name] = self.parameterAsDouble(parameters, option.name, context)
            elif option.kind == CHOICE:
                values[option.name] = self.parameterAsEnum(parameters, option.name, context)
            else:
                values[option.name] = self.parameterAsString(parameters, option.name, context)
        return values

    def executable(self) -> Executable:
        """The configured or detected rrsis, checked; a clear error otherwise."""
        try:
            return check_executable(find_executable(configured_executable()))
        except RrsisError as error:
            raise QgsProcessingException(str(error)) from None

    def input_file(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> str:
        """The input layer as a file rrsis reads (see :func:`raster_file_for`)."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        return raster_file_for(layer, context, feedback)

    def segment(
        self,
        executable: Executable,
        input_path: str,
        expression: str,
        outputs: list[str],
        values: dict[str, Any],
        feedback: QgsProcessingFeedback,
        candidates: str | None = None,
    ) -> dict[str, Any]:
        """Run ``rrsis segment`` once; its stderr goes to the QGIS log.

        Args:
            executable: The checked rrsis.
            input_path: The raster file.
            expression: The sentence.
            outputs: Files for ``--output`` (raster and/or polygons).
            values: The CLI option values (see :meth:`cli_values`).
            feedback: The algorithm's feedback.
            candidates: File for ``--candidates`` (every candidate, ranked), or None.

        Returns:
            The JSON summary rrsis printed.

        Raises:
            QgsProcessingException: With rrsis's one-line message, or after a cancel.
        """
        arguments = ["segment", *segment_arguments(values), *FIXED_ARGUMENTS]
        flagged = [("--output", output) for output in outputs]
        if candidates:
            flagged.append(("--candidates", candidates))
        for flag, output in flagged:
            # Processing lets users (and models, and qgis_process) name files in folders that
            # do not exist yet; rrsis refuses those, QGIS's own algorithms create them.
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            arguments += [flag, output]
        # "--" so that an expression starting with "-" is not read as an option.
        arguments += ["--", input_path, expression]

        def progressed(done: int, total: int) -> None:
            if total > 0:
                feedback.setProgress(100.0 * done / total)

        try:
            result = self.run_cli(executable, arguments, feedback, progressed)
        except RrsisError as error:
            raise QgsProcessingException(str(error)) from None
        summary = result.summary
        timings = summary.get("timings", {})
        feedback.pushInfo(
            f"model {summary.get('model')}: {summary.get('tiles', {}).get('total')} tiles, "
            f"{summary.get('polygons')} polygons, {timings.get('total', 0):.1f} s"
        )
        return summary

    def run_cli(
        self,
        executable: Executable,
        arguments: list[str],
        feedback: QgsProcessingFeedback,
        on_progress: Callable[[int, int], None],
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> RunResult:
        """Run ``rrsis ARGUMENTS`` (see :func:`run_rrsis`); its stderr goes to the QGIS log.

        The command goes to the feedback's command info, rrsis's messages to its console and
        its warnings to its warnings; the error line is left to the caller's error message.

        Raises:
            RrsisError: As :func:`run_rrsis` (RrsisCanceled after a cancel).
        """

        def started(pid: int, command: list[str]) -> None:
            feedback.pushCommandInfo(shlex.join(command))
            feedback.pushInfo(f"rrsis {executable.version_text} started (process {pid})")
            QgsMessageLog.logMessage(f"started (process {pid}): {shlex.join(command)}", LOG_TAG)

        def message(line: str) -> None:
            is_error = line.startswith("rrsis: error:")
            is_warning = line.startswith("rrsis: warning:")
            level = Qgis.Critical if is_error else Qgis.Warning if is_warning else Qgis.Info
            QgsMessageLog.logMessage(line, LOG_TAG, level)
            # The error line becomes the algorithm's error message: showing it twice is noise.
            if is_warning:
                feedback.pushWarning(line)
            elif not is_error:
                feedback.pushConsoleInfo(line)

        return run_rrsis(
            executable, arguments, on_progress, message, feedback.isCanceled, started, on_event
        )


class SegmentAlgorithm(SegmentingAlgorithm):
    """Segment the object one referring expression names, as a raster and/or polygons."""

    EXPRESSION = "EXPRESSION"
    OUTPUT_RASTER = "OUTPUT_RASTER"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    OUTPUT_CANDIDATES = "OUTPUT_CANDIDATES"
    POLYGON_COUNT = "POLYGON_COUNT"
    MODEL_NAME = "MODEL_NAME"

    def name(self) -> str:
        """The id within the provider."""
        return "segment"

    def displayName(self) -> str:
        """The name in the Toolbox."""
        return self.tr("Segment by referring expression")

    def shortHelpString(self) -> str:
        """Help shown beside the dialog."""
        return self.tr(
            'Finds the object a sentence refers to ("the largest storage tank", "the ship '
            'closest to the pier") in a georeferenced raster and writes it as a probability '
            "raster and/or polygons with score fields, in the input's CRS.\n\n"
            "Strategy: Whole scene answers words such as largest, northernmost or closest to "
            "over the whole scene; Per tile is the old per-tile behaviour, for comparison. "
            "Candidates (optional) writes every candidate the sentence's description matched, "
            "ranked (rank 1 = the chosen referent), with why each was or was not chosen.\n\n"
            "The model runs in the rrsis command line of its own Python environment, not inside "
            "QGIS: install rrsis-geo there and set its rrsis under Settings > Options > "
            "Processing > Providers (or put rrsis on PATH). Cancel stops it and leaves no "
            "output. Empty optional values use the model's own settings."
        )

    def createInstance(self) -> SegmentAlgorithm:
        """A fresh copy (Processing runs each execution on its own instance)."""
        return SegmentAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:
        """Declare the parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(
            QgsProcessingParameterString(
                self.EXPRESSION,
                self.tr("Referring expression"),
                defaultValue="",
            )
        )
        self.add_cli_parameters()
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_RASTER,
                self.tr("Probability raster"),
                optional=True,
                createByDefault=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT_POLYGONS,
                self.tr("Polygons"),
                QgsProcessing.TypeVectorPolygon,
                optional=True,
                createByDefault=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT_CANDIDATES,
                self.tr("Candidates (every candidate, ranked)"),
                QgsProcessing.TypeVectorPolygon,
                optional=True,
                createByDefault=False,
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.POLYGON_COUNT, self.tr("Polygon count")))
        self.addOutput(QgsProcessingOutputString(self.MODEL_NAME, self.tr("Model")))

    def execute(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Run rrsis and return the result files."""
        expression = self.parameterAsString(parameters, self.EXPRESSION, context).strip()
        if not expression:
            raise QgsProcessingException(self.tr("the referring expression is empty"))
        raster = self.parameterAsOutputLayer(parameters, self.OUTPUT_RASTER, context)
        polygons = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context)
        candidates = self.parameterAsOutputLayer(parameters, self.OUTPUT_CANDIDATES, context)
        outputs = [path for path in (raster, polygons) if path]
        if not outputs:
            # The candidate layer alone is not enough: rrsis would then write its default
            # outputs next to the input.
            raise QgsProcessingException(
                self.tr("no output chosen: ask for the probability raster, the polygons or both")
            )
        executable = self.executable()
        input_path = self.input_file(parameters, context, feedback)
        values = self.cli_values(parameters, context)
        summary = self.segment(
            executable, input_path, expression, outputs, values, feedback, candidates or None
        )
        if raster:
            load_on_completion(context, raster, f"{expression} (probability)", True)
        if polygons:
            load_on_completion(context, polygons, expression, False)
        if candidates:
            name = f"{expression} (candidates)"
            load_on_completion(context, candidates, name, False, candidates=True)
        return {
            self.OUTPUT_RASTER: raster or None,
            self.OUTPUT_POLYGONS: polygons or None,
            self.OUTPUT_CANDIDATES: candidates or None,
            self.POLYGON_COUNT: summary.get("polygons"),
            self.MODEL_NAME: summary.get("model"),
        }


class BatchSegmentAlgorithm(SegmentingAlgorithm):
    """Segment several expressions over one raster, one result pair per expression."""

    EXPRESSIONS = "EXPRESSIONS"
    WRITE_RASTER = "WRITE_RASTER"
    WRITE_POLYGONS = "WRITE_POLYGONS"
    WRITE_CANDIDATES = "WRITE_CANDIDATES"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT_LAYERS = "OUTPUT_LAYERS"

    def name(self) -> str:
        """The id within the provider."""
        return "batchsegment"

    def displayName(self) -> str:
        """The name in the Toolbox."""
        return self.tr("Batch segment")

    def shortHelpString(self) -> str:
        """Help shown beside the dialog."""
        return self.tr(
            "Segments each expression of a table over the same raster, all in one rrsis batch "
            "process: the model loads once. Each expression N writes NN_<expression>.tif "
            "(probability) and NN_<expression>.gpkg (polygons) into the output folder, and with "
            "Write candidate layers NN_<expression>_candidates.gpkg (every candidate, ranked). "
            "An expression that fails is reported with its reason and the others still run; "
            "files already in the folder from the same expression, raster and options are kept "
            "rather than computed again. After a Cancel the completed expressions are kept and "
            "the running one leaves nothing. From qgis_process, give --EXPRESSIONS once per "
            "expression."
        )

    def createInstance(self) -> BatchSegmentAlgorithm:
        """A fresh copy (Processing runs each execution on its own instance)."""
        return BatchSegmentAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:
        """Declare the parameters and outputs."""
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(
            QgsProcessingParameterMatrix(
                self.EXPRESSIONS,
                self.tr("Referring expressions"),
                numberRows=1,
                hasFixedNumberRows=False,
                headers=[self.tr("Expression")],
            )
        )
        self.add_cli_parameters()
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.WRITE_RASTER, self.tr("Write probability rasters"), True
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(self.WRITE_POLYGONS, self.tr("Write polygons"), True)
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.WRITE_CANDIDATES,
                self.tr("Write candidate layers (every candidate, ranked)"),
                False,
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder"))
        )
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("Results")))

    def execute(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Run ``rrsis batch`` once over every expression; load what it wrote."""
        planned, folder = self.plan(parameters, context)
        executable = self.executable()
        input_path = self.input_file(parameters, context, feedback)
        values = self.cli_values(parameters, context)
        # Hidden, and removed whatever happens: the folder holds results only.
        manifest = os.path.join(folder, f".rrsis-batch-{uuid.uuid4().hex}.jsonl")
        try:
            with open(manifest, "w", encoding="utf-8") as file:
                for row in planned:
                    file.write(json.dumps(row.manifest_entry(input_path)) + "\n")
            rows, stopped = self.run_batch(executable, manifest, values, len(planned), feedback)
        finally:
            with contextlib.suppress(OSError):
                os.remove(manifest)
        written, failures = self.report_rows(planned, rows, context, feedback)
        if stopped is not None and len(rows) < len(planned):
            complete = len(rows) - len(failures)
            if not complete:
                raise QgsProcessingException(str(stopped))
            before = (
                f"the {complete} expressions before it are"
                if complete == len(rows)
                else f"{complete} of the {len(rows)} expressions before it are"
            )
            raise QgsProcessingException(f"{stopped}; {before} complete in {folder}")
        if failures and not written:
            raise QgsProcessingException(f"every expression failed; the first: {failures[0]}")
        return {self.OUTPUT_FOLDER: folder, self.OUTPUT_LAYERS: written}

    def plan(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[list[_PlannedRow], str]:
        """The expressions with the files each writes, and the output folder (created)."""
        cells = self.parameterAsMatrix(parameters, self.EXPRESSIONS, context)
        expressions = [str(cell).strip() for cell in cells if str(cell or "").strip()]
        if not expressions:
            raise QgsProcessingException(self.tr("the table of expressions is empty"))
        extensions = [
            extension
            for extension, wanted in (
                (".tif", self.parameterAsBoolean(parameters, self.WRITE_RASTER, context)),
                (".gpkg", self.parameterAsBoolean(parameters, self.WRITE_POLYGONS, context)),
            )
            if wanted
        ]
        if not extensions:
            raise QgsProcessingException(
                self.tr("no output chosen: write probability rasters, polygons or both")
            )
        write_candidates = self.parameterAsBoolean(parameters, self.WRITE_CANDIDATES, context)
        folder = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        os.makedirs(folder, exist_ok=True)
        planned = [
            _planned_row(folder, index, expression, extensions, write_candidates)
            for index, expression in enumerate(expressions)
        ]
        return planned, folder

    def run_batch(
        self,
        executable: Executable,
        manifest: str,
        values: dict[str, Any],
        count: int,
        feedback: QgsProcessingFeedback,
    ) -> tuple[list[dict[str, Any]], RrsisCanceled | None]:
        """Run ``rrsis batch MANIFEST`` once (one model load) with the chosen options.

        Args:
            executable: The checked rrsis.
            manifest: The JSONL manifest, one row per expression.
            values: The CLI option values (see :meth:`cli_values`).
            count: Its number of rows (for the progress).
            feedback: The algorithm's feedback.

        Returns:
            The report of each finished row (``line``, ``status``, ``outputs``, ``reason`` ...),
            and the cancel when the run was canceled (then the rows before the running one).

        Raises:
            QgsProcessingException: When rrsis refused the manifest or failed without a report.
        """
        arguments = ["batch", manifest, *batch_arguments(values), *BATCH_FIXED_ARGUMENTS]
        finished: list[dict[str, Any]] = []
        running: dict[Any, float] = {}  # the tiles done of each row running (rows side by side)

        def row_event(event: dict[str, Any]) -> None:
            if event.get("event") == "row":
                finished.append(event)
                running.pop(event.get("row"), None)
            elif event.get("event") == "progress" and event.get("total"):
                running[event.get("row")] = int(event["done"]) / int(event["total"])
            feedback.setProgress(100.0 * (len(finished) + sum(running.values())) / count)

        def no_progress(done: int, total: int) -> None:
            """``rrsis batch``'s progress lines all name their row (see ``row_event``)."""

        stopped = None
        try:
            result = self.run_cli(executable, arguments, feedback, no_progress, row_event)
            report = result.summary
        except RrsisCanceled as error:
            report, stopped = error.summary, error
        except RrsisError as error:
            # Exit 1 with a report: some rows failed, the others are done. Without one, the
            # manifest was refused (or rrsis broke) and nothing ran.
            if error.summary is None:
                raise QgsProcessingException(str(error)) from None
            report = error.summary
        # The report on stdout is the record; the row events stand in if rrsis printed none
        # (killed after the grace period).
        rows = report.get("rows") if report else None
        return (finished if rows is None else rows), stopped

    def report_rows(
        self,
        planned: list[_PlannedRow],
        rows: list[dict[str, Any]],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> tuple[list[str], list[str]]:
        """Queue the files of the done and skipped rows for loading; report the failed ones.

        Returns:
            The files written (or kept), and ``expression: reason`` for each failed row.
        """
        by_line = {row.get("line"): row for row in rows}
        written: list[str] = []
        failures: list[str] = []
        for line, expected in enumerate(planned, 1):
            row = by_line.get(line)
            if row is None:  # not reached (canceled before it)
                continue
            if row.get("status") not in ("done", "skipped"):
                failures.append(f"{expected.expression}: {row.get('reason')}")
                feedback.reportError(failures[-1])
                continue
            for output in expected.outputs:
                is_raster = output.endswith(".tif")
                name = f"{expected.expression} (probability)" if is_raster else expected.expression
                load_on_completion(context, output, name, is_raster, self.OUTPUT_LAYERS, queue=True)
            written += expected.outputs
            if expected.candidates:
                name = f"{expected.expression} (candidates)"
                load_on_completion(
                    context,
                    expected.candidates,
                    name,
                    False,
                    self.OUTPUT_LAYERS,
                    queue=True,
                    candidates=True,
                )
                written.append(expected.candidates)
        return written, failures
