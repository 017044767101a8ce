"""The training configuration: typed dataclasses loaded from YAML, with dotted overrides.

A config file may name a ``base:`` file (relative to itself) whose values it overrides, so a
dataset config is a few lines on top of one base. Command-line overrides use dotted keys:
``rrsis train configs/risbench.yaml optim.lr_new=1e-4 max_steps=200``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rrsis_geo.errors import InputError

__all__ = ["DataConfig", "OptimConfig", "SelectorFinishConfig", "TrainConfig", "load_config"]


@dataclass
class DataConfig:
    """Where the samples come from.

    Attributes:
        root: Dataset folder (native layout) or JSONL file.
        layout: ``auto``, ``rrsisd``, ``refsegrs``, ``risbench`` or ``jsonl``.
        train_split: Split trained on.
        val_split: Split checkpoints are selected on (never the test split).
        negatives: Share of training samples paired with another sample's expression whose
            referent is absent (empty mask, presence 0), for the presence head.
        group_by_image: Batch each image with all its expressions
            (:class:`~rrsis_geo.training.dataset.ImageGroups`): ``batch_size`` then counts
            images, the vision encoder runs once per image, and a batch holds several referents
            on one image.
    """

    root: str = ""
    layout: str = "auto"
    train_split: str = "train"
    val_split: str = "val"
    negatives: float = 0.0
    group_by_image: bool = False


@dataclass
class OptimConfig:
    """Optimizer and schedule (AdamW; LAVT/RMSIN-lineage defaults).

    Attributes:
        lr_encoder: Learning rate of the pretrained vision and text encoders.
        lr_new: Learning rate of the new modules (CAPM, LGFA, MID, heads).
        weight_decay: AdamW weight decay (not applied to biases and norms).
        schedule: ``poly`` or ``cosine``, per optimizer step.
        poly_power: Exponent of the poly schedule.
        warmup_steps: Linear warm-up steps.
        grad_accumulation: Micro-batches per optimizer step.
        clip_grad_norm: Gradient norm clip (0 disables).
    """

    lr_encoder: float = 3e-5
    lr_new: float = 3e-4
    weight_decay: float = 0.01
    schedule: str = "poly"
    poly_power: float = 0.9
    warmup_steps: int = 0
    grad_accumulation: int = 1
    clip_grad_norm: float = 1.0

    def lr_factor(
        self, total_steps: int, warmup_steps: int | None = None
    ) -> Callable[[int], float]:
        """The learning-rate factor of each step (for ``LambdaLR``): warm-up, then decay.

        Args:
            total_steps: Steps of the whole schedule.
            warmup_steps: Linear warm-up steps (default: ``self.warmup_steps``).

        Raises:
            InputError: ``schedule`` is neither ``poly`` nor ``cosine``.
        """
        if self.schedule not in ("poly", "cosine"):
            raise InputError(f"unknown schedule {self.schedule!r}: poly or cosine")
        warmup = self.warmup_steps if warmup_steps is None else warmup_steps
        schedule, power = self.schedule, self.poly_power

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            if schedule == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            return float((1.0 - progress) ** power)

        return factor


@dataclass
class SelectorFinishConfig:
    """Fit a fresh object selector on the finished mask (:mod:`rrsis_geo.training.selection`).

    After the last optimizer step the model is frozen, the selector inputs of the expressions
    of ``images`` training images (a seeded choice) are computed once, a freshly initialised
    selector is trained on them, and the run is validated again (``checkpoints/best`` is
    replaced when val mIoU improves). Models without ``object_selection`` ignore it.

    Attributes:
        images: Training items to gather from: images with ``data.group_by_image``, else
            expressions (0: no finishing fit). More, less over-fitting; each costs one frozen
            forward pass of its expressions.
        steps: Optimizer steps of the fit.
        batch_size: Expressions per step.
        lr: AdamW's peak learning rate (poly decay, as ``optim.poly_power``).
        warmup_steps: Linear warm-up steps.
    """

    images: int = 0
    steps: int = 2000
    batch_size: int = 32
    lr: float = 6e-4
    warmup_steps: int = 50

    def __post_init__(self) -> None:
        counts = {"images": self.images, "warmup_steps": self.warmup_steps}
        positive = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr}
        for name, value in counts.items():
            if value < 0:
                raise InputError(f"selector_finish.{name} must be >= 0, got {value}")
        for name, number in positive.items():
            if number <= 0:
                raise InputError(f"selector_finish.{name} must be > 0, got {number}")


@dataclass
class TrainConfig:
    """A training run.

    Attributes:
        name: Run name (the run folder is ``output_dir/name``).
        model: Named architecture (``crobim-lite``, ``crobim-swinb``).
        model_overrides: Fields of :class:`~rrsis_geo.nn.config.CroBIMConfig` to change, e.g.
            ``{input_size: 320, dim: 128}``.
        data: Data.
        optim: Optimizer.
        batch_size: Samples per micro-batch and process (images, with ``data.group_by_image``).
        epochs: Epochs (ignored when ``max_steps`` is set).
        max_steps: Optimizer steps to run, if set.
        amp: ``none``, ``bf16`` or ``fp16`` (GPU only; CPU runs in float32).
        seed: Seed of initialisation, shuffling and negatives.
        checkpoint_every: Save the last checkpoint every N optimizer steps (and at the end).
        eval_every: Evaluate on val every N optimizer steps (0: at the end of each epoch).
        log_every: Write a training log row every N optimizer steps.
        tensorboard: Also log to TensorBoard (needs the tensorboard package).
        num_workers: DataLoader workers.
        output_dir: Folder holding run folders.
        loss: Loss weights: ``bce``, ``dice``, ``presence``, ``selection`` (models with
            ``object_selection``; default 1).
        selector_finish: A fresh selector fitted on the finished mask (off by default).
        expressions_per_pass: CroBIM only: its text-conditioned part runs on at most this
            many expressions at a time, in training steps and the selector's gathering (None:
            a batch's all at once). A speed setting for CPUs, whose caches hold the maps of a
            few expressions: the loss is the same up to float rounding.
    """

    name: str = "run"
    model: str = "crobim-lite"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 8
    epochs: int = 40
    max_steps: int | None = None
    amp: str = "bf16"
    seed: int = 0
    checkpoint_every: int = 500
    eval_every: int = 0
    log_every: int = 10
    tensorboard: bool = False
    num_workers: int = 0
    output_dir: str = "runs"
    loss: dict[str, float] = field(
        default_factory=lambda: {"bce": 1.0, "dice": 1.0, "presence": 0.5}
    )
    selector_finish: SelectorFinishConfig = field(default_factory=SelectorFinishConfig)
    expressions_per_pass: int | None = None

    def __post_init__(self) -> None:
        per_pass = self.expressions_per_pass
        if per_pass is not None and (
            isinstance(per_pass, bool) or not isinstance(per_pass, int) or per_pass <= 0
        ):
            raise InputError(f"expressions_per_pass must be a positive integer, got {per_pass!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain form (written to the run folder as ``config.yaml``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from nested dicts; unknown keys are an error that names them."""
        return _build(cls, values, "")


def _build(kind: Any, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise InputError(f"config section {prefix or 'root'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"unknown config keys: {', '.join(prefix + k for k in unknown)}")
    built = {}
    sections: dict[str, Any] = (
        {"data": DataConfig, "optim": OptimConfig, "selector_finish": SelectorFinishConfig}
        if kind is TrainConfig
        else {}
    )
    for key, value in values.items():
        if key in sections:
            built[key] = _build(sections[key], value, f"{prefix}{key}.")
        else:
            built[key] = _coerce(fields[key], value, prefix + key)
    return kind(**built)


def _coerce(spec: dataclasses.Field[Any], value: Any, name: str) -> Any:
    """YAML reads ``1e-4`` as a string (YAML 1.1 wants ``1.0e-4``): convert numbers by field."""
    default = spec.default
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if isinstance(value, str) and numeric:
        try:
            return int(value) if isinstance(default, int) else float(value)
        except ValueError:
            raise InputError(f"config key {name} takes a number, got {value!r}") from None
    return value


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"config not found: {path}")
    if path.resolve() in seen:
        raise InputError(f"config {path} includes itself through base:")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: a config is a mapping")
    base = values.pop("base", None)
    if base is None:
        return values
    parent = _read_yaml((path.parent / base), (*seen, path.resolve()))
    return _merge(parent, values)


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Read a YAML config (with its ``base:`` chain) and apply ``key.sub=value`` overrides.

    Relative ``data.root`` and ``output_dir`` paths are taken relative to the working directory.

    Raises:
        InputError: Missing file, bad YAML, unknown keys, malformed overrides.
    """
    values = _read_yaml(Path(path)) if path else {}
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise InputError(f"override {override!r} is not KEY=VALUE")
        target = values
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise InputError(f"override {key}: {part} is not a section")
        target[parts[-1]] = yaml.safe_load(raw)
    return TrainConfig.from_dict(values)
