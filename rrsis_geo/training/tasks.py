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

__all__ = ["TASKS", "CroBIMTask", "TrainingTask", "task_for"]


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


class CroBIMTask:
    """CroBIM: segmentation, presence and (with object selection) selection losses."""

    def model_config(self, config: TrainConfig) -> Any:
        """The named architecture with ``model_overrides`` applied (nested for vision, text)."""
        from rrsis_geo.nn.config import CroBIMConfig, area_ranges, named_config

        try:
            model_config = named_config(config.model)
        except KeyError as error:
            raise InputError(str(error.args[0])) from None
        overrides = dict(config.model_overrides)
        for key in ("vision", "text"):
            if key in overrides:
                part = replace(getattr(model_config, key), **overrides.pop(key))
                setattr(model_config, key, part)
        known = set(CroBIMConfig.__dataclass_fields__)
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
        """A new CroBIM."""
        from rrsis_geo.nn.crobim import CroBIM

        return CroBIM(model_config)

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
        unselected = output.unselected_logits
        mask_logits = unselected if unselected is not None else output.mask_logits
        loss = segmentation_loss(
            mask_logits.float(),
            batch["mask"],
            output.presence_logits.float(),
            batch["present"],
            config.loss.get("bce", 1.0),
            config.loss.get("dice", 1.0),
            config.loss.get("presence", 0.5),
        )
        if output.candidates is not None and output.candidate_scores is not None:
            loss = loss + config.loss.get("selection", 1.0) * selection_loss(
                output.candidate_scores, output.candidates, batch["mask"], batch["present"]
            )
        return loss


TASKS: dict[str, TrainingTask] = {"crobim": CroBIMTask()}
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
