import json
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from rrsis_geo.data import rle
from rrsis_geo.data.readers import (
    JsonlReader,
    RefSegRSReader,
    RISBenchReader,
    RRSISDReader,
    detect_layout,
    load_refs,
    open_dataset,
)
from rrsis_geo.data.sample import MaskResizedWarning, Sample, resize_nearest
from rrsis_geo.errors import InputError
from tests.data.fixtures import (
    RISBENCH_SAMPLE,
    RISBENCH_SAMPLE_AREAS,
    write_refsegrs,
    write_risbench,
    write_rrsisd,
)

READERS = {"rrsisd": RRSISDReader, "refsegrs": RefSegRSReader, "risbench": RISBenchReader}
WRITERS = {"rrsisd": write_rrsisd, "refsegrs": write_refsegrs, "risbench": write_risbench}


def assert_sample(sample, expected):
    assert isinstance(sample, Sample)
    assert sample.sample_id == expected.sample_id
    assert sample.split == expected.split
    assert sample.expression == expected.expression
    assert sample.image_id == expected.image_id
    assert sample.category == expected.category
    assert sample.image.dtype == np.uint8 and sample.image.shape == (*expected.shape, 3)
    if expected.image is not None:
        np.testing.assert_array_equal(sample.image, expected.image)
    assert sample.mask.dtype == np.bool_
    np.testing.assert_array_equal(sample.mask, expected.mask)


@pytest.mark.parametrize("layout", ["rrsisd", "refsegrs", "risbench"])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_each_layout_yields_its_samples(tmp_path, layout, split):
    fixture = WRITERS[layout](tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskResizedWarning)
        dataset = READERS[layout](fixture.root, split)
        expected = fixture.split(split)
        assert dataset.name == layout and dataset.split == split and dataset.root == fixture.root
        assert len(dataset) == len(expected)
        for sample, truth in zip(dataset, expected, strict=True):
            assert_sample(sample, truth)
    assert [dataset.describe(i).sample_id for i in range(len(dataset))] == [
        e.sample_id for e in expected
    ]


@pytest.mark.parametrize("layout", ["rrsisd", "refsegrs", "risbench"])
def test_all_splits_and_auto_detection(tmp_path, layout):
    fixture = WRITERS[layout](tmp_path)
    assert detect_layout(fixture.root) == (layout, fixture.root)
    assert detect_layout(tmp_path) == (layout, fixture.root)  # the parent of the one data set
    for split in (None, "all"):
        dataset = open_dataset(tmp_path, split)
        assert isinstance(dataset, READERS[layout])
        assert dataset.split is None
        assert [r.sample_id for r in dataset.records] == [e.sample_id for e in fixture.samples]
        assert dataset.splits == ["train", "val", "test"]
    assert isinstance(open_dataset(fixture.root, "val", layout=layout), READERS[layout])


@pytest.mark.parametrize("layout", ["rrsisd", "refsegrs", "risbench"])
def test_pixels_are_read_lazily(tmp_path, layout):
    fixture = WRITERS[layout](tmp_path)
    for path in fixture.images_dir.iterdir():
        path.unlink()
    dataset = open_dataset(fixture.root, "train")
    record = dataset.describe(0)
    assert record.expression == fixture.split("train")[0].expression
    assert record.image_path == fixture.images_dir / record.file_name
    assert dataset.read_mask(0).any()
    with pytest.raises(InputError, match="image not found"):
        dataset[0]


def test_rrsisd_gotchas(tmp_path):
    fixture = write_rrsisd(tmp_path)
    dataset = RRSISDReader(fixture.root / "rrsisd", "train")  # the rrsisd folder works too
    assert dataset.root == fixture.root
    # the 48x48 JPEG of a 64x64 RLE: the mask is resized to the image, and that is said
    assert dataset.mask_size(2) == (64, 64) and dataset.image_size(2) == (48, 48)
    with pytest.warns(MaskResizedWarning, match=r"sample 2: mask 64x64 resized .* 48x48"):
        sample = dataset[2]
    np.testing.assert_array_equal(sample.mask, fixture.split("train")[2].mask)
    assert dataset.resized_masks == fixture.resized
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaskResizedWarning)
        dataset[0]  # same sizes: no warning
    # native fields kept for the JSONL; the category comes from categories_id (sic) when the
    # ref has none
    test = RRSISDReader(fixture.root, "test")
    assert test.describe(0).native == {
        "image_id": 2,
        "ref_id": 4,
        "ann_id": 14,
        "category_id": 1,
        "bbox": [1, 2, 30, 40],
        "area": 123456.0,
    }
    assert test.describe(0).category == "airplane"
    assert any("several sentences" in note for note in test.notes)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_refs_load_at_every_protocol(tmp_path, protocol):
    fixture = write_rrsisd(tmp_path, protocol=protocol)
    refs = load_refs(fixture.root / "rrsisd" / "refs(unc).p")
    assert [r["ref_id"] for r in refs] == [0, 1, 2, 3, 4, 5]
    assert refs[0]["sentences"][0]["raw"] == "The airplane at the top left."


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(
    "payload",
    [lambda marker: [{"ref_id": 1}, _Payload(marker)], lambda marker: np.zeros(2)],
)
def test_refs_pickle_with_code_or_objects_is_refused_unloaded(tmp_path, payload):
    fixture = write_rrsisd(tmp_path)
    refs = fixture.root / "rrsisd" / "refs(unc).p"
    marker = tmp_path / "created-by-the-pickle"
    refs.write_bytes(pickle.dumps(payload(marker), protocol=2))
    with pytest.raises(InputError, match=r"refused to load .*only lists, dicts"):
        RRSISDReader(fixture.root, "train")
    assert not marker.exists()


def test_refs_must_be_refs(tmp_path):
    fixture = write_rrsisd(tmp_path)
    refs = fixture.root / "rrsisd" / "refs(unc).p"
    refs.write_bytes(pickle.dumps([{"ref_id": 1, "ann_id": 2, "image_id": 3, "split": "x"}]))
    with pytest.raises(InputError, match=r"ref #0 has no 'sentences'"):
        RRSISDReader(fixture.root)
    refs.write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="not a valid pickle"):
        RRSISDReader(fixture.root)


def test_rrsisd_broken_annotation_is_a_record_problem(tmp_path):
    fixture = write_rrsisd(tmp_path)
    instances_path = fixture.root / "rrsisd" / "instances.json"
    instances = json.loads(instances_path.read_text())
    instances["annotations"] = [a for a in instances["annotations"] if a["id"] != 13]
    instances_path.write_text(json.dumps(instances))
    dataset = RRSISDReader(fixture.root, "val")
    assert dataset.describe(0).problem == "RRSIS-D ref 3: annotation 13 is not in instances.json"
    with pytest.raises(InputError, match="annotation 13 is not in"):
        dataset[0]


def test_refsegrs_binarizes_above_50(tmp_path):
    fixture = write_refsegrs(tmp_path)
    dataset = RefSegRSReader(fixture.root, "train")
    gray = np.asarray(Image.open(fixture.root / "masks" / "0.tif"))
    assert set(np.unique(gray)) == {0, 12, 50, 51, 255}
    mask = dataset[0].mask
    np.testing.assert_array_equal(mask, gray > 50)
    assert mask[0].sum() == 0  # the row of 50s
    # CRLF line ends and a blank last line, ids with gaps
    assert [r.sample_id for r in dataset.records] == ["0", "2", "5"]
    assert dataset.records[1].expression == "a road"


def test_risbench_split_comes_from_the_phrase_file(tmp_path):
    fixture = write_risbench(tmp_path)
    val = RISBenchReader(fixture.root, "val")
    assert [r.sample_id for r in val.records] == ["train_14700_0", "train_14700_1"]
    assert {s.split for s in val} == {"val"}
    train = RISBenchReader(fixture.root, "train")
    assert [r.sample_id for r in train.records] == ["train_0_0", "train_0_2", "train_5_0"]
    assert train.describe(1).image_id == "train_0_2.png"


def test_risbench_phrase_names_without_extension(tmp_path):
    fixture = write_risbench(tmp_path)
    (fixture.root / "output_phrase_test.txt").write_text("test_1_0 the airplane on the runway\n")
    dataset = RISBenchReader(fixture.root, "test")
    assert dataset.describe(0).file_name == "test_1_0.png"
    assert_sample(dataset[0], fixture.split("test")[0])


def test_unknown_split_and_missing_files(tmp_path):
    refsegrs = write_refsegrs(tmp_path / "a")
    with pytest.raises(InputError, match=r"no RefSegRS split 'dev' .*train, val, test"):
        RefSegRSReader(refsegrs.root, "dev")
    (refsegrs.root / "output_phrase_val.txt").unlink()
    with pytest.raises(InputError, match=r"split 'val' .*present: train, test"):
        open_dataset(refsegrs.root, "val")
    rrsisd = write_rrsisd(tmp_path / "b")
    with pytest.raises(InputError, match=r"no RRSIS-D split 'testA'"):
        RRSISDReader(rrsisd.root, "testA")
    (rrsisd.root / "rrsisd" / "instances.json").unlink()
    with pytest.raises(InputError, match="RRSIS-D instances not found"):
        RRSISDReader(rrsisd.root, "train")
    with pytest.raises(InputError, match="no RISBench phrase files"):
        RISBenchReader(tmp_path / "b")


def test_detection_errors(tmp_path):
    with pytest.raises(InputError, match="data set not found"):
        open_dataset(tmp_path / "nothing", "train")
    with pytest.raises(InputError, match="no known data set layout"):
        open_dataset(tmp_path, "train")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"not a \.jsonl file"):
        open_dataset(tmp_path / "notes.txt", "train")
    with pytest.raises(InputError, match="unknown layout 'coco'"):
        open_dataset(tmp_path, "train", layout="coco")
    write_refsegrs(tmp_path)
    write_risbench(tmp_path)
    with pytest.raises(InputError, match=r"several data sets .*RISBench \(risbench\)"):
        open_dataset(tmp_path, "train")
    # every message is one line
    try:
        open_dataset(tmp_path, "train")
    except InputError as error:
        assert "\n" not in str(error)


def test_jsonl_reader_on_real_records(tmp_path):
    sample = RISBENCH_SAMPLE
    dataset = open_dataset(sample, "test")
    assert isinstance(dataset, JsonlReader)
    assert len(dataset) == 9
    assert [int(dataset.read_mask(i).sum()) for i in range(9)] == RISBENCH_SAMPLE_AREAS
    assert dataset.describe(0).sample_id == "test_1_0"
    assert dataset.describe(0).image_id == "test_1_0.png"
    assert (
        dataset.describe(0).expression == "The ship that is closest to the top edge of the image."
    )
    with pytest.raises(InputError, match="image not found"):  # the images are not shared
        dataset[0]
    with pytest.raises(InputError, match=r"no JSONL split 'val' .*present: test"):
        JsonlReader(sample, "val")
    # with the images beside it, samples are complete
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((512, 512, 3), np.uint8)).save(images / "test_1_0.png")
    full = JsonlReader(sample, images_root=images)
    assert full[0].mask.sum() == RISBENCH_SAMPLE_AREAS[0]


def test_jsonl_reader_formats_and_errors(tmp_path):
    mask = np.zeros((6, 5), dtype=bool)
    mask[1:3, 2:4] = True
    Image.fromarray(np.full((6, 5, 3), 7, np.uint8)).save(tmp_path / "a.jpg")
    rows = [
        # RSRefSeg 2's RRSIS-D rows: a list of one RLE, ann_id, category_name
        {
            "split": "val",
            "image_id": 5,
            "sent": " the roof ",
            "file_name": "a.jpg",
            "segmentation": [rle.encode(mask)],
            "ann_id": 9,
            "category_name": "building",
        },
        {
            "split": "test",
            "image_id": "b.png",
            "sent": "x",
            "file_name": "b.png",
            "segmentation": rle.encode(mask),
        },
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    dataset = JsonlReader(path, "val")
    sample = dataset[0]
    assert (sample.sample_id, sample.image_id, sample.expression, sample.category) == (
        "9",
        "5",
        "the roof",
        "building",
    )
    np.testing.assert_array_equal(sample.mask, mask)
    assert JsonlReader(path).describe(1).sample_id == "b"
    for bad, message in [
        ("{nope", "line 1: not JSON"),
        ("[1, 2]", "line 1: not a JSON object"),
        (json.dumps({"sent": "a", "file_name": "a"}), "line 1: no 'segmentation'"),
        (
            json.dumps({"sent": "a", "file_name": "a", "segmentation": [[1.0, 2.0, 3.0]]}),
            "polygons are not supported",
        ),
    ]:
        path.write_text(bad + "\n")
        with pytest.raises(InputError, match=message):
            JsonlReader(path)
    with pytest.raises(InputError, match="JSONL file not found"):
        JsonlReader(tmp_path / "missing.jsonl")


def test_slicing_and_sample_validation(tmp_path):
    fixture = write_risbench(tmp_path)
    dataset = RISBenchReader(fixture.root, "train")
    assert [s.sample_id for s in dataset[1:]] == ["train_0_2", "train_5_0"]
    assert dataset[-1].sample_id == "train_5_0"
    with pytest.raises(IndexError):
        dataset[3]
    assert "RISBenchReader" in repr(dataset) and "3 samples" in repr(dataset)
    with pytest.raises(ValueError, match="differ in size"):
        Sample(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), bool), "e", "1", "1", None, "t")
    with pytest.raises(ValueError, match="uint8"):
        Sample(np.zeros((4, 4, 3)), np.zeros((4, 4), bool), "e", "1", "1", None, "t")


def test_resize_nearest_keeps_pixel_centres():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    np.testing.assert_array_equal(resize_nearest(mask, (8, 8)), np.kron(mask, np.ones((2, 2))))
    np.testing.assert_array_equal(resize_nearest(np.kron(mask, np.ones((2, 2))), (4, 4)), mask)
    assert resize_nearest(mask, (3, 5)).shape == (3, 5)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_unreadable_image_is_an_input_error(tmp_path):
    fixture = write_refsegrs(tmp_path)
    (fixture.root / "images" / "0.tif").write_bytes(b"II*\x00garbage")
    dataset = RefSegRSReader(fixture.root, "train")
    with pytest.raises(InputError, match=r"cannot read image .*0\.tif"):
        dataset[0]
    truncated = fixture.root / "images" / "2.tif"
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(truncated.with_suffix(".png"))
    data = truncated.with_suffix(".png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cannot read image .*2\.tif"):
        dataset[1]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_tiffs_pillow_cannot_open_are_read_with_rasterio(tmp_path):
    import rasterio

    fixture = write_refsegrs(tmp_path)
    bands = np.stack([fixture.samples[0].image[..., i] for i in range(3)] + [np.zeros((32, 32))])
    for count, dtype in [(5, "uint8"), (3, "float32")]:
        data = np.concatenate([bands, bands])[:count].astype(dtype)
        with rasterio.open(
            fixture.root / "images" / "0.tif",
            "w",
            driver="GTiff",
            width=32,
            height=32,
            count=count,
            dtype=dtype,
        ) as dst:
            dst.write(data)
        dataset = RefSegRSReader(fixture.root, "train")
        if dtype == "uint8":
            assert_sample(dataset[0], fixture.samples[0])  # bands 1-3
        else:
            with pytest.raises(InputError, match="float32, not 8-bit"):
                dataset[0]
