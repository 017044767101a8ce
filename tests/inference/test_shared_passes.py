"""Several sentences in one tiling loop give what one loop per sentence gives."""

import numpy as np
import pytest

from rrsis_geo.geo.reading import open_scene
from rrsis_geo.inference.model import default_model, load_model
from rrsis_geo.inference.pipeline import (
    SegmentOptions,
    SharedSentence,
    predict_scene,
    scene_grid,
    scene_statistics,
)
from rrsis_geo.inference.reference_models import brightness
from tests.inference.test_default_model import EXAMPLE


@pytest.fixture(scope="module")
def model():
    return load_model(str(default_model()), "cpu")


def test_predict_many_sees_the_tiles_once_and_matches_predict(model):
    tiles = np.random.default_rng(0).normal(size=(2, 3, 320, 320)).astype(np.float32)
    encodings = [
        model.encode_description("The ship."),
        model.encode_expression("The largest storage tank."),  # selection on: its own forward
        model.encode_description("The airplane."),
    ]
    before = model.tiles_predicted
    together = model.predict_many(tiles, encodings)
    assert model.tiles_predicted - before == 2 * 3
    for encoded, shared in zip(encodings, together, strict=True):
        alone = model.predict(tiles, encoded)
        np.testing.assert_allclose(shared.probabilities, alone.probabilities, atol=1e-4)
        np.testing.assert_allclose(shared.presence, alone.presence, atol=1e-4)


class _Rows:
    def __init__(self, height, width):
        self.values = np.full((height, width), np.nan, np.float32)

    def __call__(self, first_row, rows):
        self.values[first_row : first_row + len(rows)] = rows


@pytest.mark.parametrize("kind", ["crobim", "brightness"])
def test_a_shared_loop_writes_what_one_loop_per_sentence_writes(model, kind):
    chosen = model if kind == "crobim" else brightness()
    sentences = ["The storage tank.", "The building.", "The swimming pool."]
    options = SegmentOptions(tile_size=256, overlap=64)
    with open_scene(EXAMPLE, None, 3, model.metadata.gsd) as scene:
        grid = scene_grid(scene.dataset, chosen.metadata, options)
        statistics = scene_statistics(scene.dataset, scene.bands, chosen.metadata, options)
        assert len(grid) > 1
        shape = (scene.dataset.height, scene.dataset.width)
        alone = []
        for sentence in sentences:
            rows = _Rows(*shape)
            predict_scene(scene, chosen, chosen.encode_expression(sentence), grid, statistics, rows)
            alone.append(rows.values)
        together = [_Rows(*shape) for _ in sentences]
        encoded = [chosen.encode_expression(s) for s in sentences]
        counts = predict_scene(
            scene, chosen, encoded[0], grid, statistics, together[0], batch_size=6,
            shared=[SharedSentence(e, r) for e, r in zip(encoded[1:], together[1:], strict=True)],
        )  # fmt: skip
    assert counts.predicted == len(grid)
    # A call holds batch_size tile-sentence pairs: 6 // 3 sentences = 2 tiles.
    assert counts.batches == -(-len(grid) // 2)
    for single, shared in zip(alone, together, strict=True):
        assert not np.isnan(shared.values).any()
        np.testing.assert_allclose(shared.values, single, atol=2e-3)
