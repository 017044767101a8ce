"""`rrsis train` / `rrsis eval` on a tiny CroBIM and a RISBench-layout fixture, on CPU."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from rrsis_geo.training.config import load_config
from rrsis_geo.training.trainer import train

SIZE = 48


def write_learnable_risbench(folder, train=8, val=4, test=4):
    """RISBench layout whose referent is always the bright square: a tiny model can learn it."""
    root = folder / "RISBench"
    (root / "img_rgb").mkdir(parents=True)
    (root / "mask").mkdir()
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val), ("test", test)):
        lines = []
        for index in range(count):
            name = f"{'train' if split == 'val' else split}_{index + 100 * (split == 'val')}_0.png"
            image = (rng.random((SIZE, SIZE, 3)) * 80).astype(np.uint8)
            top, left = rng.integers(4, SIZE - 20, size=2)
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            mask[top : top + 16, left : left + 16] = 255
            image[mask > 0] = 230
            Image.fromarray(image).save(root / "img_rgb" / name)
            Image.fromarray(mask, mode="L").save(root / "mask" / name)
            lines.append(f"{name} the bright square\n")
        (root / f"output_phrase_{split}.txt").write_text("".join(lines))
    return root


@pytest.fixture
def run_config(tmp_path, tiny_text_folder):
    root = write_learnable_risbench(tmp_path)
    values = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "model": "crobim-lite",
        "model_overrides": {
            "vision": {"name": "test_resnet", "out_indices": [1, 2, 3, 4], "weights": None},
            "text": {"name": str(tiny_text_folder), "max_tokens": 8, "weights": "random"},
            "dim": 32,
            "num_heads": 4,
            "num_prompts": 2,
            "mid_layers": 1,
            "input_size": 48,
        },
        "data": {"root": str(root), "layout": "risbench"},
        "optim": {"lr_encoder": 1e-3, "lr_new": 3e-3, "warmup_steps": 2},
        "batch_size": 4,
        "log_every": 1,
        "checkpoint_every": 4,
        "eval_every": 0,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def losses(run_dir):
    with open(run_dir / "train_log.csv") as handle:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(handle)}


def test_training_loss_falls(run_config):
    run_dir = train(load_config(run_config, ["max_steps=36"]))
    values = [losses(run_dir)[step] for step in sorted(losses(run_dir))]
    assert len(values) == 36
    assert np.mean(values[-6:]) < 0.7 * np.mean(values[:6])
    assert (run_dir / "checkpoints" / "last" / "model.safetensors").exists()
    assert (run_dir / "checkpoints" / "best" / "val_metrics.json").exists()  # selected on val
    assert {"config.yaml", "environment.json", "val_log.csv"} <= {p.name for p in run_dir.iterdir()}


def test_resume_reproduces_the_uninterrupted_run(run_config, tmp_path):
    straight = train(load_config(run_config, ["max_steps=8", "name=straight"]))
    interrupted = load_config(run_config, ["max_steps=8", "name=resumed"])
    train(interrupted, stop_after_steps=4)
    assert sorted(losses(tmp_path / "runs" / "resumed")) == [1, 2, 3, 4]
    resumed = train(interrupted, resume=True)
    expected, got = losses(straight), losses(resumed)
    assert sorted(got) == list(range(1, 9))
    for step in range(5, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_existing_run_is_not_overwritten(run_config):
    from rrsis_geo.errors import InputError

    train(load_config(run_config, ["max_steps=1"]))
    with pytest.raises(InputError, match="use --resume"):
        train(load_config(run_config, ["max_steps=1"]))


def test_torchrun_two_processes_on_cpu(run_config, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29517",
            "-m",
            "rrsis_geo",
            "train",
            str(run_config),
            "max_steps=3",
            "name=ddp",
            "batch_size=2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    assert sorted(losses(run_dir)) == [1, 2, 3]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints in (["last"], ["best", "last"])
    assert json.loads((run_dir / "environment.json").read_text())["world_size"] == 2


def test_eval_cli_prints_the_paper_table_with_its_protocol(run_config, tmp_path):
    run_dir = train(load_config(run_config, ["max_steps=2"]))
    root = tmp_path / "RISBench"
    out = tmp_path / "results.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "rrsis_geo",
            "eval",
            str(run_dir / "checkpoints" / "last"),
            str(root),
            "--split",
            "test",
            "--threshold-op",
            ">",
            "--json",
            str(out),
            "--csv",
            str(tmp_path / "results.csv"),
            "--predictions",
            str(tmp_path / "pred"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "Pr@0.5" in run.stdout and "oIoU" in run.stdout and "mIoU" in run.stdout
    assert ">" in run.stdout.splitlines()[1]  # the protocol line
    results = json.loads(out.read_text())
    assert results["count"] == 4
    assert len(list((tmp_path / "pred").iterdir())) == 4


def add_second_expressions(root):
    """Give each train image a second expression (a hard link, as synthetic chips do) whose
    referent is another object: the dark 8 x 8 corner."""
    phrases = root / "output_phrase_train.txt"
    lines = phrases.read_text().splitlines(keepends=True)
    for line in list(lines):
        name = line.split()[0]
        second = name.replace("_0.png", "_1.png")
        os.link(root / "img_rgb" / name, root / "img_rgb" / second)
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[:8, :8] = 255
        Image.fromarray(mask, mode="L").save(root / "mask" / second)
        lines.append(f"{second} the top left corner\n")
    phrases.write_text("".join(lines))


def test_image_groups_read_each_image_once_with_all_its_expressions(run_config):
    from rrsis_geo.data.readers import open_dataset
    from rrsis_geo.nn.encoders import load_tokenizer
    from rrsis_geo.training.dataset import ImageGroups, TrainingSamples, collate_groups
    from rrsis_geo.training.trainer import build_model_config

    config = load_config(run_config)
    add_second_expressions(Path(config.data.root))
    model_config = build_model_config(config)
    samples = open_dataset(config.data.root, "train", "risbench")
    items = TrainingSamples(samples, model_config, load_tokenizer(model_config.text), 0.25)
    groups = ImageGroups(items)
    assert len(samples) == 16 and len(items) == 20
    assert len(groups) == 8  # 8 images; the 4 negatives join the group of their image
    assert min(len(g) for g in groups.groups) >= 2
    assert sum(len(g) for g in groups.groups) == 20
    for image, text in items.negative_pairs:  # never an expression of the same image
        assert samples.records[image].image_path.stat().st_ino != (
            samples.records[text].image_path.stat().st_ino
        )
    for index, members in enumerate(groups.groups):
        item = groups[index]
        assert item["image"].shape == (1, 3, SIZE, SIZE)
        assert item["mask"].shape == (len(members), SIZE, SIZE)
        for row, member in enumerate(members):
            single = items[member]
            torch.testing.assert_close(item["image"][0], single["image"])
            torch.testing.assert_close(item["mask"][row], single["mask"])
            assert torch.equal(item["input_ids"][row], single["input_ids"])
            assert item["present"][row] == single["present"]
    batch = collate_groups([groups[0], groups[1]])
    sizes = [len(groups.groups[0]), len(groups.groups[1])]
    assert batch["image"].shape[0] == 2
    assert batch["image_index"].tolist() == [0] * sizes[0] + [1] * sizes[1]


def test_training_grouped_by_image_learns_and_counts_expressions(run_config):
    config = load_config(run_config, ["max_steps=30", "data.group_by_image=true", "batch_size=2"])
    add_second_expressions(Path(config.data.root))
    run_dir = train(config)
    values = [losses(run_dir)[step] for step in sorted(losses(run_dir))]
    assert len(values) == 30
    assert np.mean(values[-6:]) < 0.8 * np.mean(values[:6])
    state = json.loads((run_dir / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["samples_seen"] == 30 * 2 * 2  # 2 images of 2 expressions per step


def add_distractors(root):
    """A second bright square in the corner away from each referent: the mask finds both, so
    there is a choice (the referent is the one not in a corner)."""
    for path in (root / "img_rgb").glob("*.png"):
        image = np.array(Image.open(path))
        mask = np.array(Image.open(root / "mask" / path.name)) > 0
        rows, cols = np.nonzero(mask)
        top = 2 if rows.mean() > SIZE / 2 else SIZE - 18
        left = 2 if cols.mean() > SIZE / 2 else SIZE - 18
        image[top : top + 16, left : left + 16] = 230
        Image.fromarray(image).save(path)


def test_selection_loss_trains_the_selector_and_nothing_else(run_config):
    """Same seed, with and without the selection loss: only the selector differs."""
    from rrsis_geo.nn.crobim import CroBIM

    add_distractors(Path(load_config(run_config).data.root))
    models = {}
    for weight in (1.0, 0.0):
        config = load_config(
            run_config,
            [
                "max_steps=36",
                f"name=selection-{weight}",
                "model_overrides.object_selection=true",
                f"loss.selection={weight}",
                # Clipping scales every gradient by the global norm, which would couple them.
                "optim.clip_grad_norm=0",
            ],
        )
        run_dir = train(config)
        models[weight], _ = CroBIM.from_pretrained(run_dir / "checkpoints" / "last")
    with_loss, without = (dict(models[w].named_parameters()) for w in (1.0, 0.0))
    differing = {
        name.split(".")[0] for name in with_loss if not torch.equal(with_loss[name], without[name])
    }
    assert differing == {"selector"}


def make_square_pairs(root):
    """Two bright squares per image, a large and a small one apart, under one sentence.

    Each image comes three times with the same words: twice with both squares in the target,
    once with the large one alone. The mask cannot tell these apart, so it learns to find
    both squares; the one-square samples then have two candidates, and the one over the
    target (the selector's label) is the large square: a rule a fresh selector can learn from
    the candidates' sizes. The two-square targets are two objects (as "The ship." over every
    ship is), which teach no choice: the selection loss and the finishing fit leave them out.
    """
    rng = np.random.default_rng(1)
    for phrases in root.glob("output_phrase_*.txt"):
        lines = []
        names = [line.split()[0] for line in phrases.read_text().splitlines()]
        if phrases.name == "output_phrase_train.txt":
            names = [f"train_{index}_0.png" for index in range(24)]
        for number, name in enumerate(names):
            if number % 3 == 0:
                image = (rng.random((SIZE, SIZE, 3)) * 80).astype(np.uint8)
                large_left = bool(rng.integers(0, 2))
                tops = rng.integers(2, SIZE - 2 - 16, size=2)
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            for side, size, top in ((large_left, 16, tops[0]), (not large_left, 10, tops[1])):
                left = 2 if side else SIZE - 2 - size
                image[top : top + size, left : left + size] = 230
                if size == 16 or number % 3 < 2:
                    mask[top : top + size, left : left + size] = 255
            Image.fromarray(image).save(root / "img_rgb" / name)
            Image.fromarray(mask, mode="L").save(root / "mask" / name)
            lines.append(f"{name} the bright squares\n")
        phrases.write_text("".join(lines))


def test_selector_finish_refits_only_the_selector_on_the_finished_mask(run_config):
    """Same seed, with and without the finishing fit: only the selector differs, and the
    refitted one learnt the choice the finished mask's candidates ask for (the large square)."""
    from torch.utils.data import DataLoader

    from rrsis_geo.data.readers import open_dataset
    from rrsis_geo.nn.crobim import CroBIM
    from rrsis_geo.training.dataset import TrainingSamples, collate
    from rrsis_geo.training.selection import gather_selection_examples

    root = Path(load_config(run_config).data.root)
    make_square_pairs(root)
    models, run_dirs = {}, {}
    for images in (24, 0):
        config = load_config(
            run_config,
            [
                "max_steps=30",
                f"name=finish-{images}",
                "model_overrides.object_selection=true",
                "model_overrides.selection_ranks=true",
                "model_overrides.selection_geometry_weights=true",
                f"selector_finish.images={images}",
                "selector_finish.steps=60",
                "selector_finish.batch_size=8",
                "selector_finish.lr=3e-3",
            ],
        )
        run_dirs[images] = train(config)
        last = run_dirs[images] / "checkpoints" / "last"
        models[images], tokenizer = CroBIM.from_pretrained(last)
    finished, plain = (dict(models[n].named_parameters()) for n in (24, 0))
    differing = {
        name.split(".")[0] for name in finished if not torch.equal(finished[name], plain[name])
    }
    assert differing == {"selector"}
    facts = json.loads((run_dirs[24] / "selector_finish.json").read_text())
    assert facts["images"] == 24 and facts["steps"] == 60
    assert not (run_dirs[0] / "selector_finish.json").exists()
    state = json.loads((run_dirs[24] / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["selector_finished"] is True
    validated = {}
    for images in (24, 0):
        with open(run_dirs[images] / "val_log.csv") as handle:
            validated[images] = [row["step"] for row in csv.DictReader(handle)]
    assert validated[24] == [*validated[0], "30"]  # validated again after the fit

    model = models[24].eval()
    samples = TrainingSamples(open_dataset(root, "train", "risbench"), model.config, tokenizer)
    loader = DataLoader(samples, batch_size=4, collate_fn=collate)
    examples = gather_selection_examples(model, loader, torch.device("cpu"))
    assert facts["examples"] == len(examples) >= 4
    assert examples.inputs.appearance.dtype == torch.float16
    inputs = examples.inputs.map(lambda t: t.float() if t.is_floating_point() else t)
    with torch.no_grad():
        chosen = model.selector.scores(inputs).argmax(dim=1)
    assert (chosen == examples.referents).float().mean() >= 0.9


def test_a_run_in_passes_of_one_expression_follows_the_one_pass_run(
    run_config, tiny_text_folder, tmp_path
):
    """``expressions_per_pass`` changes how a step runs, not what it computes: the same
    losses to float rounding, and the finishing fit gathers the same examples. (The text
    encoder's dropout is off here: its masks are drawn per pass, so with it the two runs
    differ as two seeds would.)"""
    root = Path(load_config(run_config).data.root)
    add_distractors(root)  # two squares: a choice for the finishing fit to gather
    add_second_expressions(root)
    text_folder = tmp_path / "tiny-bert-no-dropout"
    shutil.copytree(tiny_text_folder, text_folder)
    text_config = json.loads((text_folder / "config.json").read_text())
    text_config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (text_folder / "config.json").write_text(json.dumps(text_config))
    runs = {}
    for per_pass in ("null", "1"):
        config = load_config(
            run_config,
            [
                "max_steps=8",
                "data.group_by_image=true",
                "batch_size=2",
                f"name=passes-{per_pass}",
                f"expressions_per_pass={per_pass}",
                f"model_overrides.text.name={text_folder}",
                "model_overrides.object_selection=true",
                "selector_finish.images=8",
                "selector_finish.steps=5",
            ],
        )
        runs[per_pass] = train(config)
    one, passes = losses(runs["null"]), losses(runs["1"])
    assert sorted(one) == sorted(passes) == list(range(1, 9))
    for step, loss in one.items():
        assert passes[step] == pytest.approx(loss, rel=1e-4, abs=1e-6)
    facts = [json.loads((runs[key] / "selector_finish.json").read_text()) for key in runs]
    assert facts[0]["images"] == facts[1]["images"] == 8
    assert facts[0]["examples"] == facts[1]["examples"] > 0
    assert facts[1]["final_loss"] == pytest.approx(facts[0]["final_loss"], rel=1e-4)
    saved = yaml.safe_load((runs["1"] / "config.yaml").read_text())
    assert saved["expressions_per_pass"] == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["expressions_per_pass=0"], "expressions_per_pass must be a positive integer, got 0"),
        (["expressions_per_pass=2", "model=lgce-tiny"], "a setting of crobim models, not lgce"),
    ],
)
def test_expressions_per_pass_is_checked_before_a_run(run_config, overrides, message):
    from rrsis_geo.errors import InputError

    with pytest.raises(InputError, match=message):
        train(load_config(run_config, overrides))
