"""Object selection: regions, candidate geometry, fading, the loss, and that it can learn."""

import dataclasses

import pytest
import torch

from rrsis_geo.errors import InputError
from rrsis_geo.nn.crobim import CroBIM
from rrsis_geo.nn.encoders import load_tokenizer
from rrsis_geo.nn.selection import (
    GEOMETRY_FEATURES,
    PADDING_SCORE,
    RANK_CODES,
    ObjectSelector,
    connected_components,
    find_candidates,
    referent_candidates,
    selection_loss,
)


def blobs(height=16, width=16):
    """Three regions: a 2x2 square, a diagonal pair (8-connected) and a 3x4 block."""
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True
    mask[0, 10, 2] = mask[0, 11, 3] = True
    mask[0, 5:8, 9:13] = True
    return mask


def test_connected_components_finds_each_region_once():
    labels = connected_components(blobs())[0]
    assert labels[blobs()[0] == 0].eq(0).all()
    assert len(labels.unique()) == 4  # background and three regions
    assert labels[1, 1] == labels[2, 2] != labels[10, 2]
    assert labels[10, 2] == labels[11, 3]  # diagonal neighbours are one region
    assert labels[5, 9] == labels[7, 12]


def test_a_snake_is_one_region():
    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[0, ::2, :] = True
    mask[0, 1::4, 8] = mask[0, 3::4, 0] = True
    assert len(connected_components(mask).unique()) == 2


def test_candidates_are_the_largest_regions_with_their_geometry():
    logits = torch.where(blobs(), 3.0, -3.0)
    candidates = find_candidates(logits, max_candidates=2)
    assert candidates.valid.tolist() == [[True, True]]
    areas = candidates.masks.sum(dim=(2, 3))[0].tolist()
    assert areas == [12.0, 4.0]  # the diagonal pair (2 pixels) is left out
    block, square = candidates.geometry[0]
    # x, y centre in [0, 1]: the block is right of and below the square
    assert block[0] == pytest.approx(11 / 16) and square[0] == pytest.approx(2 / 16)
    assert block[1] > square[1]
    assert (block[7], square[7]) == (1.0, 0.0)  # size rank: largest is 1
    assert (block[8], square[8]) == (1.0, 0.0)  # x rank: rightmost is 1
    torch.testing.assert_close(candidates.centres[0, 1], torch.tensor([2 / 16, 2 / 16]))


def test_rank_codes_count_from_either_end():
    """Square (leftmost, top), diagonal pair (2nd from left, bottom, smallest), block (right)."""
    logits = torch.where(blobs(), 3.0, -3.0)
    plain = find_candidates(logits, max_candidates=4)
    candidates = find_candidates(logits, max_candidates=4, ranks=True)
    torch.testing.assert_close(candidates.geometry[..., :GEOMETRY_FEATURES], plain.geometry)
    # (K, from which end, x / y / size, rank): one-hot, zero for the padding candidate
    codes = candidates.geometry[0, :, GEOMETRY_FEATURES:].view(4, 2, 3, RANK_CODES).argmax(-1)
    block, square, pair = 0, 1, 2
    assert codes[block].tolist() == [[2, 1, 2], [0, 1, 0]]  # rightmost, middle row, largest
    assert codes[square].tolist() == [[0, 0, 1], [2, 2, 1]]  # leftmost, top, 2nd largest
    assert codes[pair].tolist() == [[1, 2, 0], [1, 0, 2]]  # 2nd from left and right, smallest
    assert candidates.geometry[0, 3].abs().sum() == 0


def test_candidates_are_padded_when_the_mask_has_fewer_regions():
    logits = torch.full((2, 8, 8), -1.0)
    logits[0, 2:4, 2:4] = 1.0
    candidates = find_candidates(logits, max_candidates=3)
    assert candidates.valid.tolist() == [[True, False, False], [False, False, False]]
    assert candidates.masks[0, 1:].sum() == 0 and candidates.geometry[1].abs().sum() == 0


def test_selector_fades_the_objects_not_chosen_and_leaves_a_lone_object_alone():
    torch.manual_seed(0)
    selector = ObjectSelector(dim=16, num_heads=2, text_dim=16, layers=1, max_candidates=4).eval()
    pixels = torch.randn(2, 16, 16, 16)
    words, word_mask = torch.randn(2, 5, 16), torch.ones(2, 5)
    logits = torch.where(blobs(), 3.0, -3.0).expand(2, -1, -1).clone()
    logits[1] = -3.0
    logits[1, 4:8, 4:8] = 2.0  # one object only
    with torch.no_grad():
        selected, scores, candidates = selector(
            logits, pixels, words, word_mask, torch.randn(2, 16, 8, 8)
        )
    assert scores[0, 3] == PADDING_SCORE and candidates.valid[0].sum() == 3
    best = int(scores[0].argmax())
    chosen = candidates.masks[0, best].bool()
    assert torch.equal(selected[0][chosen], logits[0][chosen])
    others = (logits[0] > 0) & ~chosen
    assert (selected[0][others] < logits[0][others]).all()
    assert torch.equal(selected[0][logits[0] < 0], logits[0][logits[0] < 0])
    assert torch.equal(selected[1], logits[1])


def test_selection_loss_targets_the_candidate_over_the_referent():
    logits = torch.where(blobs(), 3.0, -3.0).expand(3, -1, -1)
    candidates = find_candidates(logits, max_candidates=3)
    target = torch.zeros(3, 32, 32)  # any resolution: resized to the candidates'
    target[:, 2:6, 2:6] = 1  # the 2x2 square at half resolution
    scores = torch.zeros(3, 3, requires_grad=True)
    present = torch.tensor([1.0, 0.0, 1.0])
    loss = selection_loss(scores, candidates, target, present)
    loss.backward()
    # The square is the second largest region; the absent referent's row does not count.
    square = 1
    assert scores.grad[0, square] < 0 and scores.grad[2, square] < 0
    assert scores.grad[1].abs().sum() == 0
    missed = torch.zeros(3, 16, 16)
    missed[:, 13:16, 13:16] = 1
    assert selection_loss(scores, candidates, missed).item() == 0.0

    # A target holding two objects ("The ship." over every ship) names no one candidate.
    both = target.clone()
    both[:, 10:16, 18:26] = 1  # and the 3x4 block
    assert selection_loss(scores, candidates, both, present).item() == 0.0
    _, found = referent_candidates(candidates, both)
    assert not found.any()


def train_selector(selector, batch, steps):
    """Adam on the selection loss over fresh batches of 16; ``batch(size)`` gives inputs, target."""
    optimizer = torch.optim.Adam(selector.parameters(), lr=3e-3)
    for _ in range(steps):
        *inputs, target = batch(16)
        _, scores, candidates = selector(*inputs)
        loss = selection_loss(scores, candidates, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def exact_rate(selector, logits, pixels, words, word_mask, visual, target):
    """Share of images whose selected mask (logit > 0) is exactly the target."""
    with torch.no_grad():
        selected, _, _ = selector(logits, pixels, words, word_mask, visual)
    return ((selected > 0) == target.bool()).flatten(1).all(dim=1).float().mean().item()


def test_selector_learns_to_choose_by_the_words_what_the_pixels_cannot_tell():
    """Two identical objects, words "left" or "right": only selection can answer."""
    torch.manual_seed(0)
    dim = 16
    selector = ObjectSelector(dim=dim, num_heads=2, text_dim=dim, layers=1, max_candidates=4)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    left_object, right_object = (slice(6, 10), slice(1, 5)), (slice(6, 10), slice(11, 15))
    mask[left_object] = mask[right_object] = True
    vocabulary = torch.randn(2, dim)  # "left", "right"

    def batch(size):
        side = torch.randint(0, 2, (size,))
        target = torch.zeros(size, 16, 16)
        for row, s in enumerate(side.tolist()):
            target[row][right_object if s else left_object] = 1
        logits = torch.where(mask, 2.0, -2.0).expand(size, -1, -1)
        words = vocabulary[side].unsqueeze(1)
        pixels = torch.ones(size, dim, 16, 16)  # both objects look the same
        return logits, pixels, words, torch.ones(size, 1), torch.zeros(size, dim, 8, 8), target

    held_out = batch(64)
    before = exact_rate(selector, *held_out)
    train_selector(selector, batch, steps=60)
    assert before < 0.7
    assert exact_rate(selector, *held_out) == 1.0


def test_nearness_lets_the_selector_find_the_object_closest_to_an_anchor():
    """Three identical objects and a mark on the image: only the distance to the mark tells."""
    dim = 16
    mask = torch.zeros(16, 16, dtype=torch.bool)
    objects = [
        (slice(1, 4), slice(1, 4)),
        (slice(1, 4), slice(12, 15)),
        (slice(12, 15), slice(6, 9)),
    ]
    for rows, cols in objects:
        mask[rows, cols] = True
    centres = torch.tensor([[2.5, 2.5], [13.5, 2.5], [7.5, 13.5]]) / 16  # (x, y)
    torch.manual_seed(0)
    anchor = torch.randn(dim)
    words = torch.randn(1, 1, dim)  # one expression: "the object closest to the mark"

    def batch(size):
        spots = torch.randint(0, 8, (size, 2))  # (x, y) cells of the 8 x 8 visual tokens
        visual = torch.zeros(size, dim, 16, 16)  # the selector pools it by 2
        for row, (x, y) in enumerate(spots.tolist()):
            visual[row, :, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2] = anchor[:, None, None]
        nearest = torch.cdist((spots.float() + 0.5) / 8, centres).argmin(dim=1)
        target = torch.zeros(size, 16, 16)
        for row, index in enumerate(nearest.tolist()):
            target[row][objects[index]] = 1
        logits = torch.where(mask, 2.0, -2.0).expand(size, -1, -1)
        pixels = torch.ones(size, dim, 16, 16)
        return logits, pixels, words.expand(size, -1, -1), torch.ones(size, 1), visual, target

    torch.manual_seed(1)
    held_out = batch(128)
    torch.manual_seed(0)
    selector = ObjectSelector(dim, 2, dim, layers=1, max_candidates=4, nearness=True)
    before = exact_rate(selector, *held_out)
    train_selector(selector, batch, steps=150)
    assert before < 0.5
    assert exact_rate(selector, *held_out) >= 0.9


def test_geometry_weights_let_the_words_choose_by_rank_from_either_end():
    """Four identical objects in a row; "first/second from the left/right" names one."""
    dim = 16
    mask = torch.zeros(16, 16, dtype=torch.bool)
    objects = [(slice(6, 9), slice(col, col + 2)) for col in (1, 5, 9, 13)]
    for rows, cols in objects:
        mask[rows, cols] = True
    torch.manual_seed(0)
    vocabulary = torch.randn(4, dim)  # the four ordinal phrases
    referent_of_phrase = [0, 1, 2, 3]  # first/second from the left, second/first from the right

    def batch(size):
        phrase = torch.randint(0, 4, (size,))
        target = torch.zeros(size, 16, 16)
        for row, p in enumerate(phrase.tolist()):
            target[row][objects[referent_of_phrase[p]]] = 1
        logits = torch.where(mask, 2.0, -2.0).expand(size, -1, -1)
        pixels = torch.ones(size, dim, 16, 16)
        words = vocabulary[phrase].unsqueeze(1)
        return logits, pixels, words, torch.ones(size, 1), torch.zeros(size, dim, 8, 8), target

    torch.manual_seed(1)
    held_out = batch(64)
    torch.manual_seed(0)
    selector = ObjectSelector(
        dim, 2, dim, layers=1, max_candidates=4, ranks=True, geometry_weights=True
    )
    before = exact_rate(selector, *held_out)
    train_selector(selector, batch, steps=80)
    assert before < 0.5
    assert exact_rate(selector, *held_out) >= 0.9


def test_geometry_weights_start_at_zero_and_scores_come_from_the_inputs_alone():
    torch.manual_seed(0)
    logits = torch.where(blobs(), 3.0, -3.0)
    inputs = (torch.randn(1, 16, 16, 16), torch.randn(1, 5, 16), torch.ones(1, 5))
    visual = torch.randn(1, 16, 8, 8)
    torch.manual_seed(1)
    plain = ObjectSelector(16, 2, 16, layers=1, max_candidates=4, ranks=True).eval()
    weighted = ObjectSelector(
        16, 2, 16, layers=1, max_candidates=4, ranks=True, geometry_weights=True
    ).eval()
    missing = weighted.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("word_pool", "geometry_weights")) for k in missing)
    with torch.no_grad():
        _, plain_scores, _ = plain(logits, *inputs, visual)
        selected, scores, candidates = weighted(logits, *inputs, visual)
        selection_inputs, _ = weighted.inputs(logits, *inputs, visual)
        # Only what SelectionInputs holds is needed to score (a finishing fit caches it).
        torch.testing.assert_close(weighted.scores(selection_inputs), scores)
    torch.testing.assert_close(scores, plain_scores)
    torch.testing.assert_close(weighted.select(logits, scores, candidates), selected)


@pytest.fixture
def tiny_selecting(tiny_config):
    config = dataclasses.replace(
        tiny_config,
        object_selection=True,
        max_candidates=5,
        selection_ranks=True,
        selection_nearness=True,
        selection_geometry_weights=True,
    )
    return CroBIM(config).eval(), load_tokenizer(config.text)


def test_crobim_with_selection_round_trips_and_reports_candidates(tiny_selecting, tmp_path):
    model, tokenizer = tiny_selecting
    encoded = tokenizer(
        ["the largest tank"] * 2, padding="max_length", max_length=12, return_tensors="pt"
    )
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images, encoded["input_ids"], encoded["attention_mask"])
    assert out.candidate_scores is not None and out.candidate_scores.shape == (2, 5)
    assert out.candidates is not None and out.candidates.masks.shape == (2, 5, 16, 16)
    folder = model.save_pretrained(tmp_path / "ckpt", tokenizer)
    loaded, _ = CroBIM.from_pretrained(folder)
    assert loaded.config.object_selection and loaded.selector is not None
    with torch.no_grad():
        again = loaded(images, encoded["input_ids"], encoded["attention_mask"])
    assert torch.equal(out.mask_logits, again.mask_logits)


def test_mask_loss_and_selection_loss_train_separate_parts(tiny_selecting):
    """Choosing must not teach the mask to find fewer objects, nor the mask steer choosing."""
    model, tokenizer = tiny_selecting
    model.train()
    encoded = tokenizer(
        ["the second tank from the left"] * 2,
        padding="max_length",
        max_length=12,
        return_tensors="pt",
    )
    out = model(torch.randn(2, 3, 64, 64), encoded["input_ids"], encoded["attention_mask"])
    assert out.unselected_logits is not None and out.candidates is not None
    assert out.candidates.valid.any()

    def reached(loss):
        model.zero_grad()
        loss.backward(retain_graph=True)
        return {
            part
            for part in ("selector", "mask_head")
            if any(
                p.grad is not None and p.grad.abs().sum() > 0
                for p in getattr(model, part).parameters()
            )
        }

    assert reached(out.unselected_logits.square().mean()) == {"mask_head"}
    target = out.candidates.masks[:, 0].float()  # one region: a referent to choose
    assert reached(selection_loss(out.candidate_scores, out.candidates, target)) == {"selector"}


def test_sharpness_scales_how_far_the_objects_not_chosen_fade():
    torch.manual_seed(0)
    logits = torch.where(blobs(), 3.0, -3.0)
    inputs = (torch.randn(1, 16, 16, 16), torch.randn(1, 5, 16), torch.ones(1, 5))
    visual = torch.randn(1, 16, 8, 8)
    faded = []
    for sharpness in (1.0, 4.0):
        torch.manual_seed(1)
        selector = ObjectSelector(16, 2, 16, layers=1, max_candidates=4, sharpness=sharpness)
        with torch.no_grad():
            selected, _, _ = selector.eval()(logits, *inputs, visual)
        faded.append(logits - selected)
    torch.testing.assert_close(faded[1], 4 * faded[0])
    assert faded[0].max() > 0


def test_forward_without_selection_gives_the_mask_before_selection(tiny_selecting):
    model, tokenizer = tiny_selecting
    model.eval()
    encoded = tokenizer(["the tank"], padding="max_length", max_length=12, return_tensors="pt")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        selected = model(images, encoded["input_ids"], encoded["attention_mask"])
        every = model(images, encoded["input_ids"], encoded["attention_mask"], select=False)
    assert every.candidate_scores is None and every.unselected_logits is None
    assert torch.allclose(every.mask_logits, selected.unselected_logits, atol=1e-6)
    assert torch.equal(every.presence_logits, selected.presence_logits)


def test_a_narrower_mask_head_feeds_the_selector_and_presence_its_width(tiny_config, tmp_path):
    """``head_width`` narrows the refinement: its pixel features, the selector's appearance and
    the presence head read that width; the model trains end to end and round-trips."""
    config = dataclasses.replace(
        tiny_config, object_selection=True, max_candidates=5, head_width=16
    )
    model, tokenizer = CroBIM(config), load_tokenizer(config.text)
    assert model.mask_head.refine[3].out_channels == 16  # the 3 x 3 conv, 16 of dim 32
    encoded = tokenizer(
        ["the largest tank"] * 2, padding="max_length", max_length=12, return_tensors="pt"
    )
    images = torch.randn(2, 3, 64, 64)
    output = model(images, encoded["input_ids"], encoded["attention_mask"])
    assert output.selection_inputs is not None
    assert output.selection_inputs.appearance.shape[-1] == 16
    (output.mask_logits.square().mean() + output.presence_logits.square().mean()).backward()
    assert model.mask_head.refine[3].weight.grad is not None
    folder = model.eval().save_pretrained(tmp_path / "narrow", tokenizer)
    loaded, _ = CroBIM.from_pretrained(folder)
    assert loaded.config.head_width == 16
    with torch.no_grad():
        again = loaded(images, encoded["input_ids"], encoded["attention_mask"])
        first = model(images, encoded["input_ids"], encoded["attention_mask"])
    assert torch.equal(first.mask_logits, again.mask_logits)


@pytest.mark.parametrize("width", [0, 12])
def test_a_head_width_groupnorm_cannot_split_is_refused_in_one_line(tiny_config, width):
    config = dataclasses.replace(tiny_config, head_width=width)
    message = f"head_width must be a positive multiple of 8, got {width}"
    with pytest.raises(InputError, match=message):
        CroBIM(config)
