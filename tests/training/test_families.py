"""Every registered family through the real CLI: `rrsis train`, `rrsis eval`, `rrsis segment`.

Tiny random configs on the learnable RISBench-layout fixture: these check the plumbing of
each family (the registry, the training task, the predictor), not accuracy.
"""

import copy
import json

import pytest
import rasterio
import yaml

from tests.cli_run import rrsis
from tests.rasters import textured, write_raster
from tests.training.test_trainer import write_learnable_risbench

TINY = {
    "lgce": {
        "model": "lgce-tiny",
        "model_overrides": {
            "vision": {
                "kwargs": {
                    "img_size": 64,
                    "embed_dim": 16,
                    "depths": [1, 1, 1, 1],
                    "num_heads": [1, 1, 1, 1],
                    "window_size": 4,
                    "drop_path_rate": 0.0,
                },
            },
            "input_size": 64,
            "tile_overlap": 16,
            "tile_margin": 4,
            "text": {"max_tokens": 8, "weights": "random"},
        },
    },
    # SAM 2.1 and SigLIP 2 random and tiny, at 128 px; LoRA on the towers as in training.
    "rsrefseg2": {"model": "rsrefseg2-tiny", "model_overrides": {"tile_overlap": 32}},
}
TILE_SIZE = {"lgce": 64, "rsrefseg2": 128}


@pytest.mark.parametrize("family", sorted(TINY))
def test_a_family_trains_evaluates_and_segments_through_the_cli(family, tmp_path, tiny_text_folder):
    root = write_learnable_risbench(tmp_path)
    recipe = {
        "name": f"tiny-{family}",
        "output_dir": str(tmp_path / "runs"),
        **copy.deepcopy(TINY[family]),
        "data": {"root": str(root), "layout": "risbench"},
        "batch_size": 4,
        "max_steps": 2,
        "log_every": 1,
        "checkpoint_every": 2,
        "eval_every": 0,
    }
    if "text" in recipe["model_overrides"]:
        recipe["model_overrides"]["text"]["name"] = str(tiny_text_folder)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))

    trained = rrsis("train", config)
    assert trained.returncode == 0, trained.stderr
    checkpoint = tmp_path / "runs" / f"tiny-{family}" / "checkpoints" / "last"
    document = json.loads((checkpoint / "config.json").read_text())
    assert (
        document["architecture"] == family
        and document["pretrained"]["tile_size"] == TILE_SIZE[family]
    )

    evaluated = rrsis("eval", checkpoint, root, "--split", "test")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Pr@0.5" in evaluated.stdout and "mIoU" in evaluated.stdout

    scene = write_raster(tmp_path / "scene.tif", textured(3, 150, 130, seed=1))
    out = tmp_path / "out.tif"
    segmented = rrsis("segment", scene, "the bright square", "-m", checkpoint, "-o", out, "--json")
    assert segmented.returncode == 0, segmented.stderr
    summary = json.loads(segmented.stdout)
    assert (
        summary["model"] == f"tiny-{family}" and summary["grid"]["tile_size"] == TILE_SIZE[family]
    )
    with rasterio.open(out) as written:
        assert (written.width, written.height) == (130, 150)
