"""Readers for the three RRSIS benchmarks exactly as published, and for the canonical JSONL.

Every reader is a :class:`~rrsis_geo.data.sample.ReferringDataset`: it reads the annotation
files when created and the pixels only when a sample is asked for. Layouts and their gotchas
are described in ``docs/data.md``.
"""

from __future__ import annotations

import builtins
import json
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rrsis_geo.data.sample import Record, ReferringDataset, ordered_splits
from rrsis_geo.errors import InputError

__all__ = [
    "LAYOUTS",
    "JsonlReader",
    "RISBenchReader",
    "RRSISDReader",
    "RefSegRSReader",
    "detect_layout",
    "load_refs",
    "open_dataset",
]

LAYOUTS = ("rrsisd", "refsegrs", "risbench", "jsonl")
"""Layout names accepted by :func:`open_dataset` (besides ``auto``)."""

REFS_FILE = "refs(unc).p"
INSTANCES_FILE = "instances.json"
PHRASE_GLOB = "output_phrase_*.txt"


def _split_filter(split: str | None) -> str | None:
    """None and ``all`` mean every split."""
    return None if split is None or split == "all" else split


def _no_split(kind: str, split: str, present: list[str], where: Path) -> InputError:
    listed = ", ".join(present) if present else "none"
    return InputError(f"no {kind} split {split!r} in {where} (splits present: {listed})")


# --- RRSIS-D ---------------------------------------------------------------------------------

_PICKLE_BUILTINS = {
    "bool",
    "bytearray",
    "bytes",
    "dict",
    "float",
    "frozenset",
    "int",
    "list",
    "set",
    "str",
    "tuple",
}
_PYTHON2_NAMES = {"unicode": "str", "long": "int"}


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a class or function that plain data does not need."""


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers, strings, numbers, booleans and None.

    Lists, dicts, tuples, strings, numbers and None have their own pickle opcodes and never
    reach :meth:`find_class`; anything that names a class or function (an object, a numpy
    array, ``os.system``) is refused before it is imported, so loading executes no code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module in {"builtins", "__builtin__"}:
            name = _PYTHON2_NAMES.get(name, name)
            if name in _PICKLE_BUILTINS:
                return getattr(builtins, name)
        raise _RefusedGlobal(
            f"it asks for {module}.{name}; only lists, dicts, strings and numbers are allowed"
        )


def load_refs(path: Path) -> list[dict[str, Any]]:
    """The refs of a REFER ``refs(*).p`` pickle, loaded without running any code.

    Raises:
        InputError: Missing file, a pickle that holds anything but plain data (refused
            unloaded), a malformed pickle, or refs without their required keys.
    """
    if not path.is_file():
        raise InputError(f"RRSIS-D refs not found: {path}")
    try:
        with path.open("rb") as stream:
            refs = _PlainDataUnpickler(stream, encoding="utf-8").load()
    except _RefusedGlobal as error:
        raise InputError(f"refused to load {path}: {error}") from None
    except Exception as error:  # a malformed pickle raises many kinds of errors
        raise InputError(
            f"cannot read {path}: not a valid pickle ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(refs, list):
        raise InputError(f"{path} holds a {type(refs).__name__}, not a list of refs")
    for number, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise InputError(f"{path}: ref #{number} is a {type(ref).__name__}, not a dict")
        for key in ("ref_id", "ann_id", "image_id", "split", "sentences"):
            if key not in ref:
                raise InputError(f"{path}: ref #{number} has no {key!r}")
    return refs


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        with path.open(encoding="utf-8") as stream:
            return json.load(stream)
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not JSON: {error.msg} at line {error.lineno}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path}: {error}") from None


def _segmentation_rles(segmentation: Any) -> tuple[Mapping[str, Any], ...] | None:
    """The RLEs of a COCO ``segmentation`` (one RLE or a list of them); None for polygons."""
    if isinstance(segmentation, Mapping):
        return (segmentation,)
    if (
        isinstance(segmentation, list)
        and segmentation
        and all(isinstance(part, Mapping) for part in segmentation)
    ):
        return tuple(segmentation)
    return None


class RRSISDReader(ReferringDataset):
    """RRSIS-D in its REFER layout.

    ``root`` holds ``rrsisd/refs(unc).p``, ``rrsisd/instances.json`` and
    ``images/rrsisd/JPEGImages/``; the ``rrsisd`` folder itself is accepted too. One sample per
    sentence (the benchmark has exactly one per ref): the sample id is the ref id, or
    ``<ref_id>-<sent_id>`` for refs with several sentences (counted in :attr:`notes`). The
    expression is the sentence's ``raw`` text (as RMSIN reads it), else its ``sent``.

    Gotchas handled: ``refs(unc).p`` is loaded by a restricted unpickler (:func:`load_refs`);
    the annotation's category key is ``categories_id`` (sic; ``category_id`` is accepted too,
    the ref's own ``category_id`` wins); ``segmentation`` is a list of one RLE (several are
    merged); about 14 JPEGs are not 800x800 while their RLE is, and their masks are resized to
    the image (see :meth:`~rrsis_geo.data.sample.ReferringDataset.load_mask`).

    Args:
        root: The data set folder.
        split: ``train``, ``val``, ``test``, or None (or ``all``) for every split.

    Raises:
        InputError: Missing or malformed annotation files, or a split with no refs.
    """

    name = "rrsisd"

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        root = Path(root)
        if (root / REFS_FILE).is_file() and not (root / "rrsisd").is_dir():
            data_dir, base = root, root.parent
        else:
            data_dir, base = root / "rrsisd", root
        if not (data_dir / REFS_FILE).is_file():
            raise InputError(f"no RRSIS-D annotations in {root}: expected rrsisd/{REFS_FILE}")
        self.images_dir = base / "images" / "rrsisd" / "JPEGImages"
        split = _split_filter(split)
        refs = load_refs(data_dir / REFS_FILE)
        instances = _load_json(data_dir / INSTANCES_FILE, "RRSIS-D instances")
        if not isinstance(instances, dict):
            raise InputError(f"{data_dir / INSTANCES_FILE} is not a COCO-style object")
        images = {i.get("id"): i for i in instances.get("images", []) if isinstance(i, dict)}
        annotations = {
            a.get("id"): a for a in instances.get("annotations", []) if isinstance(a, dict)
        }
        categories = {
            c.get("id"): str(c.get("name"))
            for c in instances.get("categories", [])
            if isinstance(c, dict) and "name" in c
        }
        present = ordered_splits({str(r["split"]) for r in refs})
        if split is not None and split not in present:
            raise _no_split("RRSIS-D", split, present, data_dir / REFS_FILE)
        records: list[Record] = []
        several = empty = 0
        for ref in refs:
            if split is not None and str(ref["split"]) != split:
                continue
            sentences = [s for s in ref["sentences"] if isinstance(s, dict)] or [{}]
            if len(ref["sentences"]) > 1:
                several += 1
            if not ref["sentences"]:
                empty += 1
            for sentence in sentences:
                records.append(
                    self._record(ref, sentence, len(sentences) > 1, images, annotations, categories)
                )
        super().__init__(base, split, records)
        if several:
            self.notes.append(
                f"refs with several sentences (the benchmark has one per ref): {several}; "
                "one sample per sentence, id <ref_id>-<sent_id>"
            )
        if empty:
            self.notes.append(f"refs without a sentence (empty expression): {empty}")

    def _record(
        self,
        ref: dict[str, Any],
        sentence: dict[str, Any],
        several: bool,
        images: dict[Any, dict[str, Any]],
        annotations: dict[Any, dict[str, Any]],
        categories: dict[Any, str],
    ) -> Record:
        ref_id, ann_id, image_id = ref["ref_id"], ref["ann_id"], ref["image_id"]
        sample_id = f"{ref_id}-{sentence.get('sent_id')}" if several else str(ref_id)
        annotation = annotations.get(ann_id)
        image = images.get(image_id)
        file_name = str(image["file_name"]) if image and "file_name" in image else None
        if file_name is None and isinstance(ref.get("file_name"), str):
            file_name = ref["file_name"]
        category_id = ref.get("category_id")
        if category_id is None and annotation is not None:
            category_id = annotation.get("categories_id", annotation.get("category_id"))
        problem = None
        rles: tuple[Mapping[str, Any], ...] = ()
        if annotation is None:
            problem = f"RRSIS-D ref {ref_id}: annotation {ann_id} is not in {INSTANCES_FILE}"
        else:
            found = _segmentation_rles(annotation.get("segmentation"))
            if found is None:
                problem = (
                    f"RRSIS-D ref {ref_id}: annotation {ann_id} has no RLE segmentation "
                    "(polygons are not supported)"
                )
            else:
                rles = found
        if file_name is None:
            problem = problem or f"RRSIS-D ref {ref_id}: image {image_id} has no file name"
            file_name = ""
        native: dict[str, Any] = {"image_id": image_id, "ref_id": ref_id, "ann_id": ann_id}
        if category_id is not None:
            native["category_id"] = category_id
        for key in ("bbox", "area"):
            if annotation is not None and key in annotation:
                native[key] = annotation[key]
        expression = sentence.get("raw", sentence.get("sent", ""))
        return Record(
            sample_id=sample_id,
            image_id=str(image_id),
            expression=str(expression).strip(),
            split=str(ref["split"]),
            file_name=file_name,
            image_path=self.images_dir / file_name,
            category=categories.get(category_id),
            mask_rles=rles,
            native=native,
            problem=problem,
        )


# --- RefSegRS and RISBench: output_phrase_<split>.txt ----------------------------------------


def _phrase_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(line number, first token, rest)`` of each non-blank line of a phrase file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if parts:
            yield number, parts[0], parts[1].strip() if len(parts) > 1 else ""


def _phrase_files(root: Path, split: str | None, kind: str) -> dict[str, Path]:
    """Split -> phrase file, for one split or all present."""
    present = {
        p.name.removeprefix("output_phrase_").removesuffix(".txt"): p
        for p in root.glob(PHRASE_GLOB)
        if p.is_file()
    }
    if not present:
        raise InputError(f"no {kind} phrase files ({PHRASE_GLOB}) in {root}")
    if split is None:
        return {s: present[s] for s in ordered_splits(set(present))}
    if split not in present:
        raise _no_split(kind, split, ordered_splits(set(present)), root)
    return {split: present[split]}


class _PhraseFileReader(ReferringDataset):
    """Image folder, mask folder and ``output_phrase_<split>.txt`` files of token lines.

    Each phrase line is ``<token> <expression words ...>``; subclasses name the folders and
    map a token to ``(sample_id, image_id, file_name)``.
    """

    label = ""
    images_folder = ""
    masks_folder = ""

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        root = Path(root)
        split = _split_filter(split)
        self.images_dir, self.masks_dir = root / self.images_folder, root / self.masks_folder
        records = []
        for name, path in _phrase_files(root, split, self.label).items():
            for _, token, expression in _phrase_lines(path):
                sample_id, image_id, file_name = self.names(token)
                records.append(
                    Record(
                        sample_id=sample_id,
                        image_id=image_id,
                        expression=expression,
                        split=name,
                        file_name=file_name,
                        image_path=self.images_dir / file_name,
                        mask_path=self.masks_dir / file_name,
                    )
                )
        super().__init__(root, split, records)

    def names(self, token: str) -> tuple[str, str, str]:
        """``(sample_id, image_id, file_name)`` of a phrase line's first token."""
        raise NotImplementedError


class RefSegRSReader(_PhraseFileReader):
    """RefSegRS: ``images/<id>.tif``, ``masks/<id>.tif``, ``output_phrase_<split>.txt``.

    Each phrase line is ``<id> <expression words ...>``; the id is the sample id and the
    image id. Masks are grayscale TIFFs: foreground is gray value > 50. There is no category.

    Args:
        root: The ``RefSegRS`` folder.
        split: ``train``, ``val``, ``test``, or None (or ``all``) for every split.

    Raises:
        InputError: No phrase file for the split.
    """

    name = "refsegrs"
    label = "RefSegRS"
    images_folder, masks_folder = "images", "masks"
    mask_threshold = 50

    def names(self, token: str) -> tuple[str, str, str]:
        """The id is both sample and image id; files are ``<id>.tif``."""
        stem = token[: -len(Path(token).suffix)] if _is_tiff(token) else token
        return stem, stem, f"{stem}.tif"


def _is_tiff(token: str) -> bool:
    return Path(token).suffix.lower() in {".tif", ".tiff"}


class RISBenchReader(_PhraseFileReader):
    """RISBench: ``img_rgb/<name>.png``, ``mask/<name>.png``, ``output_phrase_<split>.txt``.

    Each phrase line is ``<file_name.png> <expression ...>``. The split is the phrase file's,
    never the file name's prefix: validation files are also named ``train_*``. Names are
    ``<prefix>_<image>_<object>`` with gaps in both indices, so only the phrase files say which
    samples exist. The sample id is the file stem, the image id the file name (as in the JSONL
    of RSRefSeg 2). Masks: foreground is gray value > 0. There is no category.

    Args:
        root: The ``RISBench`` folder.
        split: ``train``, ``val``, ``test``, or None (or ``all``) for every split.

    Raises:
        InputError: No phrase file for the split.
    """

    name = "risbench"
    label = "RISBench"
    images_folder, masks_folder = "img_rgb", "mask"
    mask_threshold = 0

    def names(self, token: str) -> tuple[str, str, str]:
        """The sample id is the file stem, the image id the file name."""
        file_name = token if Path(token).suffix else f"{token}.png"
        return Path(file_name).stem, file_name, file_name


# --- canonical JSONL -------------------------------------------------------------------------

_JSONL_NATIVE_KEYS = ("ref_id", "ann_id", "category_id", "bbox", "area")


class JsonlReader(ReferringDataset):
    """The canonical JSONL (RSRefSeg 2 ``datainfo/``; what ``rrsis data convert`` writes).

    One object per line: ``split``, ``image_id``, ``sent``, ``file_name`` and ``segmentation``
    (one COCO RLE, or a list of RLEs that are merged, as in RSRefSeg 2's RRSIS-D rows);
    optional ``category_name``, ``sample_id``, ``ref_id``, ``ann_id``, ``category_id``,
    ``bbox``, ``area``. The sample id is ``sample_id``, else ``ref_id``, else ``ann_id``, else
    the stem of ``file_name``.

    Args:
        path: The ``.jsonl`` file.
        split: Keep only the records of this split; None (or ``all``) keeps all.
        images_root: Folder that ``file_name`` is relative to (default: the file's folder).

    Raises:
        InputError: Missing file, a line that is not a JSON object with the required keys,
            or no record of the split.
    """

    name = "jsonl"

    def __init__(
        self, path: str | Path, split: str | None = None, images_root: str | Path | None = None
    ) -> None:
        path = Path(path)
        split = _split_filter(split)
        if not path.is_file():
            raise InputError(f"JSONL file not found: {path}")
        self.images_dir = Path(images_root) if images_root is not None else path.parent
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read {path}: {error}") from None
        records: list[Record] = []
        present: set[str] = set()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = self._record(path, number, line)
            present.add(record.split)
            if split is None or record.split == split:
                records.append(record)
        if split is not None and not records:
            raise _no_split("JSONL", split, ordered_splits(present), path)
        super().__init__(path, split, records)

    def _record(self, path: Path, number: int, line: str) -> Record:
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: not a JSON object")
        for key in ("sent", "file_name", "segmentation"):
            if key not in row:
                raise InputError(f"{where}: no {key!r}")
        rles = _segmentation_rles(row["segmentation"])
        if rles is None:
            raise InputError(f"{where}: segmentation is not an RLE (polygons are not supported)")
        file_name = str(row["file_name"])
        for key in ("sample_id", "ref_id", "ann_id"):
            if row.get(key) is not None:
                sample_id = str(row[key])
                break
        else:
            sample_id = Path(file_name).stem
        native = {k: row[k] for k in _JSONL_NATIVE_KEYS if k in row}
        native["image_id"] = row.get("image_id", file_name)
        category = row.get("category_name")
        return Record(
            sample_id=sample_id,
            image_id=str(row.get("image_id", file_name)),
            expression=str(row["sent"]).strip(),
            split=str(row.get("split", "unknown")),
            file_name=file_name,
            image_path=self.images_dir / file_name,
            category=None if category is None else str(category),
            mask_rles=rles,
            native=native,
        )


# --- layout detection ------------------------------------------------------------------------


def _layout_of(folder: Path) -> str | None:
    if (folder / "rrsisd" / REFS_FILE).is_file() or (folder / REFS_FILE).is_file():
        return "rrsisd"
    if (folder / "img_rgb").is_dir() and (folder / "mask").is_dir():
        return "risbench"
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return "refsegrs"
    return None


def detect_layout(path: str | Path) -> tuple[str, Path]:
    """The layout of ``path`` and the folder (or file) to read it from.

    ``path`` is a ``.jsonl`` file, a data set folder, or a folder with exactly one data set
    folder inside (e.g. the parent of ``RefSegRS/``).

    Raises:
        InputError: ``path`` is missing, holds no known layout, or several data sets.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"data set not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".jsonl":
            return "jsonl", path
        raise InputError(f"{path} is not a .jsonl file or a data set folder")
    layout = _layout_of(path)
    if layout is not None:
        return layout, path
    found = [
        (child, name)
        for child in sorted(path.iterdir())
        if child.is_dir() and (name := _layout_of(child)) is not None
    ]
    if len(found) == 1:
        return found[0][1], found[0][0]
    if found:
        listed = ", ".join(f"{child.name} ({name})" for child, name in found)
        raise InputError(f"several data sets in {path}: {listed}; pass one of them")
    raise InputError(
        f"no known data set layout in {path}: expected RRSIS-D (rrsisd/{REFS_FILE}), "
        f"RefSegRS (images/, masks/, {PHRASE_GLOB}), RISBench (img_rgb/, mask/, "
        f"{PHRASE_GLOB}) or a .jsonl file"
    )


def open_dataset(
    path: str | Path,
    split: str | None = None,
    layout: str = "auto",
    images_root: str | Path | None = None,
) -> ReferringDataset:
    """Open a data set in any supported layout.

    Args:
        path: A data set folder or a ``.jsonl`` file.
        split: ``train``, ``val``, ``test``, or None (or ``all``) for every split.
        layout: ``auto`` (detect from the files present), ``rrsisd``, ``refsegrs``,
            ``risbench`` or ``jsonl``.
        images_root: For JSONL: the folder ``file_name`` is relative to.

    Raises:
        InputError: Unknown layout, missing files, or a split that is not there.
    """
    if layout == "auto":
        layout, path = detect_layout(path)
    elif layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: choose auto, {', '.join(LAYOUTS)}")
    elif not Path(path).exists():
        raise InputError(f"data set not found: {path}")
    if layout == "jsonl":
        return JsonlReader(path, split, images_root)
    if images_root is not None:
        raise InputError("an images folder is only given for a JSONL file")
    reader = {"rrsisd": RRSISDReader, "refsegrs": RefSegRSReader, "risbench": RISBenchReader}
    return reader[layout](path, split)
