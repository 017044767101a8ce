"""Small functions that write each benchmark's native layout, gotchas included, into a folder.

Each returns a :class:`Fixture`: the data set folder and the samples a reader must yield, in
file order. Images are tiny; masks are boxes so that mistakes show.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis_geo.data import rle

ANNOTATIONS = Path(__file__).resolve().parents[1] / "assets" / "annotations"
RISBENCH_SAMPLE = ANNOTATIONS / "risbench_test_sample.jsonl"
RISBENCH_SAMPLE_AREAS = [711, 1061, 375, 1092, 462, 266, 305, 315, 241]


@dataclass
class Expected:
    """One sample as a reader must return it."""

    sample_id: str
    split: str
    expression: str
    image_id: str
    category: str | None
    file_name: str
    mask: np.ndarray
    image: np.ndarray | None = None  # None for JPEG (lossy): only the shape is checked

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape


@dataclass
class Fixture:
    """A data set written on disk and what it holds."""

    root: Path
    samples: list[Expected]
    images_dir: Path
    resized: dict[str, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)

    def split(self, name: str) -> list[Expected]:
        return [s for s in self.samples if s.split == name]


def rgb(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def box(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# --- RRSIS-D ---------------------------------------------------------------------------------

RRSISD_RLE_SIZE = 64  # stands for 800: the RLEs' nominal size, which one JPEG does not have


def write_rrsisd(folder: Path, protocol: int = 2) -> Fixture:
    """RRSIS-D: ``rrsisd/refs(unc).p`` (a pickle), ``rrsisd/instances.json`` (``categories_id``,
    sic), ``images/rrsisd/JPEGImages``; image 3 is a 48x48 JPEG while its RLE is 64x64 like
    every other; ref 4 has no ``category_id`` of its own; ref 5 has two sentences."""
    root = folder / "RRSIS-D"
    data_dir = root / "rrsisd"
    images_dir = root / "images" / "rrsisd" / "JPEGImages"
    images_dir.mkdir(parents=True)
    (data_dir / "ann_split").mkdir(parents=True)
    (data_dir / "ann_split" / "00001.xml").write_text(
        "<annotation><object><description>not used by the benchmark</description></object>"
        "</annotation>"
    )
    n = RRSISD_RLE_SIZE
    sizes = {1: (n, n), 2: (n, n), 3: (48, 48)}
    for image_id, (height, width) in sizes.items():
        Image.fromarray(rgb(height, width, image_id)).save(
            images_dir / f"{image_id:05d}.jpg", quality=95
        )
    categories = {1: "airplane", 2: "ship", 3: "vehicle"}
    first_pixel = box(n, n, 0, 0, 9, 12)  # the RLE starts with a run of 0
    masks = {
        10: box(n, n, 5, 8, 20, 30),
        11: box(n, n, 30, 2, 60, 10),
        12: box(n, n, 16, 16, 48, 40),  # on the 48x48 image: rows 12:36, cols 12:30
        13: box(n, n, 40, 40, 64, 64),
        14: first_pixel,
        15: box(n, n, 20, 20, 30, 50),
    }
    ann_image = {10: 1, 11: 1, 12: 3, 13: 2, 14: 2, 15: 1}
    ann_category = {10: 1, 11: 2, 12: 3, 13: 2, 14: 1, 15: 3}
    instances = {
        "images": [{"file_name": f"{i:05d}.jpg", "height": n, "width": n, "id": i} for i in sizes],
        "annotations": [
            {
                "bbox": [1, 2, 30, 40],  # x1, y1, x2, y2
                "categories_id": ann_category[ann_id],
                "id": ann_id,
                "image_id": ann_image[ann_id],
                "segmentation": [rle.encode(mask)],
                "area": 123456.0,  # not a pixel count
            }
            for ann_id, mask in masks.items()
        ],
        "categories": [{"id": k, "name": v} for k, v in categories.items()],
    }
    (data_dir / "instances.json").write_text(json.dumps(instances))

    def ref(ref_id, ann_id, split, sentences, with_category=True):
        entry = {
            "image_id": ann_image[ann_id],
            "split": split,
            "sentences": [
                {"raw": raw, "sent": raw.lower().rstrip("."), "tokens": raw.split(), "sent_id": s}
                for s, raw in sentences
            ],
            "file_name": f"{ann_image[ann_id]:05d}.jpg",
            "ann_id": ann_id,
            "sent_ids": [s for s, _ in sentences],
            "ref_id": ref_id,
        }
        if with_category:
            entry["category_id"] = ann_category[ann_id]
        return entry

    refs = [
        ref(0, 10, "train", [(100, "The airplane at the top left.")]),
        ref(1, 11, "train", [(101, "A ship along the left edge")]),
        ref(2, 12, "train", [(102, "the vehicle in the middle of the small image")]),
        ref(3, 13, "val", [(103, "ship in the lower right corner")]),
        ref(4, 14, "test", [(104, "the airplane in the corner")], with_category=False),
        ref(5, 15, "test", [(105, "a vehicle"), (106, "the long vehicle in the middle")]),
    ]
    with (data_dir / "refs(unc).p").open("wb") as stream:
        pickle.dump(refs, stream, protocol=protocol)

    resized_12 = box(48, 48, 12, 12, 36, 30)
    samples = [
        Expected(
            "0", "train", "The airplane at the top left.", "1", "airplane", "00001.jpg", masks[10]
        ),
        Expected("1", "train", "A ship along the left edge", "1", "ship", "00001.jpg", masks[11]),
        Expected(
            "2",
            "train",
            "the vehicle in the middle of the small image",
            "3",
            "vehicle",
            "00003.jpg",
            resized_12,
        ),
        Expected("3", "val", "ship in the lower right corner", "2", "ship", "00002.jpg", masks[13]),
        Expected(
            "4", "test", "the airplane in the corner", "2", "airplane", "00002.jpg", masks[14]
        ),
        Expected("5-105", "test", "a vehicle", "1", "vehicle", "00001.jpg", masks[15]),
        Expected(
            "5-106",
            "test",
            "the long vehicle in the middle",
            "1",
            "vehicle",
            "00001.jpg",
            masks[15],
        ),
    ]
    return Fixture(root, samples, images_dir, resized={"2": ((n, n), (48, 48))})


# --- RefSegRS --------------------------------------------------------------------------------

REFSEGRS_SIZE = 32


def _refsegrs_mask(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A grayscale mask with values on both sides of the > 50 threshold, and its truth."""
    n = REFSEGRS_SIZE
    gray = np.zeros((n, n), dtype=np.uint8)
    top, left = 2 + seed, 3 + 2 * seed
    gray[top : top + 10, left : left + 8] = 255
    gray[top + 10, left : left + 8] = 51  # just above: foreground
    gray[0, :] = 50  # at the threshold: background
    gray[n - 1, :] = 12  # compression noise: background
    return gray, gray > 50


def write_refsegrs(folder: Path) -> Fixture:
    """RefSegRS: ``images/<id>.tif`` (RGB), ``masks/<id>.tif`` (grayscale, > 50), and
    ``output_phrase_<split>.txt``; ids have gaps; the train file has CRLF line ends and a
    blank last line."""
    root = folder / "RefSegRS"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lines = {
        "train": [
            ("0", "the red roof on the left"),
            ("2", "a road"),
            (
                "5",
                "the vehicle near "
                "the top of the image next to the long gray building with a flat roof",
            ),
        ],
        "val": [("7", "the long building")],
        "test": [("8", "a car parked at the bottom"), ("9", "the lawn")],
    }
    samples = []
    for split, entries in lines.items():
        for sample_id, expression in entries:
            image = rgb(REFSEGRS_SIZE, REFSEGRS_SIZE, int(sample_id))
            gray, truth = _refsegrs_mask(int(sample_id))
            Image.fromarray(image).save(root / "images" / f"{sample_id}.tif")
            Image.fromarray(gray, mode="L").save(root / "masks" / f"{sample_id}.tif")
            samples.append(
                Expected(
                    sample_id, split, expression, sample_id, None, f"{sample_id}.tif", truth, image
                )
            )
        newline = "\r\n" if split == "train" else "\n"
        text = newline.join(f"{i} {e}" for i, e in entries) + newline
        if split == "train":
            text += newline
        (root / f"output_phrase_{split}.txt").write_text(text, newline="")
    return Fixture(root, samples, root / "images")


# --- RISBench --------------------------------------------------------------------------------

RISBENCH_SIZE = 40


def write_risbench(folder: Path) -> Fixture:
    """RISBench: ``img_rgb/``, ``mask/`` (PNG, 0/255) and ``output_phrase_<split>.txt``;
    validation files are named ``train_*``; image and object indices have gaps."""
    root = folder / "RISBench"
    (root / "img_rgb").mkdir(parents=True)
    (root / "mask").mkdir()
    lines = {
        "train": [
            ("train_0_0.png", "The ship that is closest to the top edge of the image."),
            ("train_0_2.png", "the small boat"),
            (
                "train_5_0.png",
                "The storage tank located towards the bottom left of the image, "
                "to the right of the large white building and above the road.",
            ),
        ],
        "val": [
            ("train_14700_0.png", "the bridge over the river"),
            ("train_14700_1.png", "The second bridge."),
        ],
        "test": [
            ("test_1_0.png", "the airplane on the runway"),
            ("test_3_2.png", "the harbor basin on the right"),
        ],
    }
    samples = []
    n = RISBENCH_SIZE
    for number, (split, entries) in enumerate(lines.items()):
        for offset, (file_name, expression) in enumerate(entries):
            seed = 10 * number + offset
            image = rgb(n, n, seed)
            mask = box(n, n, seed % 7, 2 * (seed % 5), 12 + seed % 9, 20 + seed % 11)
            Image.fromarray(image).save(root / "img_rgb" / file_name)
            Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(root / "mask" / file_name)
            samples.append(
                Expected(file_name[:-4], split, expression, file_name, None, file_name, mask, image)
            )
        text = "".join(f"{f} {e}\n" for f, e in entries)
        (root / f"output_phrase_{split}.txt").write_text(text)
    return Fixture(root, samples, root / "img_rgb")


WRITERS = {"rrsisd": write_rrsisd, "refsegrs": write_refsegrs, "risbench": write_risbench}
