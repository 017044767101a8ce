"""The shipped example scene (examples/synthetic_scene.tif) and its ground truth."""

import json
from pathlib import Path

import geopandas as gpd
import shapely

from rrsis_geo.data.synth import scene_paths

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "synthetic_scene.tif"


def referent_iou(polygons: Path, sentence: str = "The largest storage tank.") -> float:
    """IoU of the union of ``polygons`` with the example's true referent of ``sentence``."""
    predicted = gpd.read_file(polygons)
    truth = gpd.read_file(scene_paths(EXAMPLE)["objects"])
    assert predicted.crs == truth.crs
    expressions = json.loads(scene_paths(EXAMPLE)["expressions"].read_text())
    object_id = next(e["object_id"] for e in expressions if e["text"] == sentence)
    referent = truth.loc[truth["object_id"] == object_id].geometry.iloc[0]
    found = shapely.union_all(predicted.geometry.to_list())
    return found.intersection(referent).area / found.union(referent).area
