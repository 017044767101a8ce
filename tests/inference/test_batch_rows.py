"""``run_batch`` with rows side by side: one model call at a time, rows overlapping."""

import itertools
import threading
import time
from pathlib import Path

from rrsis_geo.inference.batch import DONE, BatchRow, ModelCache, run_batch
from rrsis_geo.inference.pipeline import SegmentOptions, SegmentRequest
from rrsis_geo.inference.reference_models import brightness
from tests.rasters import textured, write_raster


class Watched:
    """A real per-pixel model that records how many of its calls run at once, and when."""

    def __init__(self) -> None:
        self.model = brightness()
        self.metadata = self.model.metadata
        self.inside = 0
        self.most_inside = 0
        self.calls: list[tuple[str, float]] = []
        self._count = threading.Lock()

    def encode_expression(self, expression):
        return self.model.encode_expression(expression)

    def predict(self, tiles, encoded):
        with self._count:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.calls.append((threading.current_thread().name, time.monotonic()))
        time.sleep(0.02)  # long enough for another row's call to overlap, unless serialised
        try:
            return self.model.predict(tiles, encoded)
        finally:
            with self._count:
                self.inside -= 1


def _rows(folder: Path, count: int) -> list[BatchRow]:
    rows = []
    for index in range(count):
        scene = write_raster(folder / f"s{index}.tif", textured(3, 150, 130, seed=index))
        options = SegmentOptions(tile_size=32, overlap=0, margin=0, batch_size=2)
        outputs = (folder / f"s{index}.gpkg",)
        request = SegmentRequest(scene, "the bright field", outputs, "w", "cpu", options)
        rows.append(BatchRow(index + 1, request))
    return rows


def test_rows_side_by_side_share_the_model_one_call_at_a_time(tmp_path):
    watched = Watched()
    models = ModelCache(loader=lambda spec, device: watched, shared=True)
    report = run_batch(_rows(tmp_path, 4), models=models, rows_in_flight=2)
    assert [o.status for o in report.outcomes] == [DONE] * 4
    assert [o.row.line for o in report.outcomes] == [1, 2, 3, 4]  # manifest order
    assert watched.most_inside == 1  # the shared model never ran two calls at once
    # ... while the rows did run side by side: calls of two row threads interleave
    threads = [name for name, _ in watched.calls]
    switches = sum(a != b for a, b in itertools.pairwise(threads))
    assert len(set(threads)) == 2 and switches > 2


def test_without_the_shared_model_the_calls_would_overlap(tmp_path):
    """The check above can fail: the same rows on an unshared model run calls at once."""
    watched = Watched()
    models = ModelCache(loader=lambda spec, device: watched, shared=False)
    report = run_batch(_rows(tmp_path, 4), models=models, rows_in_flight=2)
    assert [o.status for o in report.outcomes] == [DONE] * 4
    assert watched.most_inside == 2
