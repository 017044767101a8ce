"""Make the shipped example scene, and the README figure of the default model's result on it.

The scene is drawn by the synthetic benchmark's generator (``rrsis_geo.data.synth``) with a
seed that no training or test split uses: the first seed, counting from 90000, whose frame has
at least three storage tanks, one clearly larger than the others (so that "the largest storage
tank" has one right answer), a road and two other kinds of object. It covers one model tile
(512 x 512 px at 0.3 m), because the default model resolves superlatives within a tile.

    python examples/make_example.py            # examples/synthetic_scene.tif + ground truth
    python examples/make_example.py --figure   # docs/images/example_result.png (needs the
                                               # result: rrsis segment ... -o tanks.gpkg)

The README's second example is a scene many tiles wide, too big to ship (about 40 MB), drawn
by ``rrsis data synth scene`` with :data:`BIG_SCENE_SEED` (the first seed from 95000 whose
4096 px scene has a largest storage tank by a clear margin among at least eight):

    python examples/make_example.py --find-big-seed   # prints BIG_SCENE_SEED
    python examples/make_example.py --big-figure --scene big.tif --result tank.gpkg \
        --candidates tanks.gpkg                      # docs/images/scene_result.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rrsis_geo.data.synth import make_expressions, render_world, scene_paths, write_scene

HERE = Path(__file__).resolve().parent
SCENE = HERE / "synthetic_scene.tif"
EXPRESSION = "The largest storage tank."
FIRST_SEED = 90_000
BIG_SCENE_SIZE = 4096
BIG_SCENE_SEED = 95_008
"""Seed of the README's 4096 px scene (see :func:`find_big_seed`)."""


def find_seed() -> int:
    """The first seed from FIRST_SEED with a clear largest tank among three or more.

    The frame must also hold a road and two other categories, so that the example shows the
    model picking the tank out of a varied scene.
    """
    for seed in range(FIRST_SEED, FIRST_SEED + 10_000):
        rng = np.random.default_rng(seed)
        world = render_world(rng, 512, 512)
        tanks = sorted(
            (o.area_px for o in world.objects if o.category == "storage tank"), reverse=True
        )
        categories = {o.category for o in world.objects}
        varied = len(categories) >= 3 and bool(world.roads)
        if varied and len(tanks) >= 3 and tanks[0] > 1.5 * tanks[1]:
            texts = [e.text for e in make_expressions(rng, world, per_kind=5, negatives=1.0)]
            if EXPRESSION in texts:
                return seed
    raise RuntimeError("no seed found")


def make_scene() -> None:
    """Write the example scene and its ground truth into examples/."""
    seed = find_seed()
    write_scene(SCENE, size=512, seed=seed, overwrite=True)
    print(f"seed {seed}: wrote", ", ".join(str(p.name) for p in scene_paths(SCENE).values()))


def largest_tank_id() -> int:
    """The referent of the example expression, from the scene's ground truth."""
    expressions = json.loads(scene_paths(SCENE)["expressions"].read_text())
    return next(e["object_id"] for e in expressions if e["text"] == EXPRESSION)


def make_figure(result: Path, output: Path) -> None:
    """The scene, the true tank (white outline) and the model's polygon (magenta fill)."""
    import geopandas as gpd
    import rasterio
    from PIL import Image, ImageDraw

    with rasterio.open(SCENE) as src:
        image = np.moveaxis(src.read(), 0, -1)
        inverse = ~src.transform
    truth = gpd.read_file(scene_paths(SCENE)["objects"])
    truth = truth[truth["object_id"] == largest_tank_id()]
    predicted = gpd.read_file(result)
    canvas = Image.fromarray(image).convert("RGBA")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)

    def pixels(polygon):
        return [inverse * xy for xy in polygon.exterior.coords]

    for geometry in predicted.geometry:
        for polygon in getattr(geometry, "geoms", [geometry]):
            draw.polygon(pixels(polygon), fill=(255, 0, 255, 110), outline=(255, 0, 255, 255))
    for polygon in truth.geometry:
        draw.line(pixels(polygon), fill=(255, 255, 255, 255), width=2)
    Image.alpha_composite(canvas, overlay).convert("RGB").save(output, optimize=True)
    print(f"wrote {output}")


def find_big_seed() -> int:
    """The first seed from 95000 whose big scene has >= 8 tanks, the largest by >= 30%."""
    from rrsis_geo.data.synth import render_world

    for seed in range(95_000, 95_100):
        world = render_world(np.random.default_rng(seed), BIG_SCENE_SIZE, BIG_SCENE_SIZE)
        tanks = sorted(
            (o.area_px for o in world.objects if o.category == "storage tank"), reverse=True
        )
        if len(tanks) >= 8 and tanks[0] > 1.3 * tanks[1]:
            return seed
    raise RuntimeError("no seed found")


def make_big_figure(scene: Path, result: Path, candidates: Path, output: Path) -> None:
    """The big scene at 1/4 scale: candidates outlined by rank, the referent in magenta.

    The true largest tank (from the scene's ground truth) gets a white ring around it, so a
    reader can check the choice.
    """
    import geopandas as gpd
    import rasterio
    from PIL import Image, ImageDraw

    factor = 4
    with rasterio.open(scene) as src:
        shape = (src.height // factor, src.width // factor)
        image = np.moveaxis(src.read(out_shape=(src.count, *shape)), 0, -1)
        inverse = ~src.transform
    truth = gpd.read_file(scene_paths(scene)["objects"])
    tanks = truth[truth["category"] == "storage tank"]
    largest = tanks.loc[tanks["area_m2"].idxmax()].geometry
    layer = gpd.read_file(candidates).to_crs(truth.crs)
    chosen = gpd.read_file(result).to_crs(truth.crs)
    canvas = Image.fromarray(image).convert("RGBA")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)

    def pixels(polygon):
        return [tuple(v / factor for v in inverse * xy) for xy in polygon.exterior.coords]

    ranks = max(1, len(layer))
    for rank, geometry in zip(layer["rank"], layer.geometry, strict=True):
        shade = int(255 - 160 * (rank - 1) / ranks)
        for polygon in getattr(geometry, "geoms", [geometry]):
            draw.polygon(pixels(polygon), outline=(255, shade, 0, 255), width=2)
    for geometry in chosen.geometry:
        for polygon in getattr(geometry, "geoms", [geometry]):
            draw.polygon(pixels(polygon), fill=(255, 0, 255, 160), outline=(255, 0, 255, 255))
    centre = inverse * (largest.centroid.x, largest.centroid.y)
    x, y = centre[0] / factor, centre[1] / factor
    radius = 6 + (largest.length / abs(1 / inverse.a)) / factor / 2
    draw.ellipse(
        (x - radius, y - radius, x + radius, y + radius), outline=(255, 255, 255, 255), width=2
    )
    Image.alpha_composite(canvas, overlay).convert("RGB").save(output, optimize=True)
    print(f"wrote {output}")


def main() -> None:
    """Scene by default, figures with --figure / --big-figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", action="store_true", help="Draw the README figure.")
    parser.add_argument("--big-figure", action="store_true", help="Draw the big-scene figure.")
    parser.add_argument("--find-big-seed", action="store_true", help="Print the big seed.")
    parser.add_argument("--scene", type=Path, default=Path("big.tif"))
    parser.add_argument("--result", type=Path, default=Path("tanks.gpkg"))
    parser.add_argument("--candidates", type=Path, default=Path("candidates.gpkg"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    images = HERE.parent / "docs" / "images"
    if args.figure:
        make_figure(args.result, args.output or images / "example_result.png")
    elif args.big_figure:
        output = args.output or images / "scene_result.png"
        make_big_figure(args.scene, args.result, args.candidates, output)
    elif args.find_big_seed:
        print(find_big_seed())
    else:
        make_scene()


if __name__ == "__main__":
    main()
