"""Native layout -> canonical JSONL, written atomically.

One JSON object per line, in the data set's order::

    {"split": "val", "image_id": 1234, "sent": "the ship on the left", "file_name": "01234.jpg",
     "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"},
     "category_name": "ship", "category_id": 3, "ref_id": 77, "ann_id": 91,
     "bbox": [...], "area": ..., "sample_id": "77"}

``split``, ``image_id``, ``sent``, ``file_name`` and ``segmentation`` are the layout RSRefSeg 2's
``datainfo/`` files share; ``category_name`` is written when the data set has categories; the
native ids (RRSIS-D) and ``sample_id`` follow. The RLE is at the image's size: a mask stored at
another size (RRSIS-D's non-800x800 JPEGs) is resized (nearest neighbour) before encoding.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrsis_geo.data import rle
from rrsis_geo.data.sample import MaskResizedWarning, ReferringDataset
from rrsis_geo.errors import InputError

__all__ = ["ConvertSummary", "jsonl_row", "to_jsonl"]

_NATIVE_KEYS = ("category_id", "ref_id", "ann_id", "bbox", "area")


@dataclass
class ConvertSummary:
    """What :func:`to_jsonl` wrote.

    Attributes:
        path: The JSONL file.
        samples: Lines written.
        splits: Lines per split.
        resized_masks: Sample id -> (mask size, image size) of the masks resized to their image.
    """

    path: Path
    samples: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    resized_masks: dict[str, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "path": str(self.path),
            "samples": self.samples,
            "splits": dict(self.splits),
            "resized_masks": {k: [list(a), list(b)] for k, (a, b) in self.resized_masks.items()},
        }


def jsonl_row(dataset: ReferringDataset, index: int) -> dict[str, Any]:
    """The JSONL object of sample ``index``; reads its mask and its image's header only.

    Raises:
        InputError: The image or the mask is missing or unreadable.
    """
    record = dataset.describe(index)
    try:
        mask = dataset.load_mask(index, dataset.image_size(index))
    except InputError as error:
        raise InputError(f"{error} (`rrsis data check` lists every problem)") from None
    row: dict[str, Any] = {
        "split": record.split,
        "image_id": record.native.get("image_id", record.image_id),
        "sent": record.expression,
        "file_name": record.file_name,
        "segmentation": rle.encode(mask),
    }
    if record.category is not None:
        row["category_name"] = record.category
    for key in _NATIVE_KEYS:
        if key in record.native:
            row[key] = record.native[key]
    row["sample_id"] = record.sample_id
    return row


def to_jsonl(
    dataset: ReferringDataset,
    out_path: str | Path,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ConvertSummary:
    """Write ``dataset`` as canonical JSONL, atomically (complete or absent, never partial).

    Masks resized to their image's size are summarised in one :class:`MaskResizedWarning`.

    Args:
        dataset: Any reader.
        out_path: The ``.jsonl`` file to write.
        overwrite: Replace an existing file.
        progress: Called with (samples done, total) after each sample.

    Raises:
        OutputError: The file exists (without ``overwrite``) or cannot be written.
        InputError: An image or mask is missing or unreadable.
    """
    from rrsis_geo.geo.writers import atomic_output, check_output_path

    out_path = Path(out_path)
    check_output_path(out_path, overwrite)
    summary = ConvertSummary(out_path)
    splits: Counter[str] = Counter()
    total = len(dataset)
    with atomic_output(out_path, overwrite) as temporary:
        with temporary.open("w", encoding="utf-8") as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore", MaskResizedWarning)
            for index in range(total):
                row = jsonl_row(dataset, index)
                stream.write(json.dumps(row, ensure_ascii=False) + "\n")
                splits[row["split"]] += 1
                resized = dataset.resized_masks.get(row["sample_id"])
                if resized is not None:
                    summary.resized_masks[row["sample_id"]] = resized
                if progress is not None:
                    progress(index + 1, total)
    summary.samples = total
    summary.splits = dict(splits)
    if summary.resized_masks:
        ids = list(summary.resized_masks)
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        warnings.warn(
            MaskResizedWarning(
                f"{len(ids)} masks differed in size from their image and were resized to it "
                f"(nearest neighbour) in {out_path.name}: samples {shown}"
            ),
            stacklevel=2,
        )
    return summary
