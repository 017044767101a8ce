"""A resumed tiling loop (``predict_scene``'s ``start_row``) emits an uninterrupted loop's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrsis_geo.errors import InputError
from rrsis_geo.geo.reading import open_scene
from rrsis_geo.inference.pipeline import (
    SegmentOptions,
    predict_scene,
    scene_grid,
    scene_statistics,
)
from rrsis_geo.inference.reference_models import box_mean, brightness
from rrsis_geo.inference.resume import (
    ResumeState,
    progress_path,
    remove_state,
    work_raster_path,
)
from tests.rasters import textured, write_raster


def _rows(path: Path, model, tile_size: int, start_row: int, block_rows: int) -> np.ndarray:
    """The rows a loop emits from ``start_row`` (NaN above it), stitched from its sink."""
    options = SegmentOptions(tile_size=tile_size)
    with open_scene(path) as scene:
        dataset = scene.dataset
        grid = scene_grid(dataset, model.metadata, options)
        statistics = scene_statistics(dataset, scene.bands, model.metadata, options)
        out = np.full((dataset.height, dataset.width), np.inf, np.float32)

        def sink(first_row: int, rows: np.ndarray) -> None:
            assert first_row >= start_row and np.isinf(out[first_row]).all()
            out[first_row : first_row + rows.shape[0]] = rows

        encoded = model.encode_expression("the bright field")
        counts = predict_scene(
            scene, model, encoded, grid, statistics, sink, 4, block_rows=block_rows,
            start_row=start_row,
        )  # fmt: skip
        assert counts.resumed == grid.first_row_reaching(start_row) * len(grid.col_starts)
    assert np.isinf(out[:start_row]).all() and not np.isinf(out[start_row:]).any()
    return out


@pytest.mark.parametrize("factory", [brightness, box_mean], ids=["brightness", "box-mean"])
def test_a_loop_started_at_any_block_row_emits_the_uninterrupted_rows(tmp_path, factory):
    data = textured(3, 300, 170, seed=5)
    data[:, 100:140, :60] = 0  # nodata: tiles skipped, rows emitted in chunks
    path = tmp_path / "scene.tif"
    write_raster(path, data, nodata=0)
    model = factory()
    full = _rows(path, model, 64, 0, 32)
    for start_row in (32, 64, 96, 128, 256, 288, 300):
        resumed = _rows(path, model, 64, start_row, 32)
        np.testing.assert_array_equal(resumed[start_row:], full[start_row:])


def test_a_state_of_another_key_is_refused_and_one_without_rasters_starts_over(tmp_path):
    beside = tmp_path / "out.tif"
    key = {"sentence": "'a'", "threshold": "0.5"}
    fresh = ResumeState.open(beside, key, ["binary"])
    assert fresh.rows_done == 0 and not progress_path(beside).exists()
    fresh.save(256, [np.full((3, 4), np.nan, np.float32)])
    assert ResumeState.open(beside, key, ["binary"]).rows_done == 0  # no work raster: over

    write_raster(work_raster_path(beside, "binary"), np.zeros((1, 300, 20), np.uint8))
    again = ResumeState.open(beside, key, ["binary"])
    assert again.rows_done == 256 and again.presence == [[]]
    with pytest.raises(InputError, match=r"cannot resume: the threshold differs \(saved 0.5, "):
        ResumeState.open(beside, {**key, "threshold": "0.3"}, ["binary"])


def test_a_state_of_two_passes_needs_both_passes_rasters_and_keeps_each_presence(tmp_path):
    beside = tmp_path / "out.gpkg"
    key = {"pass": "'a' and 'b'"}
    scores = [np.full((3, 4), np.nan, np.float32) for _ in range(2)]
    scores[1][0, 2] = 0.75
    ResumeState.open(beside, key, ["binary"], passes=2).save(256, scores)
    write_raster(work_raster_path(beside, "binary"), np.zeros((1, 300, 20), np.uint8))
    assert ResumeState.open(beside, key, ["binary"], passes=2).rows_done == 0  # pass 2 missing
    second = work_raster_path(beside, "binary", 1)
    assert second != work_raster_path(beside, "binary")
    write_raster(second, np.zeros((1, 300, 20), np.uint8))
    state = ResumeState.open(beside, key, ["binary"], passes=2)
    assert state.rows_done == 256 and state.presence == [[], [[0, 2, 0.75]]]
    remove_state(beside)
    assert list(tmp_path.iterdir()) == []
