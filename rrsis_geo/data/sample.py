"""One sample type for every benchmark layout, and the lazy data set base class.

A :class:`Sample` is an RGB image, the boolean mask of the object an expression refers to, the
expression and its identifiers. A :class:`ReferringDataset` builds cheap :class:`Record` s (ids,
paths, expression, where the mask is) from the annotation files when it is created, and reads
pixels only in ``__getitem__``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, overload

import numpy as np

from rrsis_geo.data import rle
from rrsis_geo.errors import InputError, RrsisWarning

__all__ = [
    "SPLIT_ORDER",
    "MaskResizedWarning",
    "Record",
    "ReferringDataset",
    "Sample",
    "read_binary_mask",
    "read_image_size",
    "read_rgb",
    "resize_nearest",
]

SPLIT_ORDER = ("train", "val", "test")
"""The benchmarks' splits, in the order reports list them (other names follow, sorted)."""

_TIFF_SUFFIXES = {".tif", ".tiff"}


class MaskResizedWarning(RrsisWarning):
    """A mask was not the size of its image and was resized to it (nearest neighbour)."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One referring segmentation sample.

    Arrays compare by identity (``eq=False``): two samples are equal only if they are the same
    object; compare fields with ``np.array_equal``.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool, True on the referred object.
        expression: The referring expression, as published.
        sample_id: Unique within a split (the native id: RRSIS-D ref id, RefSegRS line id,
            RISBench file stem).
        image_id: The image the sample is on (several samples may share it).
        category: Class name when the data set gives one (RRSIS-D), else None.
        split: ``train``, ``val`` or ``test``.
    """

    image: np.ndarray
    mask: np.ndarray
    expression: str
    sample_id: str
    image_id: str
    category: str | None
    split: str

    def __post_init__(self) -> None:
        image, mask = self.image, self.mask
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if mask.ndim != 2 or mask.dtype != np.bool_:
            raise ValueError(f"mask must be (H, W) bool, got {mask.shape} {mask.dtype}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")


@dataclass(frozen=True)
class Record:
    """What a sample is, without its pixels: ids, expression, and where image and mask are.

    Attributes:
        sample_id: See :class:`Sample`.
        image_id: See :class:`Sample`.
        expression: See :class:`Sample`.
        split: See :class:`Sample`.
        file_name: The image file relative to the data set's image folder (the JSONL
            ``file_name``).
        image_path: The image file.
        category: See :class:`Sample`.
        mask_path: The mask file, for layouts that store masks as images.
        mask_rles: The COCO RLEs whose union is the mask, for layouts that store RLEs.
        native: Native fields kept when converting to JSONL (RRSIS-D: ``ref_id``, ``ann_id``,
            ``category_id``, ``bbox``, ``area``; the native ``image_id``).
        problem: Why the sample cannot be read (e.g. its annotation is missing), else None.
    """

    sample_id: str
    image_id: str
    expression: str
    split: str
    file_name: str
    image_path: Path
    category: str | None = None
    mask_path: Path | None = None
    mask_rles: tuple[Mapping[str, Any], ...] = ()
    native: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None


def ordered_splits(names: Sequence[str] | set[str]) -> list[str]:
    """Split names in report order: train, val, test, then any other name sorted."""
    unique = set(names)
    known = [s for s in SPLIT_ORDER if s in unique]
    return known + sorted(unique - set(SPLIT_ORDER))


class ReferringDataset(Sequence[Sample]):
    """Samples of one benchmark split (or of all splits), read lazily.

    Subclasses build :attr:`records` from the annotation files; pixels are read only by
    ``__getitem__`` (and by :meth:`read_image` / :meth:`read_mask`). A mask whose size differs
    from its image's is resized to the image (nearest neighbour), with a
    :class:`MaskResizedWarning`, and listed in :attr:`resized_masks`.

    Attributes:
        name: The layout: ``rrsisd``, ``refsegrs``, ``risbench`` or ``jsonl``.
        root: The data set folder (the file, for JSONL).
        split: The split read, or None for all splits.
        records: One :class:`Record` per sample, in file order.
        resized_masks: Sample id -> (mask size, image size) of every mask resized so far.
        notes: Facts about the files worth reporting (e.g. refs with several sentences).
    """

    name: ClassVar[str] = "dataset"
    mask_threshold: ClassVar[int] = 0
    """Mask files: a pixel is foreground when its gray value is above this."""

    def __init__(self, root: Path, split: str | None, records: list[Record]) -> None:
        self.root = root
        self.split = split
        self.records = records
        self.resized_masks: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        """Read sample ``index`` (image, mask at the image's size, expression and ids).

        Raises:
            IndexError: ``index`` is out of range.
            InputError: The image or mask is missing or cannot be read.
        """
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        record = self.records[index]
        image = self.read_image(index)
        mask = self.load_mask(index, (image.shape[0], image.shape[1]))
        return Sample(
            image=image,
            mask=mask,
            expression=record.expression,
            sample_id=record.sample_id,
            image_id=record.image_id,
            category=record.category,
            split=record.split,
        )

    def __repr__(self) -> str:
        split = "all splits" if self.split is None else f"split={self.split!r}"
        return f"{type(self).__name__}({str(self.root)!r}, {split}, {len(self)} samples)"

    @property
    def splits(self) -> list[str]:
        """The splits of the records, in report order."""
        return ordered_splits({r.split for r in self.records})

    def only_split(self, split: str) -> ReferringDataset:
        """The samples of one split, reading the same files the same way.

        Raises:
            InputError: No sample of that split.
        """
        if split not in self.splits:
            raise InputError(
                f"no split {split!r} in {self.root} (splits present: "
                f"{', '.join(self.splits) or 'none'})"
            )
        part = copy.copy(self)
        part.split = split
        part.records = [r for r in self.records if r.split == split]
        part.resized_masks = {}
        part.notes = list(self.notes)
        return part

    def describe(self, index: int) -> Record:
        """Ids, paths and expression of sample ``index``, without reading any pixel."""
        return self.records[index]

    def read_image(self, index: int) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 RGB image of sample ``index``."""
        record = self.records[index]
        if record.problem is not None:
            raise InputError(record.problem)
        return read_rgb(record.image_path)

    def read_mask(self, index: int) -> np.ndarray:
        """The boolean mask of sample ``index`` at its stored size (maybe not the image's)."""
        record = self.records[index]
        if record.problem is not None:
            raise InputError(record.problem)
        if record.mask_rles:
            try:
                return rle.merge(record.mask_rles)
            except InputError as error:
                raise InputError(f"sample {record.sample_id}: {error}") from None
        if record.mask_path is not None:
            return read_binary_mask(record.mask_path, self.mask_threshold)
        raise InputError(f"sample {record.sample_id} has no mask")

    def load_mask(self, index: int, image_size: tuple[int, int]) -> np.ndarray:
        """The mask of sample ``index`` at ``image_size`` ``(H, W)``, resized if it differs.

        A resize (nearest neighbour) is recorded in :attr:`resized_masks` and warned about
        with a :class:`MaskResizedWarning`.
        """
        mask = self.read_mask(index)
        if mask.shape == tuple(image_size):
            return mask
        record = self.records[index]
        mask_size = (int(mask.shape[0]), int(mask.shape[1]))
        self.resized_masks[record.sample_id] = (mask_size, (image_size[0], image_size[1]))
        warnings.warn(
            MaskResizedWarning(
                f"{self.name} sample {record.sample_id}: mask {mask_size[1]}x{mask_size[0]} "
                f"resized to its image's {image_size[1]}x{image_size[0]} (nearest neighbour)"
            ),
            stacklevel=2,
        )
        return resize_nearest(mask, image_size)

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of the image of sample ``index``, from the file header only."""
        record = self.records[index]
        if record.problem is not None:
            raise InputError(record.problem)
        return read_image_size(record.image_path)

    def mask_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of the stored mask of sample ``index``, without decoding it."""
        record = self.records[index]
        if record.problem is not None:
            raise InputError(record.problem)
        if record.mask_rles:
            size = record.mask_rles[0].get("size")
            if not isinstance(size, Sequence) or len(size) != 2:
                raise InputError(f"sample {record.sample_id}: malformed RLE size {size!r}")
            return int(size[0]), int(size[1])
        if record.mask_path is not None:
            return read_image_size(record.mask_path, "mask")
        raise InputError(f"sample {record.sample_id} has no mask")


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` resized to ``size`` ``(H, W)`` by nearest neighbour (pixel centres aligned).

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * in / out)``, as PIL's ``NEAREST``.
    """
    height, width = size
    rows = np.minimum(
        ((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1
    )
    cols = np.minimum(
        ((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1
    )
    return mask[rows[:, None], cols[None, :]]


def _missing(path: Path, what: str) -> InputError:
    return InputError(f"{what} not found: {path}")


def _open_error(path: Path, what: str, error: BaseException) -> InputError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return InputError(f"cannot read {what} {path}: {reason}")


def _read_with_rasterio(path: Path, what: str) -> np.ndarray:
    """``(bands, H, W)`` of a TIFF that Pillow cannot decode (e.g. tiled or exotic compression)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return np.asarray(src.read())
    except RasterioError as error:
        raise _open_error(path, what, error) from None


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit image as ``(H, W, 3)`` uint8 RGB (gray is repeated, alpha dropped).

    Raises:
        InputError: Missing, unreadable (truncated, not an image) or not 8-bit.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise _missing(path, "image")
    try:
        with Image.open(path) as image:
            if image.mode not in {
                "1",
                "L",
                "LA",
                "P",
                "PA",
                "RGB",
                "RGBA",
                "RGBX",
                "CMYK",
                "YCbCr",
            }:
                raise InputError(f"image {path} is {image.mode}, not 8-bit RGB or gray")
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError as error:
        if path.suffix.lower() not in _TIFF_SUFFIXES:
            raise _open_error(path, "image", error) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise _open_error(path, "image", error) from None
    bands = _read_with_rasterio(path, "image")
    if bands.dtype != np.uint8:
        raise InputError(f"image {path} is {bands.dtype}, not 8-bit")
    if bands.shape[0] < 3:
        bands = np.repeat(bands[:1], 3, axis=0)
    return np.ascontiguousarray(np.moveaxis(bands[:3], 0, -1))


def read_binary_mask(path: Path, threshold: int) -> np.ndarray:
    """A mask image as ``(H, W)`` bool: gray value (``convert("L")``) above ``threshold``.

    Raises:
        InputError: Missing or unreadable.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise _missing(path, "mask")
    try:
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"))
        return gray > threshold
    except UnidentifiedImageError as error:
        if path.suffix.lower() not in _TIFF_SUFFIXES:
            raise _open_error(path, "mask", error) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise _open_error(path, "mask", error) from None
    bands = _read_with_rasterio(path, "mask")
    return np.asarray(bands[0] > threshold)


def read_image_size(path: Path, what: str = "image") -> tuple[int, int]:
    """``(H, W)`` of an image (or mask, as ``what`` says) file, from its header only.

    Raises:
        InputError: Missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise _missing(path, what)
    try:
        with Image.open(path) as image:
            return int(image.height), int(image.width)
    except UnidentifiedImageError as error:
        if path.suffix.lower() not in _TIFF_SUFFIXES:
            raise _open_error(path, what, error) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise _open_error(path, what, error) from None
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return int(src.height), int(src.width)
    except RasterioError as error:
        raise _open_error(path, what, error) from None
