"""save_pretrained / from_pretrained: identical logits, strict and verified loading."""

import json

import pytest
import torch

from rrsis_geo.errors import InputError
from rrsis_geo.models.registry import describe
from rrsis_geo.nn.crobim import CroBIM
from rrsis_geo.nn.encoders import load_tokenizer


@pytest.fixture
def saved(tiny_config, tmp_path):
    model = CroBIM(tiny_config).eval()
    folder = model.save_pretrained(tmp_path / "ckpt", load_tokenizer(tiny_config.text))
    return model, folder


def _logits(model, tokenizer):
    encoded = tokenizer(
        ["the white plane at the top"], padding="max_length", max_length=12, return_tensors="pt"
    )
    torch.manual_seed(3)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(
            images, encoded["input_ids"].expand(2, -1), encoded["attention_mask"].expand(2, -1)
        )
    return out.mask_logits, out.presence_logits


def test_round_trip_gives_identical_logits(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer",
    ]
    loaded, tokenizer = CroBIM.from_pretrained(folder)
    for before, after in zip(_logits(model, tokenizer), _logits(loaded, tokenizer), strict=True):
        assert torch.equal(before, after)


def test_loaded_weights_own_aligned_storage(saved):
    # safetensors' views sit at the file's offsets; kept as they are, some CPUs run other SIMD
    # paths on them and the round trip above differs in the last bits (seen on AMD EPYC).
    _, folder = saved
    loaded, _ = CroBIM.from_pretrained(folder)
    assert [k for k, v in loaded.state_dict().items() if v.data_ptr() % 64] == []


def test_config_declares_what_inference_needs(saved):
    _, folder = saved
    info = describe(str(folder))
    assert info["kind"] == "checkpoint"
    assert info["weights"]["sha256_ok"] is True
    metadata = info["metadata"]
    assert metadata["tile_size"] == 64 and metadata["threshold"] == 0.5
    assert tuple(metadata["normalization"]["mean"]) == (0.485, 0.456, 0.406)
    assert {"bands", "gsd", "max_tokens", "tokenizer"} <= set(metadata)


def test_corrupted_weights_fail_on_the_pinned_sha256(saved):
    _, folder = saved
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match the sha256"):
        CroBIM.from_pretrained(folder)


def test_truncated_weights_without_a_pin_fail_clearly(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["weights"].pop("sha256")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:100])
    with pytest.raises(InputError, match="not readable safetensors"):
        CroBIM.from_pretrained(folder)


def test_mismatched_architecture_names_the_keys(saved, tiny_config, tmp_path):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["config"]["mid_layers"] = 3  # the weights have 2 MID layers
    config["weights"].pop("sha256")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"missing mid\.layers\.2\."):
        CroBIM.from_pretrained(folder)


def test_shape_mismatch_is_named(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["config"]["num_prompts"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"capm\.prompts"):
        CroBIM.from_pretrained(folder)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(InputError, match="not a checkpoint"):
        CroBIM.from_pretrained(tmp_path)


def test_text_encoder_can_stay_in_its_package(tmp_path):
    from rrsis_geo.nn.config import CroBIMConfig, VisionEncoderConfig

    config = CroBIMConfig(
        vision=VisionEncoderConfig(name="test_resnet", out_indices=(1, 2, 3, 4), weights=None),
        dim=32,
        num_heads=4,
        mid_layers=1,
        input_size=64,
    )
    model = CroBIM(config).eval()
    folder = model.save_pretrained(tmp_path / "ckpt", include_text_encoder=False)
    size = (folder / "model.safetensors").stat().st_size
    assert size < 20e6  # MiniLM (90 MB in float32) is not stored
    loaded, tokenizer = CroBIM.from_pretrained(folder)
    for before, after in zip(_logits(model, tokenizer), _logits(loaded, tokenizer), strict=True):
        assert torch.equal(before, after)


def test_predictor_runs_the_plain_text_pass_once_per_expression(saved):
    import numpy as np

    from rrsis_geo.inference.predictor import CroBIMPredictor

    _, folder = saved
    predictor = CroBIMPredictor.from_pretrained(folder, device="cpu")
    calls = []
    predictor.model.text.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    encoded = predictor.encode_expression("the largest storage tank")
    assert len(calls) == 1  # the plain pass
    for _ in range(4):
        prediction = predictor.predict(np.zeros((2, 3, 64, 64), np.float32), encoded)
    assert prediction.probabilities.shape == (2, 64, 64)
    assert prediction.presence.shape == (2,)
    # one prompted pass per batch (CAPM needs each tile's context), no other plain pass
    assert len(calls) == 1 + 4
    assert all(shape[1] == 12 + 3 for shape in calls[1:])
    assert predictor.metadata.sha256 and predictor.metadata.tile_size == 64


def test_paper_config_builds_offline_with_a_clear_warning():
    import os
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from rrsis_geo.nn import CroBIM\n"
        "m = CroBIM.from_config('crobim-swinb')\n"
        "print(sum(p.numel() for p in m.parameters()))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "RandomInitWarning: vision encoder swin_base_patch4_window12_384" in run.stderr
    assert "RandomInitWarning: text encoder google-bert/bert-base-uncased" in run.stderr
    assert int(run.stdout) > 200_000_000


def test_export_halves_the_weights_and_keeps_the_logits(saved, tmp_path):
    from rrsis_geo.models.registry import export_checkpoint

    model, folder = saved
    # The tiny text encoder is trainable (fine-tuned), so export keeps it by default and
    # refuses to leave it out.
    with pytest.raises(InputError, match="fine-tuned"):
        export_checkpoint(folder, tmp_path / "no-text", include_text_encoder=False)
    assert not (tmp_path / "no-text").exists()
    out = export_checkpoint(folder, tmp_path / "half")
    document = json.loads((out / "config.json").read_text())
    assert document["weights"]["dtype"] == "float16"
    assert document["weights"]["text_encoder"] == "included"
    full, half = (p / "model.safetensors" for p in (folder, out))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, tokenizer = CroBIM.from_pretrained(out)
    expected, got = _logits(model, tokenizer), _logits(loaded, tokenizer)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
    with pytest.raises(InputError, match="use --overwrite"):
        export_checkpoint(folder, out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
