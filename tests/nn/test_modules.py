"""Each CroBIM module: shapes, padding, gradients, determinism."""

import dataclasses

import pytest
import torch

from rrsis_geo.nn.capm import CAPM, append_prompts
from rrsis_geo.nn.crobim import CroBIM
from rrsis_geo.nn.heads import MaskHead, PresenceHead, SentenceQuery, coordinate_maps
from rrsis_geo.nn.lgfa import LGFA, LanguageGuidedAttention
from rrsis_geo.nn.mid import MID, sine_positions

CHANNELS = (8, 16, 24, 32)


def pyramid(batch, size=32):
    return [torch.randn(batch, c, size // 2**i, size // 2**i) for i, c in enumerate(CHANNELS)]


def words(batch, length, dim, lengths):
    mask = torch.zeros(batch, length, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return torch.randn(batch, length, dim), mask


@pytest.mark.parametrize("batch", [1, 3])
def test_capm_shapes(batch):
    capm = CAPM(CHANNELS, text_dim=20, num_prompts=4, pool_sizes=(1, 2), num_heads=4)
    assert capm.context(pyramid(batch)).shape == (batch, 4 * 5, 20)
    assert capm(pyramid(batch)).shape == (batch, 4, 20)


def test_prompts_follow_the_real_tokens_whatever_the_padding():
    embeddings, mask = words(2, 6, 5, [2, 6])
    prompts = torch.randn(2, 3, 5)
    combined, combined_mask = append_prompts(embeddings, mask, prompts)
    assert combined.shape == (2, 9, 5)
    assert combined_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0, 0, 0], [1] * 9]
    torch.testing.assert_close(combined[0, :2], embeddings[0, :2])
    torch.testing.assert_close(combined[0, 2:5], prompts[0])
    torch.testing.assert_close(combined[1, 6:], prompts[1])


@pytest.mark.parametrize(("batch", "length"), [(1, 5), (2, 9)])
def test_lgfa_shapes_and_deficit_range(batch, length):
    text, mask = words(batch, length, 20, [length] * batch)
    lgfa = LGFA(CHANNELS, text_dim=20, dim=16, num_heads=4)
    fused, levels = lgfa(pyramid(batch), text, mask)
    assert fused.shape == (batch, 16, 16, 16)  # stride 8 of a 32-pixel level-0 map... level 1
    assert [level.shape[-1] for level in levels] == [32, 16, 8, 4]
    attention = LanguageGuidedAttention(8, 20, 16, num_heads=4)
    _, deficit = attention(torch.randn(batch, 8, 10, 12), text, mask)
    assert deficit.shape == (batch, 10, 12)
    assert deficit.min() >= 0 and deficit.max() <= 1


def test_padded_tokens_change_nothing_in_lgfa_mid_and_heads():
    torch.manual_seed(0)
    lgfa = LGFA(CHANNELS, text_dim=20, dim=16, num_heads=4).eval()
    mid = MID(16, 20, layers=2, num_heads=4).eval()
    sentence = SentenceQuery(16, 4).eval()
    features = pyramid(1)
    text, mask = words(1, 5, 20, [5])
    padded_text = torch.cat([text, torch.randn(1, 4, 20) * 100], dim=1)  # garbage padding
    padded_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        fused, _ = lgfa(features, text, mask)
        fused_padded, _ = lgfa(features, padded_text, padded_mask)
        torch.testing.assert_close(fused, fused_padded)
        decoded, out_words = mid(fused, text, mask)
        decoded_padded, out_words_padded = mid(fused, padded_text, padded_mask)
        torch.testing.assert_close(decoded, decoded_padded)
        torch.testing.assert_close(
            sentence(out_words, mask), sentence(out_words_padded, padded_mask)
        )


def test_heads_shapes():
    head, presence = MaskHead(16), PresenceHead(16)
    logits, pixels = head(torch.randn(2, 16, 8, 8), torch.randn(2, 16, 16, 16), torch.randn(2, 16))
    assert logits.shape == (2, 16, 16) and pixels.shape == (2, 16, 16, 16)
    assert presence(pixels, logits, torch.randn(2, 16)).shape == (2,)


def tokens(tokenizer, texts, length):
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
    )
    return encoded["input_ids"], encoded["attention_mask"]


@pytest.fixture
def tiny(tiny_config):
    from rrsis_geo.nn.encoders import load_tokenizer

    return CroBIM(tiny_config).eval(), load_tokenizer(tiny_config.text)


@pytest.mark.parametrize(("batch", "length"), [(1, 8), (3, 12)])
def test_crobim_output_shapes(tiny, batch, length):
    model, tokenizer = tiny
    ids, mask = tokens(tokenizer, ["the largest storage tank"] * batch, length)
    with torch.no_grad():
        out = model(torch.randn(batch, 3, 64, 64), ids, mask)
    assert out.mask_logits.shape == (batch, 64, 64)
    assert out.presence_logits.shape == (batch,)


def test_more_padding_changes_nothing_end_to_end(tiny):
    model, tokenizer = tiny
    images = torch.randn(2, 3, 64, 64)
    texts = ["the ship", "the second ship from the left"]
    with torch.no_grad():
        short = model(images, *tokens(tokenizer, texts, 10))
        long = model(images, *tokens(tokenizer, texts, 24))
    torch.testing.assert_close(short.mask_logits, long.mask_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(short.presence_logits, long.presence_logits, atol=1e-4, rtol=1e-4)


def test_text_encoded_once_gives_the_same_result(tiny):
    model, tokenizer = tiny
    images = torch.randn(3, 3, 64, 64)
    ids, mask = tokens(tokenizer, ["the tank"], 12)
    with torch.no_grad():
        once = model(images, text=model.encode_text(ids, mask))
        each = model(images, ids.expand(3, -1), mask.expand(3, -1))
    torch.testing.assert_close(once.mask_logits, each.mask_logits)


@pytest.fixture(params=["paper", "our additions"])
def tiny_variants(request, tiny_config):
    from rrsis_geo.nn.encoders import load_tokenizer

    if request.param == "our additions":
        tiny_config = dataclasses.replace(
            tiny_config,
            mid_positions=True,
            mid_self_attention=True,
            head_coordinates=True,
            head_width=16,
            sentence_mean=True,
        )
    return CroBIM(tiny_config).eval(), load_tokenizer(tiny_config.text)


def test_gradients_reach_every_trainable_parameter(tiny_variants):
    model, tokenizer = tiny_variants
    model.train()
    ids, mask = tokens(tokenizer, ["the tank on the left", "a plane"], 12)
    out = model(torch.randn(2, 3, 64, 64), ids, mask)
    (out.mask_logits.square().mean() + out.presence_logits.square().mean()).backward()
    untouched = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad
        and (p.grad is None or not torch.any(p.grad != 0))
        # BERT's pooler-free token-type and unused position rows legitimately get no gradient
        and "token_type_embeddings" not in name
        and "word_embeddings" not in name
    ]
    assert untouched == []


def test_eval_mode_is_deterministic(tiny):
    model, tokenizer = tiny
    ids, mask = tokens(tokenizer, ["the tank"], 12)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        first = model(images, ids.expand(2, -1), mask.expand(2, -1)).mask_logits
        second = model(images, ids.expand(2, -1), mask.expand(2, -1)).mask_logits
    assert torch.equal(first, second)


def test_sine_positions_tell_every_token_apart():
    encoding = sine_positions(6, 7, 16, torch.device("cpu"))
    assert encoding.shape == (42, 16)
    distances = torch.cdist(encoding, encoding)
    assert (distances + torch.eye(42) * 10).min() > 0.1
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_positions(2, 2, 6, torch.device("cpu"))


@pytest.mark.parametrize("self_attention", [False, True])
def test_mid_sees_where_tokens_are_only_with_positions(self_attention):
    # Without positions MID treats the visual tokens as a set: reordering them reorders its
    # output. With positions the same content at other places gives other features.
    torch.manual_seed(0)
    text, mask = torch.randn(1, 5, 12), torch.ones(1, 5, dtype=torch.long)
    visual = torch.randn(1, 16, 3, 4)
    order = torch.randperm(12)

    def shuffled(x):
        return x.flatten(2)[..., order].reshape(x.shape)

    for positions in (False, True):
        mid = MID(16, 12, 2, 4, positions=positions, self_attention=self_attention).eval()
        with torch.no_grad():
            direct, _ = mid(visual, text, mask)
            moved, _ = mid(shuffled(visual), text, mask)
        same = torch.allclose(shuffled(direct), moved, atol=1e-5)
        assert same != positions


def test_expressions_sharing_an_image_match_one_image_per_expression(tiny):
    model, tokenizer = tiny
    images = torch.randn(2, 3, 64, 64)
    texts = ["the tank", "the ship on the left", "the largest plane"]
    ids, mask = tokens(tokenizer, texts, 12)
    image_index = torch.tensor([1, 0, 1])
    with torch.no_grad():
        shared = model(images, ids, mask, image_index=image_index)
        repeated = model(images[image_index], ids, mask)
    assert shared.mask_logits.shape == (3, 64, 64)
    torch.testing.assert_close(shared.mask_logits, repeated.mask_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.presence_logits, repeated.presence_logits)


@pytest.mark.parametrize("grouped", [True, False])
def test_expressions_run_in_passes_give_the_outputs_and_gradients_of_one_pass(tiny_config, grouped):
    # A speed setting only: every output, and the gradient of every weight, as in one pass.
    from rrsis_geo.nn.encoders import load_tokenizer

    config = dataclasses.replace(tiny_config, object_selection=True, selection_ranks=True)
    model = CroBIM(config).eval()
    texts = ["the tank", "the ship on the left", "the largest plane", "the road", "a car"]
    ids, mask = tokens(load_tokenizer(config.text), texts, 12)
    image_index = torch.tensor([1, 0, 1, 1, 0]) if grouped else None
    images = torch.randn(2 if grouped else 5, 3, 64, 64)
    results = {}
    for per_pass in (None, 2):
        model.zero_grad()
        output = model(images, ids, mask, image_index=image_index, expressions_per_pass=per_pass)
        (output.unselected_logits.mean() + output.presence_logits.mean()).backward()
        gradients = {
            name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None
        }
        results[per_pass] = (output, gradients)
    (one, one_grads), (passes, pass_grads) = results[None], results[2]
    assert one.mask_logits.shape == (5, 64, 64)
    for field in ("mask_logits", "unselected_logits", "presence_logits", "candidate_scores"):
        torch.testing.assert_close(
            getattr(passes, field), getattr(one, field), atol=1e-5, rtol=1e-5
        )
    assert one_grads.keys() == pass_grads.keys() and len(one_grads) > 50
    for name, gradient in one_grads.items():
        torch.testing.assert_close(pass_grads[name], gradient, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("per_pass", [0, -3])
def test_expressions_per_pass_must_be_positive(tiny, per_pass):
    model, tokenizer = tiny
    ids, mask = tokens(tokenizer, ["the tank"], 8)
    with pytest.raises(ValueError, match=f"expressions_per_pass must be positive, got {per_pass}"):
        model(torch.randn(1, 3, 64, 64), ids, mask, expressions_per_pass=per_pass)


def test_coordinate_maps_span_the_map_left_to_right_and_top_to_bottom():
    grid = coordinate_maps(torch.zeros(2, 7, 3, 4))
    assert grid.shape == (2, 2, 3, 4)
    torch.testing.assert_close(grid[0, 0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(grid[1, 1, :, 2], torch.tensor([-2 / 3, 0.0, 2 / 3]))


def test_mask_head_with_coordinates_tells_places_apart():
    # The same feature everywhere: without coordinates every pixel away from the border (where
    # the 3x3 convolution's zero padding shows) gets the same logit; with them the logit can
    # depend on where the pixel is.
    torch.manual_seed(0)
    decoded, fine = torch.ones(1, 16, 4, 4), torch.ones(1, 16, 8, 8)
    sentence = torch.randn(1, 16)
    for coordinates in (False, True):
        head = MaskHead(16, coordinates).eval()
        with torch.no_grad():
            logits, _ = head(decoded, fine, sentence)
        assert logits.shape == (1, 8, 8)
        inner = logits[0, 2:-2, 2:-2]
        assert bool(torch.allclose(inner, inner[0, 0], atol=1e-6)) != coordinates
