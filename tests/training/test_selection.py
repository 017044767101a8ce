"""Fitting a fresh selector on gathered selection inputs (a run's ``selector_finish``)."""

import dataclasses

import pytest
import torch

from rrsis_geo.errors import InputError
from rrsis_geo.nn.crobim import CroBIM
from rrsis_geo.nn.encoders import load_tokenizer
from rrsis_geo.nn.selection import GEOMETRY_FEATURES, RANK_FEATURES, ObjectSelector, SelectionInputs
from rrsis_geo.training.config import OptimConfig, TrainConfig
from rrsis_geo.training.selection import (
    SelectionExamples,
    fit_selector,
    gather_selection_examples,
)

DIM = 16


def leftmost_or_rightmost(count, seed):
    """Three candidates at random places; the words say "leftmost" or "rightmost".

    Built as a finished mask's candidates would be (ranks included), in float16 like gathered
    examples.
    """
    generator = torch.Generator().manual_seed(seed)
    vocabulary = torch.randn(2, DIM, generator=generator)
    side = torch.randint(0, 2, (count,), generator=generator)
    centres = torch.rand(count, 3, 2, generator=generator)
    geometry = torch.zeros(count, 3, GEOMETRY_FEATURES + RANK_FEATURES)
    geometry[..., :2] = centres
    order = centres[..., 0].argsort(dim=1).argsort(dim=1)  # rank by x
    geometry[..., 8] = order / 2
    referents = torch.where(side == 0, centres[..., 0].argmin(dim=1), centres[..., 0].argmax(dim=1))
    inputs = SelectionInputs(
        geometry=geometry,
        centres=centres,
        valid=torch.ones(count, 3, dtype=torch.bool),
        appearance=torch.ones(count, 3, DIM),  # the three look the same
        words=vocabulary[side].unsqueeze(1),
        word_mask=torch.ones(count, 1),
        visual=torch.zeros(count, DIM, 4, 4),
    )
    half = inputs.map(lambda t: t.half() if t.is_floating_point() else t)
    return SelectionExamples(half, referents)


def exact(selector, examples):
    inputs = examples.inputs.map(lambda t: t.float() if t.is_floating_point() else t)
    with torch.no_grad():
        chosen = selector.eval().scores(inputs).argmax(dim=1)
    return (chosen == examples.referents).float().mean().item()


def fresh_selector():
    torch.manual_seed(0)
    return ObjectSelector(
        DIM, 2, DIM, layers=1, max_candidates=3, ranks=True, geometry_weights=True
    )


def test_fit_selector_learns_the_choices_and_is_reproducible():
    train, held_out = leftmost_or_rightmost(256, seed=0), leftmost_or_rightmost(128, seed=1)
    schedule = OptimConfig().lr_factor(150, warmup_steps=10)
    fitted = []
    for _ in range(2):
        selector = fresh_selector()
        before = exact(selector, held_out)
        loss = fit_selector(selector, train, 150, 32, 3e-3, schedule, seed=0)
        fitted.append(selector)
    assert before < 0.6
    assert loss < 0.3
    assert exact(fitted[0], held_out) >= 0.95
    for first, second in zip(fitted[0].parameters(), fitted[1].parameters(), strict=True):
        assert torch.equal(first, second)


def test_fit_selector_refuses_nothing_to_learn_from():
    empty = leftmost_or_rightmost(4, seed=0)
    empty = SelectionExamples(empty.inputs.map(lambda t: t[:0]), empty.referents[:0])
    with pytest.raises(ValueError, match="no selection examples"):
        fit_selector(fresh_selector(), empty, 10, 4, 1e-3, lambda step: 1.0)


def test_learning_rate_factor_warms_up_then_decays_to_zero():
    factor = OptimConfig(schedule="poly", poly_power=1.0).lr_factor(110, warmup_steps=10)
    assert [factor(s) for s in (0, 9)] == [0.1, 1.0]
    assert factor(10) == 1.0 and factor(60) == pytest.approx(0.5) and factor(110) == 0.0
    cosine = OptimConfig(schedule="cosine", warmup_steps=0).lr_factor(100)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0)


@pytest.mark.parametrize(
    ("key", "value"), [("images", -1), ("steps", 0), ("batch_size", 0), ("lr", 0.0)]
)
def test_selector_finish_settings_are_checked_when_the_config_is_read(key, value):
    with pytest.raises(InputError, match=f"selector_finish.{key} must be"):
        TrainConfig.from_dict({"selector_finish": {key: value}})
    assert TrainConfig.from_dict({"selector_finish": {"images": 10}}).selector_finish.images == 10


def test_gathering_leaves_negatives_out_before_the_forward(tiny_config):
    """Negatives have no referent: the frozen model is not run on them, every image still is."""
    config = dataclasses.replace(tiny_config, object_selection=True, max_candidates=4)
    model = CroBIM(config)
    tokenizer = load_tokenizer(config.text)
    encoded = tokenizer(
        ["the tank", "the ship", "the airplane"],
        padding="max_length",
        max_length=12,
        return_tensors="pt",
    )
    mask = torch.zeros(3, 64, 64)
    mask[0, 8:24, 8:24] = 1
    batch = {
        "image": torch.randn(2, 3, 64, 64),
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "mask": mask,
        "present": torch.tensor([1.0, 0.0, 0.0]),
        "image_index": torch.tensor([0, 0, 1]),  # image 1 has only a negative
    }
    seen = []
    model.register_forward_pre_hook(lambda _, args: seen.append((len(args[0]), len(args[1]))))
    gather_selection_examples(model, [batch], torch.device("cpu"))
    assert seen == [(2, 1)]  # two images, one expression
    seen.clear()
    negatives_only = {**batch, "present": torch.zeros(3)}
    examples = gather_selection_examples(model, [negatives_only], torch.device("cpu"))
    assert len(examples) == 0 and seen == [(2, 3)]
