"""Benchmark data: readers for RRSIS-D, RefSegRS, RISBench and the canonical JSONL.

Every reader yields the same :class:`Sample` (RGB image, boolean mask, expression, ids,
category); :func:`to_jsonl` converts any of them to the canonical JSONL and
:func:`check_dataset` reports what a data set holds and what is wrong with it. Layouts and
their gotchas: ``docs/data.md``.
"""

from rrsis_geo.data.check import CheckReport, SplitReport, check_dataset, format_report
from rrsis_geo.data.convert import ConvertSummary, to_jsonl
from rrsis_geo.data.readers import (
    LAYOUTS,
    JsonlReader,
    RefSegRSReader,
    RISBenchReader,
    RRSISDReader,
    detect_layout,
    open_dataset,
)
from rrsis_geo.data.sample import MaskResizedWarning, Record, ReferringDataset, Sample

__all__ = [
    "LAYOUTS",
    "CheckReport",
    "ConvertSummary",
    "JsonlReader",
    "MaskResizedWarning",
    "RISBenchReader",
    "RRSISDReader",
    "Record",
    "RefSegRSReader",
    "ReferringDataset",
    "Sample",
    "SplitReport",
    "check_dataset",
    "detect_layout",
    "format_report",
    "open_dataset",
    "to_jsonl",
]
