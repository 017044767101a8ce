"""LGCE (the RefSegRS baseline): shapes, padding invariance, gradient flow, checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from rrsis_geo.errors import InputError
from rrsis_geo.nn.config import TextEncoderConfig
from rrsis_geo.nn.encoders import load_tokenizer
from rrsis_geo.nn.family import joined_config
from rrsis_geo.nn.lgce import LGCE, LanguageGate
from rrsis_geo.nn.lgce_config import NAMED_CONFIGS, LGCEConfig, SwinConfig

SIZE = 64
SENTENCE = "the white storage tank at the top left"


@pytest.fixture
def tiny_lgce_config(tiny_text_folder):
    """A 1-block-per-stage Swin (16 channels at stride 4) and the 2-layer random BERT."""
    torch.manual_seed(0)
    return LGCEConfig(
        name="lgce-test",
        vision=SwinConfig(
            name="swin_tiny_patch4_window7_224",
            weights=None,
            kwargs={
                "img_size": SIZE,
                "embed_dim": 16,
                "depths": (1, 1, 1, 1),
                "num_heads": (1, 1, 1, 1),
                "window_size": 4,
                # Stochastic depth would make the gradient test depend on the dice.
                "drop_path_rate": 0.0,
            },
        ),
        text=TextEncoderConfig(name=str(tiny_text_folder), max_tokens=12, weights="random"),
        fusion_heads=(1, 2, 2, 4),
        input_size=SIZE,
    )


@pytest.fixture
def tokenizer(tiny_lgce_config):
    return load_tokenizer(tiny_lgce_config.text)


def _tokens(tokenizer, length, sentences=(SENTENCE, "a ship")):
    encoded = tokenizer(
        list(sentences), padding="max_length", max_length=length, return_tensors="pt"
    )
    return encoded["input_ids"], encoded["attention_mask"]


def _images(batch=2):
    generator = torch.Generator().manual_seed(3)
    return torch.randn(batch, 3, SIZE, SIZE, generator=generator)


def test_forward_gives_full_size_logits_and_no_presence(tiny_lgce_config, tokenizer):
    model = LGCE(tiny_lgce_config).eval()
    with torch.no_grad():
        output = model(_images(), *_tokens(tokenizer, 12))
    assert output.mask_logits.shape == (2, SIZE, SIZE)
    assert torch.isfinite(output.mask_logits).all()
    assert output.presence_logits is None


def test_padding_words_change_nothing(tiny_lgce_config, tokenizer):
    # Batch norm in train mode normalises with the batch's statistics; at initialisation its
    # running ones (0, 1) would let the random convs shrink whatever comes from the coarse
    # levels (the sentence's way in) below the tolerance. BERT stays in eval mode (dropout).
    model = LGCE(tiny_lgce_config).train()
    model.text.eval()
    short_ids, short_mask = _tokens(tokenizer, 12)
    long_ids, long_mask = _tokens(tokenizer, 30)
    # Padding carries arbitrary words: only the mask may keep them out of PWAM and pooling.
    padding = long_mask == 0
    long_ids[padding] = torch.randint(1000, 20000, (int(padding.sum()),))
    images = _images()
    with torch.no_grad():
        short = model(images, short_ids, short_mask).mask_logits
        long = model(images, long_ids, long_mask).mask_logits
    torch.testing.assert_close(long, short, atol=1e-5, rtol=0)


def _backward(model, tokenizer):
    model.zero_grad()
    logits = model(_images(), *_tokens(tokenizer, 12)).mask_logits
    target = (torch.arange(SIZE)[None, :, None] < SIZE // 2).float().expand_as(logits)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()


def _without_gradient(model):
    return {
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and (parameter.grad is None or not parameter.grad.any())
    }


def test_every_parameter_learns(tiny_lgce_config, tokenizer):
    model = LGCE(tiny_lgce_config).train()
    _backward(model, tokenizer)
    # The gates start closed (their output layer at 0): on the first step only that layer
    # learns; the layer before it gets gradient once the output layer has moved.
    first_hidden = {f"gates.{i}.hidden.weight" for i in range(3)}
    assert _without_gradient(model) == first_hidden
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    _backward(model, tokenizer)
    assert _without_gradient(model) == set()


def test_lavt_double_zero_gate_would_never_learn():
    """Why only the gate's output layer starts at 0 (LAVT zeroes both)."""
    gate = LanguageGate(8)
    torch.nn.init.zeros_(gate.hidden.weight)
    fused = torch.randn(2, 5, 8)
    (gate(fused) * fused).sum().backward()
    assert not gate.hidden.weight.grad.any() and not gate.out.weight.grad.any()


def test_round_trip_gives_identical_logits(tiny_lgce_config, tokenizer, tmp_path):
    model = LGCE(tiny_lgce_config).eval()
    folder = model.save_pretrained(tmp_path / "ckpt", tokenizer)
    document = json.loads((folder / "config.json").read_text())
    assert document["architecture"] == "lgce"
    assert joined_config(LGCE.config_class, document) == tiny_lgce_config
    assert document["pretrained"]["tile_size"] == SIZE and "input_size" not in document["config"]
    loaded, loaded_tokenizer = LGCE.from_pretrained(folder)
    inputs = (_images(), *_tokens(loaded_tokenizer, 12))
    with torch.no_grad():
        assert torch.equal(model(*inputs).mask_logits, loaded(*inputs).mask_logits)


def test_a_missing_key_is_named(tiny_lgce_config, tokenizer, tmp_path):
    folder = LGCE(tiny_lgce_config).save_pretrained(tmp_path / "ckpt", tokenizer)
    state = load_file(folder / "model.safetensors")
    del state["enhancement.sentence_weights.weight"]
    save_file(state, folder / "model.safetensors")
    document = json.loads((folder / "config.json").read_text())
    del document["weights"]["sha256"]  # a pinned hash would fail first
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"missing enhancement\.sentence_weights\.weight"):
        LGCE.from_pretrained(folder)


@pytest.mark.parametrize("name", sorted(NAMED_CONFIGS))
def test_named_configs_survive_json(name):
    config = NAMED_CONFIGS[name]()
    again = LGCE.config_class.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    summary = LGCE.summary(config)
    assert summary["tile_size"] == config.input_size and summary["max_tokens"] == 20
    assert config.metadata().tile_size == config.input_size
