"""COCO run-length encoding of binary masks, in pure numpy (no pycocotools).

A COCO RLE is ``{"size": [H, W], "counts": ...}``. The runs alternate background and foreground,
start with background (a mask whose first pixel is set starts with a run of 0), and follow the
pixels in column-major (Fortran) order. ``counts`` is either a list of run lengths
("uncompressed") or a string ("compressed"): from the third run on, each run is stored as the
difference with the run two places before it, and every number is written 5 bits at a time,
least significant first, as characters ``chr(48 + chunk)``, where bit 0x20 says that more
chunks follow and bit 0x10 of the last chunk is the sign. This is the format of
``pycocotools.mask.encode``/``decode`` (``maskApi.c``), byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rrsis_geo.errors import InputError

__all__ = ["area", "counts_from_string", "counts_to_string", "decode", "encode", "merge"]


def counts_from_string(text: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO ``counts`` string.

    Raises:
        InputError: A character outside the alphabet, or a number cut short.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    counts: list[int] = []
    position, length = 0, len(text)
    while position < length:
        value, shift, more = 0, 0, True
        chunk = 0
        while more:
            if position >= length:
                raise InputError("malformed RLE: the counts string ends inside a number")
            chunk = ord(text[position]) - 48
            if not 0 <= chunk < 64:
                raise InputError(f"malformed RLE: character {text[position]!r} in counts")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
        if chunk & 0x10:
            value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def counts_to_string(counts: Sequence[int]) -> str:
    """The compressed COCO string of run lengths ``counts``."""
    characters: list[str] = []
    for index, count in enumerate(counts):
        value = int(count)
        if index > 2:
            value -= int(counts[index - 2])
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5  # arithmetic shift: negative numbers end at -1
            more = value != -1 if chunk & 0x10 else value != 0
            if more:
                chunk |= 0x20
            characters.append(chr(chunk + 48))
    return "".join(characters)


def _size(rle: Mapping[str, Any]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in rle["size"])
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"malformed RLE: size must be [height, width], got {rle.get('size')!r}"
        ) from None
    if height < 0 or width < 0:
        raise InputError(f"malformed RLE: negative size {[height, width]}")
    return height, width


def _counts(rle: Mapping[str, Any]) -> list[int]:
    if "counts" not in rle:
        raise InputError("malformed RLE: no counts")
    raw = rle["counts"]
    if isinstance(raw, str | bytes):
        return counts_from_string(raw)
    if isinstance(raw, Sequence) and all(
        isinstance(c, int | np.integer) and not isinstance(c, bool) for c in raw
    ):
        return [int(c) for c in raw]
    raise InputError("malformed RLE: counts must be a string or a list of integers")


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """The boolean ``(H, W)`` mask of a COCO RLE (compressed string or uncompressed list counts).

    Raises:
        InputError: The RLE is malformed: bad size, negative runs, or runs that do not add up
            to ``H * W``.
    """
    height, width = _size(rle)
    counts = np.asarray(_counts(rle), dtype=np.int64)
    if counts.size and counts.min() < 0:
        raise InputError("malformed RLE: negative run length")
    total = int(counts.sum())
    if total != height * width:
        raise InputError(
            f"malformed RLE: runs cover {total} pixels, size {height}x{width} has {height * width}"
        )
    values = (np.arange(counts.size) % 2).astype(bool)
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape((width, height)).T)


def encode(mask: np.ndarray) -> dict[str, Any]:
    """The compressed COCO RLE ``{"size": [H, W], "counts": str}`` of a 2-D mask (nonzero = set)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D (H, W), got shape {mask.shape}")
    height, width = mask.shape
    flat = mask.astype(bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [int(height), int(width)], "counts": "0"}  # as pycocotools: one empty run
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return {"size": [int(height), int(width)], "counts": counts_to_string(runs)}


def merge(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The union of several RLEs of one size, as a boolean mask (REFER's ``getMask`` sums them).

    Raises:
        InputError: No RLE, or RLEs of different sizes.
    """
    if not rles:
        raise InputError("malformed segmentation: an empty list of RLEs")
    masks = [decode(rle) for rle in rles]
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise InputError(f"malformed segmentation: RLEs of different sizes {sorted(shapes)}")
    union = masks[0].copy()
    for other in masks[1:]:
        union |= other
    return union


def area(rle: Mapping[str, Any]) -> int:
    """Foreground pixels of an RLE, without building the mask."""
    counts = _counts(rle)
    return int(sum(counts[1::2]))
