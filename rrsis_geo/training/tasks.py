"""What training needs from a model family, as one small task object per family.

The loop (:func:`~rrsis_geo.training.trainer.train`: DDP, AMP, resume, logging, validation,
selection on val) is one; what differs per family comes from its task, as TorchGeo's trainers
split by concern: the model config a recipe asks for, building the model and its tokenizer,
the parameter groups, the forward on a batch and its loss, and what to do once training ends.
:func:`task_for` finds a recipe's task by the architecture of its named config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch
from torch import nn

from rrsis_geo.errors import InputError
from rrsis_geo.geo.normalization import NormalizationSpec
from rrsis_geo.training.config import TrainConfig

__all__ = [
    "TASKS",
    "RSRefSeg2Task",
    "ReferringSegmentationTask",
    "TrainingTask",
    "overridden_config",
    "task_for",
]


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

    encoder_prefixes: tuple[str, ...] = ("vision.", "text.")
    """Parameters under these names train at ``lr_encoder``, the others at ``lr_new``."""

    def __init__(self, architecture: str) -> None:
        self.architecture = architecture

    def model_config(self, config: TrainConfig) -> Any:
        """The named config with ``model_overrides`` applied (:func:`overridden_config`)."""
        return overridden_config(config)

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
            encoder = name.startswith(self.encoder_prefixes)
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
            **pass_options(config),
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


class RSRefSeg2Task(ReferringSegmentationTask):
    """RSRefSeg 2 as its authors train it: LoRA on the towers and their four-term loss.

    LoRA (``lora_r``, ``lora_alpha`` of the config; ``lora_r: 0`` fine-tunes every weight)
    goes on SAM's image encoder and both SigLIP towers; the prompter, SAM's prompt encoder and
    mask decoder train fully. Adapters and the towers' other trainable weights take
    ``lr_encoder``, the rest ``lr_new``. The loss is
    :func:`~rrsis_geo.nn.rsrefseg2.rsrefseg2_loss` with the config's ``loss`` weights (set
    them through ``model_overrides``; the recipe's ``loss`` section is CroBIM's and LGCE's).
    Checkpoints hold merged weights; the trainer state keeps the adapters for ``--resume``.
    """

    encoder_prefixes = ("siglip.", "sam.vision_encoder.")

    def __init__(self) -> None:
        super().__init__("rsrefseg2")

    def build(self, model_config: Any) -> nn.Module:
        """The model with its sources' weights, and LoRA adapters unless ``lora_r`` is 0."""
        from rrsis_geo.nn.rsrefseg2 import RSRefSeg2, apply_lora

        model = RSRefSeg2(model_config, pretrained=True)
        return apply_lora(model) if model_config.lora_r > 0 else model

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor], config: TrainConfig) -> Any:
        """BCE, Dice, the query sets kept apart and the contrastive term, weighted."""
        from rrsis_geo.nn.rsrefseg2 import rsrefseg2_loss

        model: Any = getattr(network, "module", network)  # DDP wraps it
        images = batch["image"]
        if "image_index" in batch:  # images grouped: one per expression again
            images = images[batch["image_index"]]
        output = network(images, batch["input_ids"], batch["attention_mask"])
        terms = rsrefseg2_loss(
            output,
            batch["mask"],
            model.contrastive_logit_scale,
            model.contrastive_logit_bias,
            model.config.loss,
        )
        return terms["loss"]


def overridden_config(config: TrainConfig) -> Any:
    """The recipe's named config with its ``model_overrides``, named after the run.

    An override of a section of the config (``vision``, ``text``, ``sam``, ``siglip``...) sets
    the keys it names and keeps the section's others; any other key replaces the value. The
    result is built by the config's own ``from_dict``, so its checks and conversions apply.

    Raises:
        InputError: An unknown config, or override keys the config does not have.
    """
    from rrsis_geo.models.registry import find_config

    found = find_config(config.model)
    if found is None:
        raise InputError(f"unknown model config {config.model!r} (rrsis models list)")
    named = found[1]
    values = named.to_dict()
    for key, value in config.model_overrides.items():
        part = getattr(named, key, None)
        section = (
            key in values
            and dataclasses.is_dataclass(part)
            and not isinstance(part, NormalizationSpec)
        )
        values[key] = {**values[key], **value} if section and isinstance(value, dict) else value
    values["name"] = config.name
    try:
        return type(named).from_dict(values)
    except (TypeError, ValueError) as error:
        raise InputError(f"model_overrides: {error}") from None


TASKS: dict[str, TrainingTask] = {
    "crobim": ReferringSegmentationTask("crobim"),
    "lgce": ReferringSegmentationTask("lgce"),
    "rsrefseg2": RSRefSeg2Task(),
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
    if config.expressions_per_pass is not None and entry.name != "crobim":
        raise InputError(f"expressions_per_pass is a setting of crobim models, not {entry.name}")
    return TASKS[entry.name]


def pass_options(config: TrainConfig) -> dict[str, Any]:
    """The recipe's speed settings for a model's forward (none unless the recipe sets them)."""
    if config.expressions_per_pass is None:
        return {}
    return {"expressions_per_pass": config.expressions_per_pass}
