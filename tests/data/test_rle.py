import json

import numpy as np
import pytest

from rrsis_geo.data import rle
from rrsis_geo.errors import InputError
from tests.data.fixtures import RISBENCH_SAMPLE, RISBENCH_SAMPLE_AREAS


@pytest.fixture
def risbench_sample():
    return RISBENCH_SAMPLE


def test_real_records_decode_to_the_published_areas(risbench_sample):
    lines = risbench_sample.read_text().splitlines()
    areas = []
    for line in lines:
        segmentation = json.loads(line)["segmentation"]
        mask = rle.decode(segmentation)
        assert mask.shape == tuple(segmentation["size"]) == (512, 512)
        assert mask.dtype == np.bool_
        areas.append(int(mask.sum()))
        assert rle.area(segmentation) == mask.sum()
        # pycocotools wrote these strings: encoding the decoded mask gives them back exactly
        assert rle.encode(mask) == {"size": [512, 512], "counts": segmentation["counts"]}
    assert areas == RISBENCH_SAMPLE_AREAS


# Strings written by pycocotools.mask.encode for these masks.
@pytest.mark.parametrize(
    ("mask", "counts"),
    [
        (np.array([[0, 1, 1], [1, 0, 0]]), "121O0"),
        (np.ones((3, 2)), "06"),
        (np.pad(np.ones((3, 2)), ((1, 1), (1, 1))), "63204"),
        (np.zeros((27, 0)), "0"),
    ],
)
def test_encode_matches_pycocotools(mask, counts):
    assert rle.encode(mask)["counts"] == counts
    np.testing.assert_array_equal(rle.decode(rle.encode(mask)), mask.astype(bool))


def test_column_major_order():
    mask = np.zeros((2, 3), dtype=bool)
    mask[1, 0] = True  # second pixel in column-major order, fourth in row-major order
    assert rle.counts_from_string(rle.encode(mask)["counts"]) == [1, 1, 4]
    np.testing.assert_array_equal(rle.decode({"size": [2, 3], "counts": [1, 1, 4]}), mask)


@pytest.mark.parametrize("seed", range(6))
def test_round_trip(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 90, 2)
    mask = rng.random((height, width)) < rng.random()
    if seed % 2:
        mask = np.zeros((height, width), dtype=bool)
        mask[height // 4 :, width // 3 : width // 2 + 1] = True
    encoded = rle.encode(mask)
    assert encoded["size"] == [height, width]
    assert isinstance(encoded["counts"], str)
    decoded = rle.decode(encoded)
    assert decoded.dtype == np.bool_ and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, mask)
    # uncompressed counts and bytes counts decode the same
    runs = rle.counts_from_string(encoded["counts"])
    np.testing.assert_array_equal(rle.decode({"size": [height, width], "counts": runs}), mask)
    as_bytes = {"size": [height, width], "counts": encoded["counts"].encode()}
    np.testing.assert_array_equal(rle.decode(as_bytes), mask)


def test_long_runs_and_negative_differences():
    # runs longer than 32 need several characters; a short run after a long one is a negative
    # difference, whose sign bit the decoder must extend
    runs = [100000, 3, 5, 200000, 1, 330000 - 300009]
    text = rle.counts_to_string(runs)
    assert rle.counts_from_string(text) == runs
    mask = rle.decode({"size": [600, 550], "counts": text})
    assert mask.sum() == 3 + 200000 + 330000 - 300009
    assert rle.encode(mask)["counts"] == text


def test_merge_is_the_union():
    a = np.zeros((4, 5), dtype=bool)
    a[0, :2] = True
    b = np.zeros((4, 5), dtype=bool)
    b[3, 4] = True
    np.testing.assert_array_equal(rle.merge([rle.encode(a), rle.encode(b)]), a | b)
    with pytest.raises(InputError, match="different sizes"):
        rle.merge([rle.encode(a), rle.encode(b.T)])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"size": [2, 2], "counts": "3"}, "runs cover 3 pixels"),
        ({"size": [2, 2], "counts": [1, -1, 4]}, "negative run"),
        ({"size": [2, 2], "counts": "3 "}, "character ' '"),
        ({"size": [2, 2], "counts": "l"}, "ends inside a number"),
        ({"size": [2], "counts": "4"}, "size must be"),
        ({"size": [2, 2]}, "no counts"),
        ({"size": [2, 2], "counts": [1.5, 2.5]}, "list of integers"),
    ],
)
def test_malformed_rles_are_input_errors(bad, message):
    with pytest.raises(InputError, match=message):
        rle.decode(bad)


def test_encode_refuses_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 1)))
