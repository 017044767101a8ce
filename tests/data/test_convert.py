import json
import warnings

import numpy as np
import pytest

from rrsis_geo.data import rle
from rrsis_geo.data.convert import to_jsonl
from rrsis_geo.data.readers import JsonlReader, open_dataset
from rrsis_geo.data.sample import MaskResizedWarning
from rrsis_geo.errors import InputError, OutputError
from tests.data.fixtures import write_refsegrs, write_risbench, write_rrsisd

WRITERS = {"rrsisd": write_rrsisd, "refsegrs": write_refsegrs, "risbench": write_risbench}


@pytest.mark.parametrize("layout", ["rrsisd", "refsegrs", "risbench"])
def test_jsonl_round_trip_gives_the_same_samples(tmp_path, layout):
    fixture = WRITERS[layout](tmp_path / "data")
    native = open_dataset(fixture.root, None)
    out = tmp_path / "out.jsonl"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = to_jsonl(native, out)
    assert summary.samples == len(fixture.samples)
    assert summary.splits == {s: len(fixture.split(s)) for s in ("train", "val", "test")}
    assert summary.resized_masks == fixture.resized
    resized_warnings = [w for w in caught if issubclass(w.category, MaskResizedWarning)]
    assert len(resized_warnings) == (1 if fixture.resized else 0)  # one summary, not one each
    converted = JsonlReader(out, images_root=fixture.images_dir)
    assert len(converted) == len(fixture.samples)
    for sample, truth in zip(converted, fixture.samples, strict=True):
        assert sample.sample_id == truth.sample_id
        assert sample.split == truth.split
        assert sample.expression == truth.expression
        assert sample.image_id == truth.image_id
        assert sample.category == truth.category
        np.testing.assert_array_equal(sample.mask, truth.mask)  # already at the image's size
    assert list(tmp_path.glob(".*tmp*")) == []


def test_row_format(tmp_path):
    fixture = write_rrsisd(tmp_path / "data")
    out = tmp_path / "val.jsonl"
    to_jsonl(open_dataset(fixture.root, "val"), out)
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert list(row) == [
        "split",
        "image_id",
        "sent",
        "file_name",
        "segmentation",
        "category_name",
        "category_id",
        "ref_id",
        "ann_id",
        "bbox",
        "area",
        "sample_id",
    ]
    assert row["split"] == "val" and row["image_id"] == 2 and row["file_name"] == "00002.jpg"
    assert row["sent"] == "ship in the lower right corner"
    assert row["category_name"] == "ship" and row["category_id"] == 2
    assert row["segmentation"]["size"] == [64, 64]
    assert isinstance(row["segmentation"]["counts"], str)
    np.testing.assert_array_equal(rle.decode(row["segmentation"]), fixture.split("val")[0].mask)
    risbench = write_risbench(tmp_path / "r")
    out = tmp_path / "test.jsonl"
    to_jsonl(open_dataset(risbench.root, "test"), out)
    row = json.loads(out.read_text().splitlines()[0])
    assert list(row) == ["split", "image_id", "sent", "file_name", "segmentation", "sample_id"]
    assert row["image_id"] == row["file_name"] == "test_1_0.png"


def test_existing_output_and_failures_leave_nothing_partial(tmp_path):
    fixture = write_refsegrs(tmp_path / "data")
    dataset = open_dataset(fixture.root, None)
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(OutputError, match="output exists"):
        to_jsonl(dataset, out)
    assert out.read_text() == "keep me\n"
    (fixture.root / "images" / "8.tif").unlink()  # a test image: read after the train ones
    with pytest.raises(InputError, match=r"image not found: .*8\.tif .*rrsis data check"):
        to_jsonl(dataset, out, overwrite=True)
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out.jsonl"]
    with pytest.raises(OutputError, match="output folder does not exist"):
        to_jsonl(dataset, tmp_path / "no" / "out.jsonl")


def test_progress_is_reported(tmp_path):
    fixture = write_risbench(tmp_path / "data")
    calls = []
    to_jsonl(
        open_dataset(fixture.root, "train"),
        tmp_path / "o.jsonl",
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
