"""Write synthetic frames as benchmark chips (RISBench layout) or as georeferenced scenes.

Chips go into the RISBench native layout, so that the real reader, ``rrsis train`` and
``rrsis eval`` are what consume them::

    ROOT/img_rgb/<split>_<image>_<expr>.png   512 x 512 RGB (one file per sample, as in
                                               RISBench; samples of one image are hard links)
    ROOT/mask/<split>_<image>_<expr>.png      0 / 255 mask (all 0 for a negative)
    ROOT/output_phrase_<split>.txt            "<file name> <expression>" per sample
    ROOT/synth_<split>.jsonl                  per sample: kind, category, referent, seed
    ROOT/expression_kinds_<split>.json        sample id -> kind (``rrsis eval --groups``)

A scene is a tiled GeoTIFF in a projected CRS with its ground truth beside it::

    NAME.tif                 RGB, uint8, 512 x 512 blocks, deflate
    NAME.labels.tif          uint16 object id per pixel (0: no object)
    NAME.objects.gpkg        one polygon per object: id, category, colour, length, angle, area
    NAME.expressions.json    expressions with the id of their referent (0: negative)
    NAME.scene_expressions.json  scene-level sentences (size, extreme, order, region, relation)
                             about one category, with their referents (the scene test)

Every file of a call is written under a temporary name and renamed when all are complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis_geo.data.synth.expressions import (
    Expression,
    every_instance_expressions,
    make_expressions,
)
from rrsis_geo.data.synth.scene_expressions import make_scene_expressions
from rrsis_geo.data.synth.world import GSD, World, render_world
from rrsis_geo.errors import InputError, OutputError

__all__ = ["SCENE_CRS", "ChipSummary", "chip_world", "scene_paths", "write_chips", "write_scene"]

CHIP_SIZE = 512
SCENE_CRS = "EPSG:32633"
"""Scenes are placed in UTM zone 33N (metres), near 15 E 40.6 N."""
SCENE_ORIGIN = (500_000.0, 4_500_000.0)
# GeoPackages store a "last change" time; a fixed one keeps the bytes a function of the seed.
FIXED_DATE = "2026-01-01T00:00:00Z"


@dataclass(frozen=True)
class ChipSummary:
    """What :func:`write_chips` wrote."""

    root: str
    split: str
    seed: int
    images: int
    samples: int
    kinds: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def _chip_rng(seed: int, index: int) -> np.random.Generator:
    # One generator per chip: chip i is the same whatever the count or the order of writing.
    return np.random.default_rng([seed, index])


def _every_rng(seed: int, index: int) -> np.random.Generator:
    # Its own stream, so that asking for every-instance expressions changes no other sample.
    return np.random.default_rng([seed, index, 1])


def chip_world(seed: int, index: int) -> World:
    """The frame of chip ``index`` of a split drawn with ``seed``, as :func:`write_chips` drew it.

    Its ``labels`` tell the objects apart, which the chips' masks (one referent each) do not:
    evaluations use it to say which object a wrong prediction picked.
    """
    return render_world(_chip_rng(seed, index), CHIP_SIZE, CHIP_SIZE)


def write_chips(
    root: str | Path,
    split: str,
    images: int,
    seed: int,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    every_instance: bool = False,
) -> ChipSummary:
    """Write ``images`` chips and their expressions as one split of a RISBench-layout folder.

    Args:
        root: Data set folder (created; other splits in it are kept).
        split: Split name (``train``, ``val``, ``test``).
        images: Chips to draw; each gives up to four expressions and sometimes a negative.
        seed: The split's seed: same seed, same bytes.
        overwrite: Replace an existing split of that name.
        progress: Called as ``progress(done, total)``.
        every_instance: Also give each chip with two or more objects of a category one
            ``every`` expression ("The ship.", every ship in the mask) and one negative in
            the same words ("The airplane." with none there). They are drawn from a
            generator of their own, so the other samples are those of a split without them.

    Raises:
        InputError: ``images`` is not positive or ``split`` is not a plain name.
        OutputError: The split exists and ``overwrite`` is False.
    """
    if images < 1:
        raise InputError(f"images must be at least 1, got {images}")
    if not split.isidentifier():
        raise InputError(f"split must be a plain name like train or test, got {split!r}")
    root = Path(root)
    phrases = root / f"output_phrase_{split}.txt"
    if phrases.exists() and not overwrite:
        raise OutputError(f"split exists: {phrases} (use --overwrite to replace it)")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".synth-{split}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "img_rgb").mkdir(parents=True)
    (staging / "mask").mkdir()
    lines, records, kinds = [], [], {}
    try:
        for index in range(images):
            rng = _chip_rng(seed, index)
            world = render_world(rng, CHIP_SIZE, CHIP_SIZE)
            first: Path | None = None
            expressions = make_expressions(rng, world)
            if every_instance:
                expressions += every_instance_expressions(_every_rng(seed, index), world)
            for number, expression in enumerate(expressions):
                name = f"{split}_{index}_{number}.png"
                image_path = staging / "img_rgb" / name
                if first is None:
                    Image.fromarray(world.image).save(image_path, compress_level=1)
                    first = image_path
                else:
                    _link_or_copy(first, image_path)
                mask = world.mask(*expression.referents or (0,)).astype(np.uint8) * 255
                Image.fromarray(mask, mode="L").save(staging / "mask" / name, compress_level=1)
                lines.append(f"{name} {expression.text}\n")
                records.append(_record(name, expression, split, seed, index))
                kinds[Path(name).stem] = expression.kind
            if progress is not None:
                progress(index + 1, images)
        (staging / phrases.name).write_text("".join(lines))
        (staging / f"synth_{split}.jsonl").write_text(
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        )
        (staging / f"expression_kinds_{split}.json").write_text(
            json.dumps(kinds, indent=0, sort_keys=True) + "\n"
        )
        _commit_split(staging, root, split)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = {k: list(kinds.values()).count(k) for k in sorted(set(kinds.values()))}
    return ChipSummary(str(root), split, seed, images, len(lines), counts)


def _record(name: str, expression: Expression, split: str, seed: int, index: int) -> dict:
    others = {"other_object_ids": list(expression.others)} if expression.others else {}
    return {
        **others,
        "sample_id": Path(name).stem,
        "file_name": name,
        "split": split,
        "sent": expression.text,
        "kind": expression.kind,
        "category_name": expression.category,
        "object_id": expression.object_id,
        "seed": seed,
        "image_index": index,
    }


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _commit_split(staging: Path, root: Path, split: str) -> None:
    """Replace the split's old files by the staged ones; the phrase file goes last.

    The phrase file lists a split's samples, so until it is renamed the old split (or none)
    is what readers see.
    """
    for folder in ("img_rgb", "mask"):
        (root / folder).mkdir(exist_ok=True)
        for old in (root / folder).glob(f"{split}_*.png"):
            old.unlink()
        for member in sorted((staging / folder).iterdir()):
            os.replace(member, root / folder / member.name)
    for name in (
        f"synth_{split}.jsonl",
        f"expression_kinds_{split}.json",
        f"output_phrase_{split}.txt",
    ):
        os.replace(staging / name, root / name)


# --- scenes ----------------------------------------------------------------------------------


def scene_paths(path: str | Path) -> dict[str, Path]:
    """The files of the scene ``path`` (``NAME.tif``): image, labels, objects, expressions."""
    path = Path(path)
    stem = path.with_suffix("")
    return {
        "image": path,
        "labels": stem.with_name(stem.name + ".labels.tif"),
        "objects": stem.with_name(stem.name + ".objects.gpkg"),
        "expressions": stem.with_name(stem.name + ".expressions.json"),
        "scene_expressions": stem.with_name(stem.name + ".scene_expressions.json"),
    }


def write_scene(
    path: str | Path,
    size: int = 8192,
    seed: int = 0,
    per_kind: int = 5,
    overwrite: bool = False,
    world: World | None = None,
) -> dict[str, Path]:
    """Draw a ``size`` x ``size`` scene and write it with its ground truth.

    Args:
        path: The GeoTIFF to write (``.tif``); the ground truth goes beside it.
        size: Side in pixels (at :data:`~rrsis_geo.data.synth.world.GSD` m per pixel).
        seed: Same seed, same bytes.
        per_kind: Expressions per positive kind.
        overwrite: Replace existing files.
        world: An already drawn frame to write instead of drawing one (its size wins).

    Returns:
        The written paths, as :func:`scene_paths` names them.

    Raises:
        InputError: ``size`` below 64 or ``path`` not a ``.tif``.
        OutputError: A target exists and ``overwrite`` is False.
    """
    import geopandas as gpd
    import rasterio
    import shapely.affinity
    from rasterio.transform import from_origin

    from rrsis_geo.geo.writers import atomic_output

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"a scene is written as a GeoTIFF (.tif), got {path.name}")
    if world is None and size < 64:
        raise InputError(f"size must be at least 64 pixels, got {size}")
    rng = np.random.default_rng(seed)
    if world is None:
        world = render_world(rng, size, size)
    expressions = make_expressions(rng, world, per_kind=per_kind, negatives=1.0)
    # Their own generator, so that the other files keep the bytes they had before.
    scene_expressions = make_scene_expressions(np.random.default_rng([seed, 1]), world)
    height, width = world.labels.shape
    transform = from_origin(*SCENE_ORIGIN, GSD, GSD)
    paths = scene_paths(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "crs": SCENE_CRS,
        "transform": transform,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    # shapely's affine order: a, b, d, e, xoff, yoff
    to_map = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    frame = gpd.GeoDataFrame(
        {
            "object_id": [o.object_id for o in world.objects],
            "category": [o.category for o in world.objects],
            "colour": [o.colour for o in world.objects],
            "length_m": [round(o.length_m, 3) for o in world.objects],
            "angle_deg": [round(o.angle, 3) for o in world.objects],
            "area_m2": [round(o.area_px * GSD * GSD, 3) for o in world.objects],
        },
        geometry=[shapely.affinity.affine_transform(o.polygon, to_map) for o in world.objects],
        crs=SCENE_CRS,
    )
    with contextlib.ExitStack() as stack:
        staged = {
            key: stack.enter_context(atomic_output(target, overwrite))
            for key, target in paths.items()
        }
        with rasterio.open(
            staged["image"], "w", count=3, dtype="uint8", photometric="RGB", **profile
        ) as dst:
            dst.write(np.moveaxis(world.image, -1, 0))
        with rasterio.open(staged["labels"], "w", count=1, dtype="uint16", **profile) as dst:
            dst.write(world.labels, 1)
        with _fixed_ogr_date():
            frame.to_file(staged["objects"], driver="GPKG", layer="objects", engine="pyogrio")
        staged["expressions"].write_text(
            json.dumps([e.to_dict() for e in expressions], indent=1) + "\n"
        )
        staged["scene_expressions"].write_text(
            json.dumps([e.to_dict() for e in scene_expressions], indent=1) + "\n"
        )
    return paths


@contextlib.contextmanager
def _fixed_ogr_date() -> Iterator[None]:
    import pyogrio

    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
