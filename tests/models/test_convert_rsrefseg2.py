"""Importing the RSRefSeg 2 authors' checkpoint: a synthetic file with the released layout."""

import dataclasses
import re

import pytest
import torch

from rrsis_geo.errors import InputError
from rrsis_geo.models.convert_rsrefseg2 import convert_rsrefseg2
from rrsis_geo.nn.encoders import load_tokenizer
from rrsis_geo.nn.rsrefseg2 import RSRefSeg2, apply_lora, merge_lora, named_config
from tests.nn.test_rsrefseg2 import reinitialised

SIZE = 128

# Our name -> the authors' (mmseg model with PEFT-wrapped towers, original sam2 package names).
TOWERS = (
    ("sam.vision_encoder.backbone.", "backbone.model.image_encoder.base_model.model.trunk."),
    ("sam.vision_encoder.neck.", "backbone.model.image_encoder.base_model.model.neck."),
    ("sam.prompt_encoder.", "backbone.model.sam_prompt_encoder."),
    ("sam.mask_decoder.", "backbone.model.sam_mask_decoder."),
    ("siglip.vision_model.", "clip_vision_encoder.base_model.model.model."),
    ("siglip.text_model.", "clip_text_encoder.base_model.model.model."),
    ("siglip.logit_", "clip_text_encoder.base_model.model.logit_"),
    ("sam.no_memory_embedding", "backbone.model.no_mem_embed"),
    ("contrastive_logit_", "decode_head.logit_"),
)
SAM_NAMES = (
    (r"\.layer_norm(\d)\.", r".norm\1."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"\.o_proj\.", ".out_proj."),
    (r"patch_embed\.projection\.", "patch_embed.proj."),
    (r"neck\.convs\.(\d+)\.", r"neck.convs.\1.conv."),
    (r"upscale_conv1\.", "output_upscaling.0."),
    (r"upscale_layer_norm\.", "output_upscaling.1."),
    (r"upscale_conv2\.", "output_upscaling.3."),
    (r"mask_embed\.conv1\.", "mask_downscaling.0."),
    (r"mask_embed\.layer_norm1\.", "mask_downscaling.1."),
    (r"mask_embed\.conv2\.", "mask_downscaling.3."),
    (r"mask_embed\.layer_norm2\.", "mask_downscaling.4."),
    (r"mask_embed\.conv3\.", "mask_downscaling.6."),
    # 3-layer MLPs (hypernetworks, IoU and object-score heads): the middle layer first.
    (r"\.layers\.0\.(weight|bias)$", r".layers.1.\1"),
    (r"\.mlp\.proj_in\.", ".mlp.layers.0."),
    (r"\.mlp\.proj_out\.", ".mlp.layers.1."),
    (r"\.proj_in\.", ".layers.0."),
    (r"\.proj_out\.", ".layers.2."),
)


def authors_name(key):
    for ours, theirs in TOWERS:
        if key.startswith(ours):
            key = theirs + key[len(ours) :]
            break
    if key.startswith("backbone."):
        for pattern, replacement in SAM_NAMES:
            key = re.sub(pattern, replacement, key)
    if key.startswith("decode_head.logit_"):
        key += "2"
    return key


def authors_state(state):
    """The released layout of our (LoRA-adapted) state dict."""
    released = {}
    for key, value in state.items():
        if key == "sam.shared_image_embedding.positional_embedding":
            continue  # one matrix in SAM 2 (pe_layer), twice in transformers
        if key == "sam.prompt_encoder.shared_embedding.positional_embedding":
            released[
                "backbone.model.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
            ] = value
        elif key == "sam.prompt_encoder.point_embed.weight":
            for index, row in enumerate(value):
                released[f"backbone.model.sam_prompt_encoder.point_embeddings.{index}.weight"] = (
                    row[None]
                )
        else:
            released[authors_name(key)] = value
    # Parts of the released model our build leaves out: the vision pooling head (LoRA'd by
    # the authors), the per-image loss's scale and bias.
    head = "clip_vision_encoder.base_model.model.model.head."
    released[head + "probe"] = torch.randn(1, 1, 32)
    released[head + "attention.out_proj.base_layer.weight"] = torch.randn(32, 32)
    released[head + "attention.out_proj.lora_A.default.weight"] = torch.randn(16, 32)
    released[head + "attention.out_proj.lora_B.default.weight"] = torch.randn(32, 16)
    released["decode_head.logit_scale1"] = torch.tensor(2.0)
    released["decode_head.logit_bias1"] = torch.tensor(0.0)
    return released


def tie_positions(model):
    """SAM 2 has one position matrix; transformers' random init draws two: make them one."""
    with torch.no_grad():
        model.sam.shared_image_embedding.positional_embedding.copy_(
            model.sam.prompt_encoder.shared_embedding.positional_embedding
        )
    return model


def random_adapters(model):
    """Non-zero LoRA adapters (peft starts B at zero), so that merging them changes weights."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name:
                parameter.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def config():
    return named_config("rsrefseg2-tiny")


@pytest.fixture(scope="module")
def tokenizer(config):
    return load_tokenizer(config.text)


@pytest.fixture(scope="module")
def adapted(config):
    """A LoRA-adapted tiny model with non-zero adapters, and its merged plain twin."""
    torch.manual_seed(0)
    # PyTorch's default initialisation: logits of order one, where 1e-5 means something.
    model = apply_lora(tie_positions(reinitialised(RSRefSeg2(config)))).eval()
    random_adapters(model)
    plain = RSRefSeg2(config, pretrained=False).eval()
    plain.load_state_dict(merge_lora(model.state_dict(), 16, 16), strict=True)
    return model, plain


def _inputs(tokenizer):
    encoded = tokenizer(
        ["a ship", "the large tank"], padding="max_length", max_length=10, return_tensors="pt"
    )
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return images, encoded["input_ids"], encoded["attention_mask"]


def test_released_layout_is_what_we_assume(adapted):
    released = authors_state(adapted[0].state_dict())
    for key in (
        "backbone.model.image_encoder.base_model.model.trunk.blocks.0.attn.qkv.base_layer.weight",
        "backbone.model.image_encoder.base_model.model.trunk.blocks.0.attn.qkv.lora_A.default.weight",
        "backbone.model.image_encoder.base_model.model.neck.convs.0.conv.lora_B.default.weight",
        "backbone.model.image_encoder.base_model.model.trunk.blocks.0.mlp.layers.1.weight",
        "backbone.model.sam_mask_decoder.transformer.layers.0.self_attn.out_proj.weight",
        "backbone.model.sam_mask_decoder.output_hypernetworks_mlps.0.layers.2.weight",
        "backbone.model.sam_mask_decoder.output_upscaling.1.weight",
        "backbone.model.sam_prompt_encoder.mask_downscaling.6.weight",
        "backbone.model.no_mem_embed",
        "clip_vision_encoder.base_model.model.model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight",
        "clip_text_encoder.base_model.model.model.head.base_layer.weight",
        "clip_text_encoder.base_model.model.logit_scale",
        "prompter.two_queries_text_attn_layers.0.cross_attn_query_text_query1_text.q_proj.weight",
        "prompter.prompt_queries2_img_attn_layers.1.mlp_prompt_3.layers.1.bias",
        "decode_head.logit_scale2",
    ):
        assert key in released, key


@pytest.mark.parametrize("wrapper", ["state_dict", "module"])
def test_converts_and_loads_strictly_with_the_same_output(
    adapted, config, tokenizer, tmp_path, wrapper
):
    model, plain = adapted
    source = tmp_path / "rrsisd.pth"
    torch.save({wrapper: authors_state(model.state_dict()), "meta": {"epoch": 1}}, source)
    folder = convert_rsrefseg2(
        source, tmp_path / "ours", trust_pickle=True, config=config, tokenizer=tokenizer
    )
    loaded, _ = RSRefSeg2.from_pretrained(folder)
    with torch.no_grad():
        expected = model(*_inputs(tokenizer)).mask_logits
        assert expected.std() > 0.01
        torch.testing.assert_close(
            plain(*_inputs(tokenizer)).mask_logits, expected, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            loaded(*_inputs(tokenizer)).mask_logits, expected, atol=1e-5, rtol=0
        )
    assert loaded.config.sam.source == config.sam.source  # base weights' origin recorded


def test_renamed_or_missing_keys_are_named(adapted, config, tokenizer, tmp_path):
    released = authors_state(adapted[0].state_dict())
    renamed = dict(released)
    renamed["prompter.img_pe_renamed"] = renamed.pop("prompter.img_pe")
    torch.save({"state_dict": renamed}, tmp_path / "renamed.pth")
    with pytest.raises(
        InputError, match=r"missing prompter\.img_pe; unexpected prompter\.img_pe_renamed"
    ):
        convert_rsrefseg2(tmp_path / "renamed.pth", tmp_path / "a", True, config, tokenizer)
    stray = dict(released)
    stray["auxiliary_head.conv.weight"] = torch.zeros(1)
    torch.save({"state_dict": stray}, tmp_path / "stray.pth")
    with pytest.raises(InputError, match=r"auxiliary_head\.conv\.weight"):
        convert_rsrefseg2(tmp_path / "stray.pth", tmp_path / "b", True, config, tokenizer)


def test_refuses_a_pickle_without_consent(tmp_path):
    source = tmp_path / "rrsisd.pth"
    torch.save({"state_dict": {}}, source)
    with pytest.raises(InputError) as raised:
        convert_rsrefseg2(source, tmp_path / "out", trust_pickle=False)
    assert "the source is a pickle" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_rrsis_models_convert_then_segment_through_the_cli(tmp_path):
    from tests.cli_run import rrsis
    from tests.rasters import textured, write_raster

    torch.manual_seed(0)
    model = RSRefSeg2(named_config("rsrefseg2-tiny"), pretrained=False)
    source = tmp_path / "rrsisd.pth"
    torch.save({"state_dict": authors_state(model.state_dict())}, source)
    target = tmp_path / "converted"
    command = ("models", "convert", source, target, "--from", "rsrefseg2",
               "--config", "rsrefseg2-tiny")  # fmt: skip
    refused = rrsis(*command)
    assert refused.returncode == 1 and "the source is a pickle" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not target.exists()
    converted = rrsis(*command, "--trust-pickle")
    assert converted.returncode == 0, converted.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted", "rrsisd.pth"]
    info = rrsis("models", "info", target)
    assert info.returncode == 0 and '"architecture": "rsrefseg2"' in info.stdout

    scene = write_raster(tmp_path / "scene.tif", textured(3, 150, 130, seed=1))
    out = tmp_path / "out.tif"
    segmented = rrsis("segment", scene, "the bright field", "-m", target, "-o", out)
    assert segmented.returncode == 0, segmented.stderr
    assert out.exists()


def test_a_file_without_the_frozen_tower_weights_is_completed_from_their_sources(
    config, tokenizer, tmp_path
):
    torch.manual_seed(3)
    model = reinitialised(RSRefSeg2(config)).eval()
    tie_positions(model)
    # The base models as their hub ids would give them, here local folders.
    model.sam.save_pretrained(tmp_path / "sam2.1")
    model.siglip.save_pretrained(tmp_path / "siglip2")
    sourced = dataclasses.replace(
        config,
        sam=dataclasses.replace(config.sam, source=str(tmp_path / "sam2.1")),
        siglip=dataclasses.replace(config.siglip, source=str(tmp_path / "siglip2")),
    )
    apply_lora(model)
    random_adapters(model)
    released = authors_state(model.state_dict())
    frozen = [
        key
        for key in released
        if key.startswith(("backbone.model.image_encoder.", "clip_")) and ".lora_" not in key
    ]
    assert any(key.endswith("attn.qkv.base_layer.weight") for key in frozen)
    torch.save(
        {"state_dict": {k: v for k, v in released.items() if k not in frozen}}, tmp_path / "a.pth"
    )

    folder = convert_rsrefseg2(tmp_path / "a.pth", tmp_path / "ours", True, sourced, tokenizer)
    loaded, _ = RSRefSeg2.from_pretrained(folder)
    with torch.no_grad():
        expected = model(*_inputs(tokenizer)).mask_logits
        assert expected.std() > 0.01
        torch.testing.assert_close(
            loaded(*_inputs(tokenizer)).mask_logits, expected, atol=1e-5, rtol=0
        )
    with pytest.raises(
        InputError, match=r"lacks base weights \(.*\) and the config names no hub id"
    ):
        convert_rsrefseg2(tmp_path / "a.pth", tmp_path / "refused", True, config, tokenizer)
    assert not (tmp_path / "refused").exists()
