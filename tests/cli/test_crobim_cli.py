"""`rrsis segment` and `rrsis models` with a saved crobim-lite (real encoders, untrained heads).

An untrained model's mask is meaningless: these tests check the plumbing, not accuracy.
"""

import json

import pytest
import rasterio

from rrsis_geo.nn.config import named_config
from rrsis_geo.nn.crobim import CroBIM
from tests.cli_run import rrsis


@pytest.fixture(scope="module")
def lite_checkpoint(tmp_path_factory):
    config = named_config("crobim-lite")
    config.input_size = 256  # smaller tiles keep the CPU test short; same architecture
    config.tile_overlap, config.tile_margin = 32, 8
    folder = tmp_path_factory.mktemp("models") / "crobim-lite-test"
    return CroBIM(config).save_pretrained(folder, include_text_encoder=False)


def test_segment_with_a_saved_crobim_lite(real_rasters, lite_checkpoint, tmp_path):
    source = real_rasters / "cogeo.tif"
    outputs = [tmp_path / "tank.tif", tmp_path / "tank.gpkg"]
    run = rrsis(
        "segment",
        source,
        "the largest storage tank",
        "--model",
        lite_checkpoint,
        "-o",
        outputs[0],
        "-o",
        outputs[1],
        "--json",
        "--batch-size",
        "4",
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["model"] == "crobim-lite"
    assert summary["grid"]["tile_size"] == 256
    assert summary["tiles"]["presence_max"] is not None
    with rasterio.open(source) as src, rasterio.open(outputs[0]) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height) == (src.width, src.height)
    assert outputs[1].exists()


def test_models_list_and_info(lite_checkpoint):
    run = rrsis("models", "list", "--json")
    assert run.returncode == 0, run.stderr
    rows = {row["name"]: row for row in json.loads(run.stdout)}
    assert list(rows) == [
        "crobim-lite-synth",
        "crobim-lite",
        "crobim-swinb",
        "lgce-swinb",
        "lgce-tiny",
        "rsrefseg2-so400m-large",
        "rsrefseg2-tiny",
    ]
    assert rows["crobim-lite-synth"]["kind"] == "trained" and rows["crobim-lite-synth"]["default"]
    assert rows["crobim-lite"]["kind"] == "config"
    run = rrsis("models", "info", lite_checkpoint)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["kind"] == "checkpoint" and info["weights"]["sha256_ok"] is True
    assert info["weights"]["text_encoder"] == "from_source"
    assert info["metadata"]["tile_size"] == 256
    run = rrsis("models", "info", "crobim-swinb")
    assert json.loads(run.stdout)["config"]["vision"]["name"] == "swin_base_patch4_window12_384"
    run = rrsis("models", "info", "nowhere/nothing")
    assert run.returncode == 1 and run.stderr.startswith("rrsis: error: model nowhere/nothing")
