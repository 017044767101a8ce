"""RSRefSeg 2 (tiny random SigLIP + SAM 2.1): shapes, padding, gradients, LoRA, checkpoints."""

import json

import pytest
import torch
from torch import nn

from rrsis_geo.errors import InputError
from rrsis_geo.nn.encoders import load_tokenizer
from rrsis_geo.nn.rsrefseg2 import (
    NAMED_CONFIGS,
    RSRefSeg2,
    RSRefSeg2Config,
    apply_lora,
    merge_lora,
    named_config,
    prepare_image,
    rsrefseg2_loss,
)

SIZE = 128
SENTENCES = ("the white storage tank at the top left", "a ship")


def reinitialised(model):
    """PyTorch's default initialisation instead of transformers' (std 0.02).

    With transformers' small weights SAM's logits start near 1e-4, where a 1e-5 tolerance
    would prove nothing; the default initialisation gives logits of order one.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    return model


@pytest.fixture(scope="module")
def config():
    return named_config("rsrefseg2-tiny")


@pytest.fixture(scope="module")
def tokenizer(config):
    return load_tokenizer(config.text)


def tiny_model(config, seed=0):
    torch.manual_seed(seed)
    return reinitialised(RSRefSeg2(config))


def tokens(tokenizer, length, sentences=SENTENCES):
    encoded = tokenizer(
        list(sentences), padding="max_length", max_length=length, return_tensors="pt"
    )
    return encoded["input_ids"], encoded["attention_mask"]


def images(batch=2):
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def target_masks(batch=2):
    masks = torch.zeros(batch, SIZE, SIZE)
    masks[0, : SIZE // 2] = 1
    masks[1, :, : SIZE // 3] = 1
    return masks


def test_forward_gives_full_size_logits_and_no_presence(config, tokenizer):
    model = tiny_model(config).eval()
    with torch.no_grad():
        output = model(images(), *tokens(tokenizer, 12))
    assert output.mask_logits.shape == (2, SIZE, SIZE)
    assert torch.isfinite(output.mask_logits).all()
    assert output.mask_logits.std() > 0.01  # a real signal for the tolerances below
    assert output.presence_logits is None


def test_padding_words_change_nothing(config, tokenizer):
    model = tiny_model(config).eval()
    short_ids, short_mask = tokens(tokenizer, 12)
    long_ids, long_mask = tokens(tokenizer, 30)
    # Padding carries arbitrary words: only the mask may keep them out.
    padding = long_mask == 0
    long_ids[padding] = torch.randint(1000, 20000, (int(padding.sum()),))
    with torch.no_grad():
        short = model(images(), short_ids, short_mask).mask_logits
        long = model(images(), long_ids, long_mask).mask_logits
    torch.testing.assert_close(long, short, atol=1e-5, rtol=0)


def _backward(model, tokenizer):
    model.zero_grad()
    output = model(images(), *tokens(tokenizer, 12))
    losses = rsrefseg2_loss(
        output, target_masks(), model.contrastive_logit_scale, model.contrastive_logit_bias
    )
    losses["loss"].backward()
    return losses


def _without_gradient(model):
    return sorted(
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and (parameter.grad is None or not parameter.grad.any())
    )


def test_every_trainable_parameter_learns(config, tokenizer):
    model = tiny_model(config).train()
    losses = _backward(model, tokenizer)
    assert set(losses) == {"bce", "dice", "queries_apart", "contrastive", "loss"}
    assert _without_gradient(model) == []
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    # Only what the path never reaches is frozen: point prompts, IoU / object heads, multimask.
    assert "sam.prompt_encoder.point_embed.weight" in frozen
    assert "sam.mask_decoder.iou_prediction_head.proj_in.weight" in frozen
    assert not any(name.startswith(("prompter.", "siglip.")) for name in frozen)


def test_lora_trains_only_adapters_and_the_free_parts(config, tokenizer):
    model = apply_lora(tiny_model(config)).train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    wrapped = ("sam.vision_encoder.", "siglip.vision_model.", "siglip.text_model.")
    assert {n for n in trainable if n.startswith(wrapped)} == {
        n for n in trainable if ".lora_" in n
    }
    assert any(".attn.qkv.lora_A." in n for n in trainable)
    assert any("neck.convs.0.lora_B." in n for n in trainable)
    assert any("text_model.head.lora_A." in n for n in trainable)
    assert "sam.mask_decoder.transformer.layers.0.self_attn.q_proj.weight" in trainable
    assert "siglip.logit_scale" in trainable and "prompter.img_pe" in trainable
    # lora_B starts at zero, so lora_A learns from the second step on (as LGCE's gates).
    _backward(model, tokenizer)
    assert all(".lora_A." in name for name in _without_gradient(model))
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    _backward(model, tokenizer)
    assert _without_gradient(model) == []


def test_lora_merge_reproduces_the_adapted_model(config, tokenizer, tmp_path):
    model = apply_lora(tiny_model(config)).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name:  # lora_B starts at 0: give the adapters something to add
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
        adapted = model(images(), *tokens(tokenizer, 12)).mask_logits
    plain = RSRefSeg2(config, pretrained=False).eval()
    plain.load_state_dict(merge_lora(model.state_dict(), alpha=16, r=16), strict=True)
    with torch.no_grad():
        merged = plain(images(), *tokens(tokenizer, 12)).mask_logits
    assert (merged - adapted).abs().max() < 1e-5
    assert (adapted - reinitialised_baseline(config, tokenizer)).abs().max() > 1e-3

    # save_pretrained merges too: the checkpoint loads as a plain model with the same output.
    model.save_pretrained(tmp_path / "ckpt", tokenizer=tokenizer)
    loaded, _ = RSRefSeg2.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        again = loaded(images(), *tokens(tokenizer, 12)).mask_logits
    torch.testing.assert_close(again, adapted, atol=1e-5, rtol=0)


def reinitialised_baseline(config, tokenizer):
    with torch.no_grad():
        return tiny_model(config).eval()(images(), *tokens(tokenizer, 12)).mask_logits


def test_merge_lora_handles_convolutions_and_names_strays():
    weight, down, up = torch.randn(6, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.randn(6, 2, 1, 1)
    conv = nn.Conv2d(4, 6, 3)
    conv.weight.data = weight.clone()
    merged = merge_lora(
        {
            "m.base_model.model.c.base_layer.weight": weight,
            "m.base_model.model.c.base_layer.bias": conv.bias.data,
            "m.base_model.model.c.lora_A.default.weight": down,
            "m.base_model.model.c.lora_B.default.weight": up,
        },
        alpha=8,
        r=2,
    )
    assert set(merged) == {"m.c.weight", "m.c.bias"}
    x = torch.randn(1, 4, 7, 7)
    expected = conv(x) + 4 * nn.functional.conv2d(nn.functional.conv2d(x, down), up)
    torch.testing.assert_close(nn.functional.conv2d(x, merged["m.c.weight"], conv.bias), expected)
    with pytest.raises(ValueError, match=r"x\.lora_A\.default\.weight"):
        merge_lora({"x.lora_A.default.weight": down}, alpha=1, r=1)


def test_checkpoint_round_trip_and_missing_key(config, tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_model(config).eval()
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    loaded, _ = RSRefSeg2.from_pretrained(tmp_path)
    assert loaded.config == config
    with torch.no_grad():
        expected = model(images(), *tokens(tokenizer, 12)).mask_logits
        torch.testing.assert_close(loaded(images(), *tokens(tokenizer, 12)).mask_logits, expected)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["prompter.img_pe"]
    save_file(state, str(tmp_path / "model.safetensors"))
    document = json.loads((tmp_path / "config.json").read_text())
    document["weights"]["sha256"] = None
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"missing prompter\.img_pe"):
        RSRefSeg2.from_pretrained(tmp_path)


def test_configs_round_trip_and_summary():
    for name in NAMED_CONFIGS:
        config = named_config(name)
        assert RSRefSeg2Config.from_dict(config.to_dict()) == config
    paper = named_config("rsrefseg2-so400m-large")
    assert (paper.sam.source, paper.siglip.source) == (
        "facebook/sam2.1-hiera-large",
        "google/siglip2-so400m-patch16-512",
    )
    assert paper.input_size == 1024 and paper.prompter.num_prompts == 9
    assert RSRefSeg2.summary(paper)["tile_size"] == 1024
    with pytest.raises(ValueError, match="bogus"):
        RSRefSeg2Config.from_dict({"bogus": 1})


def test_prepare_image_resizes_the_long_side_and_pads():
    image = torch.rand(3, 300, 600)
    padded, size = prepare_image(image, long_side=1024)
    assert padded.shape == (3, 1024, 1024) and size == (512, 1024)
    assert padded[:, 512:].abs().sum() == 0  # bottom padding, as the authors' preprocessor
