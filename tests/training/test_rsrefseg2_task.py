"""RSRefSeg 2 training: LoRA on the towers, merged checkpoints and an exact resume."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rrsis_geo.models.registry import from_pretrained
from rrsis_geo.training.config import load_config
from rrsis_geo.training.tasks import task_for
from rrsis_geo.training.trainer import STATE_FILE, train
from tests.training.test_trainer import losses, write_learnable_risbench


@pytest.fixture
def lora_config(tmp_path):
    values = {
        "name": "lora",
        "output_dir": str(tmp_path / "runs"),
        "model": "rsrefseg2-tiny",
        "data": {"root": str(write_learnable_risbench(tmp_path)), "layout": "risbench"},
        "optim": {"lr_encoder": 1e-3, "lr_new": 1e-3, "warmup_steps": 1},
        "batch_size": 4,
        "log_every": 1,
        "checkpoint_every": 2,
        "eval_every": 0,
        "amp": "none",
    }
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_lora_trains_adapters_not_the_towers_and_checkpoints_merge(lora_config, tmp_path):
    config = load_config(lora_config, ["max_steps=2"])
    task = task_for(config)
    torch.manual_seed(config.seed)
    untrained = task.build(task.model_config(config)).state_dict()
    run_dir = train(config)

    last = run_dir / "checkpoints" / "last"
    training = torch.load(last / STATE_FILE, weights_only=True)["model"]
    tower_bases = [k for k in training if k.endswith(".base_layer.weight")]
    assert any(k.startswith("sam.vision_encoder.") for k in tower_bases)
    assert any(k.startswith("siglip.text_model.") for k in tower_bases)
    for key in tower_bases:  # frozen under LoRA
        assert torch.equal(training[key], untrained[key]), key
    assert any(training[k].abs().sum() > 0 for k in training if ".lora_B." in k)
    assert not torch.equal(
        training["prompter.prompt_embedding"], untrained["prompter.prompt_embedding"]
    )

    merged = load_file(str(last / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in merged)
    loaded = from_pretrained(last)  # strict: every key of the merged model is there
    assert loaded.architecture.name == "rsrefseg2"


def test_lora_run_resumes_exactly(lora_config):
    straight = train(load_config(lora_config, ["max_steps=4", "name=straight"]))
    interrupted = load_config(lora_config, ["max_steps=4", "name=resumed"])
    train(interrupted, stop_after_steps=2)
    resumed = train(interrupted, resume=True)
    expected, got = losses(straight), losses(resumed)
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_model_overrides_set_keys_of_a_section_and_name_unknown_ones():
    from rrsis_geo.errors import InputError
    from rrsis_geo.training.config import TrainConfig
    from rrsis_geo.training.tasks import overridden_config

    def resolved(overrides):
        return overridden_config(
            TrainConfig.from_dict({"model": "rsrefseg2-tiny", "model_overrides": overrides})
        )

    config = resolved({"siglip": {"max_tokens": 8}, "loss": {"dice": 2.0}, "lora_r": 4})
    assert config.siglip.max_tokens == 8 and config.siglip.tokenizer  # the rest kept
    assert (config.loss.dice, config.loss.bce, config.lora_r) == (2.0, 5.0, 4)
    for unknown in ({"text": {"max_tokens": 8}}, {"colour": "red"}):
        with pytest.raises(
            InputError, match=f"unknown RSRefSeg 2 config keys: {next(iter(unknown))}"
        ):
            resolved(unknown)
