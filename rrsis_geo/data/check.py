"""``rrsis data check``: what a data set holds and what is wrong with it.

Per split: samples, distinct images, categories; problems (missing or unreadable images and
masks, annotations that point nowhere, duplicate sample ids, empty expressions, ids in several
splits); warnings (masks whose size differs from their image's, which readers resize; empty
masks); and the expression length histogram in tokens of a tokenizer (or whitespace words).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrsis_geo.data.readers import detect_layout, open_dataset
from rrsis_geo.data.sample import ReferringDataset, read_image_size, read_rgb
from rrsis_geo.errors import InputError

__all__ = [
    "CheckReport",
    "SplitReport",
    "check_dataset",
    "format_report",
    "load_tokenizer",
    "token_lengths",
]

TOKEN_LIMITS = (20, 40)
"""Expression lengths reported as "longer than": the max_tokens of the LAVT family and ours."""

_SHOWN = 5
"""Items of each kind of problem that the text report lists (JSON lists all)."""


@dataclass
class SplitReport:
    """What :func:`check_dataset` found in one split.

    Attributes:
        split: The split name.
        samples: Samples (expressions).
        images: Distinct image files.
        categories: Samples per category (empty when the data set has none).
        missing_images: Image files that do not exist.
        missing_masks: Mask files that do not exist.
        unreadable: ``path or sample: reason`` for files or RLEs that cannot be decoded.
        record_problems: Annotations that cannot be resolved (e.g. an ann_id not in the file).
        duplicate_ids: Sample id -> occurrences, for ids found more than once.
        empty_expressions: Sample ids whose expression is empty.
        size_mismatches: ``sample: image WxH, mask WxH`` (readers resize these masks).
        empty_masks: Sample ids whose mask has no foreground pixel.
        token_lengths: Expression length -> samples.
    """

    split: str
    samples: int = 0
    images: int = 0
    categories: dict[str, int] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)
    missing_masks: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    record_problems: list[str] = field(default_factory=list)
    duplicate_ids: dict[str, int] = field(default_factory=dict)
    empty_expressions: list[str] = field(default_factory=list)
    size_mismatches: list[str] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)
    token_lengths: dict[int, int] = field(default_factory=dict)

    @property
    def problems(self) -> int:
        """Problems (not warnings) found in this split."""
        return (
            len(self.missing_images)
            + len(self.missing_masks)
            + len(self.unreadable)
            + len(self.record_problems)
            + len(self.duplicate_ids)
            + len(self.empty_expressions)
        )

    @property
    def warnings(self) -> int:
        """Warnings: size mismatches (resized on read) and empty masks."""
        return len(self.size_mismatches) + len(self.empty_masks)


@dataclass
class CheckReport:
    """What :func:`check_dataset` found.

    Attributes:
        path: The data set folder or file.
        layout: Its layout.
        tokenizer: What lengths are counted in.
        images_decoded: Images were fully decoded (else only their headers were read).
        splits: One report per split, in train/val/test order.
        cross_split_ids: Sample id -> splits, for ids found in more than one split.
        notes: Facts from the reader worth knowing.
        token_limits: Lengths that the report counts expressions above.
    """

    path: str
    layout: str
    tokenizer: str
    images_decoded: bool
    splits: list[SplitReport] = field(default_factory=list)
    cross_split_ids: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    token_limits: tuple[int, ...] = TOKEN_LIMITS

    @property
    def problems(self) -> int:
        """Problems found in all splits, ids in several splits included."""
        return sum(s.problems for s in self.splits) + len(self.cross_split_ids)

    @property
    def ok(self) -> bool:
        """No problem found (warnings allowed)."""
        return self.problems == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (every list in full)."""
        document = asdict(self)
        for split, data in zip(self.splits, document["splits"], strict=True):
            data["problems"] = split.problems
            data["warnings"] = split.warnings
            data["token_lengths"] = {str(k): v for k, v in sorted(split.token_lengths.items())}
        document["token_limits"] = list(self.token_limits)
        document["problems"] = self.problems
        document["ok"] = self.ok
        return document


def load_tokenizer(spec: str) -> Any:
    """A transformers tokenizer from a folder, a hub id, or ``package:MODULE``.

    Raises:
        InputError: The tokenizer cannot be found or loaded.
    """
    from rrsis_geo.nn.encoders import resolve_text_source

    source = resolve_text_source(spec)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"cannot load tokenizer {spec!r}: {first}") from None


def token_lengths(expressions: Sequence[str], tokenizer: Any = None) -> list[int]:
    """Length of each expression in tokens, or in words when ``tokenizer`` is None.

    Tokens include the special tokens, as models count them toward their ``max_tokens``; words
    are whitespace-separated.
    """
    if tokenizer is None:
        return [len(e.split()) for e in expressions]
    lengths: list[int] = []
    for start in range(0, len(expressions), 1024):
        batch = list(expressions[start : start + 1024])
        lengths.extend(len(ids) for ids in tokenizer(batch, add_special_tokens=True)["input_ids"])
    return lengths


def check_dataset(
    root: str | Path,
    splits: Sequence[str] | None = None,
    tokenizer: Any = None,
    *,
    layout: str = "auto",
    images_root: str | Path | None = None,
    decode_images: bool = True,
    tokenizer_name: str | None = None,
    token_limits: tuple[int, ...] = TOKEN_LIMITS,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Check a data set: counts, missing or unreadable files, size mismatches, duplicate ids.

    Also counts expression lengths (tokens of ``tokenizer``, or words).

    Args:
        root: A data set folder or a ``.jsonl`` file (see :func:`open_dataset`).
        splits: Splits to check; None or ``["all"]`` checks every split present.
        tokenizer: A transformers tokenizer to count expression tokens with; None counts
            whitespace-separated words.
        layout: ``auto`` or a layout name.
        images_root: For JSONL: the folder ``file_name`` is relative to.
        decode_images: Decode every image (finds truncated files); else read headers only.
        tokenizer_name: How the report names the tokenizer (default: its ``name_or_path``).
        token_limits: Lengths that the report counts expressions above.
        progress: Called with (samples done, total).

    Raises:
        InputError: The data set cannot be opened or a requested split is not there.
    """
    path = Path(root)
    if layout == "auto":
        layout, path = detect_layout(path)
    dataset = open_dataset(path, None, layout, images_root)
    wanted = _wanted_splits(dataset, splits)
    if tokenizer is None:
        name = "whitespace-separated words"
    else:
        name = tokenizer_name or str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__))
        name = f"{name} tokens, special tokens included"
    report = CheckReport(
        path=str(path),
        layout=dataset.name,
        tokenizer=name,
        images_decoded=decode_images,
        notes=list(dataset.notes),
        token_limits=tuple(token_limits),
    )
    indices: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(dataset.records):
        if record.split in wanted:
            indices[record.split].append(index)
    total = sum(len(v) for v in indices.values())
    images: dict[Path, tuple[int, int] | None] = {}
    done = 0
    seen_in: dict[str, list[str]] = defaultdict(list)
    for split in wanted:
        split_report = SplitReport(split)
        for index in indices[split]:
            _check_sample(dataset, index, split_report, images, decode_images)
            done += 1
            if progress is not None:
                progress(done, total)
        records = [dataset.records[i] for i in indices[split]]
        split_report.samples = len(records)
        split_report.images = len({r.image_path for r in records})
        split_report.categories = dict(
            Counter(r.category for r in records if r.category is not None).most_common()
        )
        ids = Counter(r.sample_id for r in records)
        split_report.duplicate_ids = {k: n for k, n in ids.items() if n > 1}
        for sample_id in ids:
            seen_in[sample_id].append(split)
        expressions = [r.expression for r in records if r.expression]
        split_report.token_lengths = dict(
            sorted(Counter(token_lengths(expressions, tokenizer)).items())
        )
        report.splits.append(split_report)
    report.cross_split_ids = {k: v for k, v in seen_in.items() if len(v) > 1}
    return report


def _wanted_splits(dataset: ReferringDataset, splits: Sequence[str] | None) -> list[str]:
    present = dataset.splits
    if splits is None or "all" in splits:
        return present
    missing = [s for s in splits if s not in present]
    if missing:
        raise InputError(
            f"no split {missing[0]!r} in {dataset.root} (splits present: "
            f"{', '.join(present) or 'none'})"
        )
    return [s for s in present if s in splits]


def _check_sample(
    dataset: ReferringDataset,
    index: int,
    report: SplitReport,
    images: dict[Path, tuple[int, int] | None],
    decode_images: bool,
) -> None:
    record = dataset.records[index]
    if not record.expression:
        report.empty_expressions.append(record.sample_id)
    if record.problem is not None:
        report.record_problems.append(record.problem)
        return
    path = record.image_path
    if path not in images:
        images[path] = None
        if not path.is_file():
            report.missing_images.append(str(path))
        else:
            try:
                if decode_images:
                    shape = read_rgb(path).shape
                    images[path] = (int(shape[0]), int(shape[1]))
                else:
                    images[path] = read_image_size(path)
            except InputError as error:
                report.unreadable.append(str(error))
    image_size = images[path]
    if record.mask_path is not None and not record.mask_path.is_file():
        report.missing_masks.append(str(record.mask_path))
        return
    try:
        mask = dataset.read_mask(index)
    except InputError as error:
        report.unreadable.append(str(error))
        return
    if not mask.any():
        report.empty_masks.append(record.sample_id)
    if image_size is not None and mask.shape != image_size:
        report.size_mismatches.append(
            f"{record.sample_id}: image {image_size[1]}x{image_size[0]}, "
            f"mask {mask.shape[1]}x{mask.shape[0]}"
        )


# --- the text report -------------------------------------------------------------------------

_PROBLEM_KINDS = (
    ("missing_images", "missing image"),
    ("missing_masks", "missing mask"),
    ("unreadable", "unreadable"),
    ("record_problems", "broken annotation"),
    ("duplicate_ids", "duplicate sample id"),
    ("empty_expressions", "empty expression"),
)
_WARNING_KINDS = (
    ("size_mismatches", "mask size differs from the image's (readers resize it, nearest)"),
    ("empty_masks", "empty mask"),
)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _items(split: SplitReport, attribute: str) -> list[str]:
    value = getattr(split, attribute)
    if isinstance(value, dict):
        return [f"{k} ({n} times)" for k, n in value.items()]
    return list(value)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        right = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        cells = [row[0].ljust(widths[0]), *right]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _histogram(lengths: Counter[int], width: int = 40) -> list[str]:
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    step = max(1, math.ceil((high - low + 1) / 15))
    bins: list[tuple[str, int]] = []
    for start in range(low - (low % step) if step > 1 else low, high + 1, step):
        stop = start + step - 1
        label = str(start) if step == 1 else f"{start}-{stop}"
        bins.append((label, sum(n for k, n in lengths.items() if start <= k <= stop)))
    most = max(n for _, n in bins)
    label_width = max(len(label) for label, _ in bins)
    lines = []
    for label, n in bins:
        bar = "#" * max(1 if n else 0, round(width * n / most))
        lines.append(f"  {label.rjust(label_width)} | {bar + ' ' if bar else ''}{n}")
    return lines


def format_report(report: CheckReport) -> str:
    """The report as readable text: tables, histogram, then problems and warnings."""
    lines = [
        f"{report.layout} data set at {report.path}",
        "images: " + ("fully decoded" if report.images_decoded else "headers only"),
        "",
    ]
    rows = [["split", "samples", "images", "categories", "problems", "warnings"]]
    for split in report.splits:
        rows.append(
            [
                split.split,
                str(split.samples),
                str(split.images),
                str(len(split.categories)) if split.categories else "-",
                str(split.problems),
                str(split.warnings),
            ]
        )
    if len(report.splits) > 1:
        rows.append(
            [
                "total",
                str(sum(s.samples for s in report.splits)),
                "",
                "",
                str(report.problems),
                str(sum(s.warnings for s in report.splits)),
            ]
        )
    lines += _table(rows)
    all_lengths: Counter[int] = Counter()
    length_rows = [
        ["split", "min", "median", "mean", "max"] + [f">{n}" for n in report.token_limits]
    ]
    for split in report.splits:
        counts = Counter(split.token_lengths)
        all_lengths.update(counts)
        values = sorted(counts.elements())
        if not values:
            continue
        length_rows.append(
            [
                split.split,
                str(values[0]),
                f"{statistics.median(values):g}",
                f"{np.mean(values):.1f}",
                str(values[-1]),
            ]
            + [str(sum(1 for v in values if v > n)) for n in report.token_limits]
        )
    if all_lengths:
        lines += ["", f"expression length ({report.tokenizer}):"]
        lines += _table(length_rows)
        lines += ["", "histogram (all splits checked):", *_histogram(all_lengths)]
    if any(s.categories for s in report.splits):
        lines += ["", "categories (samples):"]
        for split in report.splits:
            if split.categories:
                listed = ", ".join(f"{k} {n}" for k, n in split.categories.items())
                lines.append(f"  {split.split}: {listed}")
    problems = []
    for split in report.splits:
        for attribute, label in _PROBLEM_KINDS:
            items = _items(split, attribute)
            if items:
                problems.append(f"  {split.split}: {label} ({len(items)}): {_listing(items)}")
    if report.cross_split_ids:
        items = [f"{k} ({', '.join(v)})" for k, v in report.cross_split_ids.items()]
        problems.append(f"  sample id in several splits ({len(items)}): {_listing(items)}")
    warning_lines = []
    for split in report.splits:
        for attribute, label in _WARNING_KINDS:
            items = _items(split, attribute)
            if items:
                warning_lines.append(f"  {split.split}: {label} ({len(items)}): {_listing(items)}")
    if problems:
        lines += ["", f"problems ({report.problems}):", *problems]
    if warning_lines:
        lines += ["", "warnings:", *warning_lines]
    if report.notes:
        lines += ["", "notes:", *(f"  {note}" for note in report.notes)]
    lines.append("")
    if report.ok:
        lines.append("result: OK, no problems" + (" (see warnings)" if warning_lines else ""))
    else:
        lines.append(f"result: {report.problems} problems")
    return "\n".join(lines)
