"""What training needs from a model family, as one small task object per family.

The loop (:func:`~rrsis_geo.training.trainer.train`: DDP, AMP, resume, logging, validation,
selection on val) is one; what differs per family comes from its task, as TorchGeo's trainers
split by concern: the model config a recipe asks for, building the model and its tokenizer,
the parameter groups, the forward on a batch and its loss, and what to do once training ends.
:func:`task_for` finds a recipe's task by the architecture of its named config.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

import torch
from torch import nn

from rrsis_geo.errors import InputError
from rrsis_geo.geo.normalization import NormalizationSpec
from rrsis_geo.training.config import TrainConfig

__all__ = ["TASKS", "ReferringSegmentationTask", "TrainingTask", "task_for"]


class TrainingTask(Protocol):
    """What a family gives the training loop."""

    def model_config(self, config: TrainConfig) -> Any:
        """The recipe's named config with its ``model_overrides``, named after the run."""
        ...

    def build(self, model_config: Any) -> nn.Module:
        """A new model (encoders pretrained as the config says)."""
        ...

    def tokenizer(self, model_config: Any) -> Any:
        """The model's tokenizer."""
        ...

    def parameter_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (learning rates, weight decay)."""
        ...

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig) -> Any:
        """The forward pass on ``batch`` and its loss (a scalar tensor)."""
        ...


class ReferringSegmentationTask:
    """A family whose forward gives mask logits, and maybe presence and selection outputs.

    CroBIM and LGCE: the model config is the family's named config with the recipe's
    ``model_overrides``; the loss is BCE + Dice on the mask (before object selection when
    there is one), BCE on presence when the family has a presence head, and the selection
    loss when it selects among candidates.

    Args:
        architecture: The registered architecture whose models it trains.
    """

    def __init__(self, architecture: str) -> None:
        self.architecture = architecture

    def model_config(self, config: TrainConfig) -> Any:
        """The named config with ``model_overrides`` applied (nested for vision and text)."""
        from rrsis_geo.models.registry import find_config
        from rrsis_geo.nn.config import area_ranges

        found = find_config(config.model)
        if found is None:
            raise InputError(f"unknown model config {config.model!r} (rrsis models list)")
        model_config = found[1]
        overrides = dict(config.model_overrides)
        for key in ("vision", "text"):
            if key in overrides:
                part = replace(getattr(model_config, key), **overrides.pop(key))
                setattr(model_config, key, part)
        known = set(type(model_config).__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown model_overrides: {', '.join(unknown)}")
        if "normalization" in overrides:
            overrides["normalization"] = NormalizationSpec.from_dict(overrides["normalization"])
        if "category_areas_m2" in overrides:
            overrides["category_areas_m2"] = area_ranges(overrides["category_areas_m2"])
        for key, value in overrides.items():
            setattr(model_config, key, tuple(value) if isinstance(value, list) else value)
        model_config.name = config.name
        return model_config

    def build(self, model_config: Any) -> nn.Module:
        """A new model of the config's family (encoders pretrained as the config says)."""
        from rrsis_geo.models.registry import architecture

        model: nn.Module = architecture(self.architecture).model_class()(model_config)
        return model

    def tokenizer(self, model_config: Any) -> Any:
        """The text encoder's tokenizer."""
        from rrsis_geo.nn.encoders import load_tokenizer

        return load_tokenizer(model_config.text)

    def parameter_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
        """Encoders at ``lr_encoder``, new modules at ``lr_new``; no decay on vectors."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            encoder = name.startswith(("vision.", "text."))
            decay = parameter.ndim > 1
            groups.setdefault((encoder, decay), []).append(parameter)
        return [
            {
                "params": params,
                "lr": config.optim.lr_encoder if encoder else config.optim.lr_new,
                "weight_decay": config.optim.weight_decay if decay else 0.0,
                "name": ("encoder" if encoder else "new") + ("" if decay else "_no_decay"),
            }
            for (encoder, decay), params in sorted(groups.items())
        ]

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig) -> Any:
        """BCE + Dice on the mask before selection, presence BCE, and the selection loss."""
        from rrsis_geo.nn.losses import segmentation_loss
        from rrsis_geo.nn.selection import selection_loss

        output = network(
            batch["image"],
            batch["input_ids"],
            batch["attention_mask"],
            image_index=batch.get("image_index"),
        )
        unselected = getattr(output, "unselected_logits", None)
        mask_logits = unselected if unselected is not None else output.mask_logits
        presence = getattr(output, "presence_logits", None)
        loss = segmentation_loss(
            mask_logits.float(),
            batch["mask"],
            None if presence is None else presence.float(),
            batch["present"],
            config.loss.get("bce", 1.0),
            config.loss.get("dice", 1.0),
            config.loss.get("presence", 0.5),
        )
        candidates = getattr(output, "candidates", None)
        if candidates is not None and output.candidate_scores is not None:
            loss = loss + config.loss.get("selection", 1.0) * selection_loss(
                output.candidate_scores, candidates, batch["mask"], batch["present"]
            )
        return loss


TASKS: dict[str, TrainingTask] = {
    "crobim": ReferringSegmentationTask("crobim"),
    "lgce": ReferringSegmentationTask("lgce"),
}
"""The training task of each architecture (:data:`rrsis_geo.models.registry.ARCHITECTURES`)."""


def task_for(config: TrainConfig) -> TrainingTask:
    """The task of the architecture whose named config the recipe's ``model`` is.

    Raises:
        InputError: When no architecture has that config, or it has no training task.
    """
    from rrsis_geo.models.registry import find_config

    found = find_config(config.model)
    if found is None:
        raise InputError(f"unknown model config {config.model!r} (rrsis models list shows them)")
    entry, _ = found
    if entry.name not in TASKS:
        raise InputError(f"{entry.name} models cannot be trained yet")
    return TASKS[entry.name]
