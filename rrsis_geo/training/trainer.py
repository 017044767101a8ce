"""``rrsis train``: one loop from one CPU to many GPUs (DDP under torchrun).

A run folder ``output_dir/name`` holds ``config.yaml`` (resolved), ``environment.json``,
``train_log.csv`` (and ``val_log.csv``), ``checkpoints/last`` and ``checkpoints/best`` (selected
on the **val** split) in the ``from_pretrained`` format, plus the trainer state needed for an
exact ``--resume``: optimizer, schedule, scaler, step, epoch, position in the epoch and RNG
state. With ``selector_finish``, a fresh selector is fitted on the finished mask after the last
step (:mod:`rrsis_geo.training.selection`; ``selector_finish.json`` says what it did) and the
run is validated once more.

The data order of every epoch is a function of the seed and the epoch, so a resumed run
continues with exactly the batches and losses the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from rrsis_geo.checkpoints import WEIGHTS_FILE
from rrsis_geo.errors import InputError
from rrsis_geo.geo.writers import atomic_output
from rrsis_geo.nn.crobim import CroBIM
from rrsis_geo.training.config import TrainConfig
from rrsis_geo.training.dataset import ImageGroups, TrainingSamples, collate, collate_groups
from rrsis_geo.training.selection import finish_selector
from rrsis_geo.training.tasks import task_for

__all__ = ["Distributed", "build_model_config", "train", "training_items"]

STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"


@dataclass
class Distributed:
    """Process group facts; a single process when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 logs and saves."""
        return self.rank == 0

    @classmethod
    def setup(cls) -> Distributed:
        """Join the torchrun process group (NCCL on GPU, gloo on CPU) when there is one."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(rank, world_size, local_rank)

    def device(self) -> torch.device:
        """This process's device."""
        return (
            torch.device("cuda", self.local_rank)
            if torch.cuda.is_available()
            else torch.device("cpu")
        )

    def mean(self, value: float) -> float:
        """Mean of a scalar over ranks."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device())
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            dist.barrier()


def build_model_config(config: TrainConfig) -> Any:
    """The recipe's model config: its named config with ``model_overrides`` applied."""
    return task_for(config).model_config(config)


def training_items(config: TrainConfig, model_config: Any, tokenizer: Any) -> Any:
    """The training split as the run's items: samples, or images with all their expressions.

    Returns:
        A :class:`TrainingSamples` (negatives as ``data.negatives``), wrapped in
        :class:`ImageGroups` when ``data.group_by_image``.
    """
    train_set = TrainingSamples(
        _open_split(config, config.data.train_split),
        model_config,
        tokenizer,
        config.data.negatives,
        config.seed,
    )
    return ImageGroups(train_set) if config.data.group_by_image else train_set


def _open_split(config: TrainConfig, split: str) -> Any:
    from rrsis_geo.data.readers import open_dataset

    if not config.data.root:
        raise InputError("data.root is not set")
    return open_dataset(config.data.root, split, config.data.layout)


def train(config: TrainConfig, resume: bool = False, stop_after_steps: int | None = None) -> Path:
    """Train (or resume) a run; returns its folder.

    Args:
        config: The resolved configuration.
        resume: Continue the run in ``output_dir/name`` from its last checkpoint.
        stop_after_steps: Stop (saving a checkpoint) once this many optimizer steps are done in
            total, as an interruption would: for job slots shorter than the run.

    Raises:
        InputError: Bad configuration or data; an existing run without ``resume``.
    """
    from rrsis_geo.training.evaluate import evaluate

    env = Distributed.setup()
    device = env.device()
    run_dir = Path(config.output_dir) / config.name
    last_dir = run_dir / "checkpoints" / "last"
    if resume and not (last_dir / STATE_FILE).is_file():
        raise InputError(f"nothing to resume in {run_dir}")
    if not resume and (run_dir / "checkpoints").exists():
        raise InputError(f"run {run_dir} exists: use --resume, or another name")
    torch.manual_seed(config.seed)
    task = task_for(config)
    model_config = task.model_config(config)
    model: Any = task.build(model_config).to(device)
    tokenizer = task.tokenizer(model_config)
    items = training_items(config, model_config, tokenizer)
    val_samples = _open_split(config, config.data.val_split)
    sampler: DistributedSampler[Any] = DistributedSampler(
        items,
        num_replicas=env.world_size,
        rank=env.rank,
        shuffle=True,
        seed=config.seed,
        drop_last=True,
    )
    # The loader's own generator: creating an epoch's iterator must not draw from the global
    # RNG (dropout uses it), or a resumed run would drift from the uninterrupted one.
    loader = DataLoader(
        items,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collate_groups if config.data.group_by_image else collate,
        num_workers=config.num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    accumulation = max(1, config.optim.grad_accumulation)
    steps_per_epoch = len(loader) // accumulation
    if steps_per_epoch == 0:
        raise InputError(
            f"{len(items)} training items are fewer than one step "
            f"({config.batch_size} x {accumulation} x {env.world_size} processes)"
        )
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(task.parameter_groups(model, config))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.optim.lr_factor(total_steps))
    use_amp = device.type == "cuda" and config.amp in ("bf16", "fp16")
    amp_dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and config.amp == "fp16")
    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "best": None,
        "samples_seen": 0,
    }
    if resume:
        state = _load_state(last_dir, model, optimizer, scheduler, scaler)
    network: Any = model
    if env.world_size > 1:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.local_rank] if device.type == "cuda" else None
        )
    logs = _RunLogs(run_dir, config, env) if env.main else None
    if logs is not None and not resume:
        logs.start(model_config)
    started = time.perf_counter()
    model.train()
    micro = 0
    samples_in_step = 0
    running_loss = 0.0
    stop = stop_after_steps if stop_after_steps is not None else total_steps
    bar = _StepBar(total_steps, state["step"]) if env.main else None
    while state["step"] < min(total_steps, stop):
        sampler.set_epoch(state["epoch"])
        for batch_index, batch in enumerate(loader):
            if batch_index < state["batch_in_epoch"]:
                continue
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            sync = (micro + 1) % accumulation == 0
            context = (
                network.no_sync() if env.world_size > 1 and not sync else contextlib.nullcontext()
            )
            with context, torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss = task.loss(network, batch, config)
                scaler.scale(loss / accumulation).backward()
            running_loss += float(loss.detach()) / accumulation
            micro += 1
            samples_in_step += batch["mask"].shape[0]
            if not sync:
                continue
            if config.optim.clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state["step"] += 1
            state["batch_in_epoch"] = batch_index + 1
            state["samples_seen"] += round(env.mean(samples_in_step) * env.world_size)
            samples_in_step = 0
            loss_value = env.mean(running_loss)
            if bar is not None:
                bar.update(state["step"], loss_value)
            running_loss = 0.0
            step = state["step"]
            if logs is not None and (step % config.log_every == 0 or step == total_steps):
                logs.train_row(
                    step,
                    state,
                    loss_value,
                    [float(rate) for rate in scheduler.get_last_lr()],
                    optimizer,
                    time.perf_counter() - started,
                )
            at_end = step >= min(total_steps, stop)
            if config.eval_every and (step % config.eval_every == 0 or step == total_steps):
                _validate(
                    model, tokenizer, val_samples, env, config, state, logs, evaluate, run_dir
                )
            if step % config.checkpoint_every == 0 or at_end:
                _save_state(last_dir, model, tokenizer, optimizer, scheduler, scaler, state, env)
            if at_end:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            if not config.eval_every:
                _validate(
                    model, tokenizer, val_samples, env, config, state, logs, evaluate, run_dir
                )
            continue
        break
    if bar is not None:
        bar.close()
    if (
        config.selector_finish.images > 0
        and getattr(model, "selector", None) is not None
        and state["step"] >= total_steps
        and not state.get("selector_finished", False)
    ):
        facts = finish_selector(model, items, config, device)
        model.train()
        if logs is not None:
            logs.selector_finish(facts)
        state["selector_finished"] = True
        _validate(model, tokenizer, val_samples, env, config, state, logs, evaluate, run_dir)
        _save_state(last_dir, model, tokenizer, optimizer, scheduler, scaler, state, env)
    env.barrier()
    if env.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return run_dir


def _validate(
    model: CroBIM,
    tokenizer: Any,
    samples: Any,
    env: Distributed,
    config: TrainConfig,
    state: dict[str, Any],
    logs: _RunLogs | None,
    evaluate: Any,
    run_dir: Path,
) -> None:
    result = evaluate(model, tokenizer, samples, batch_size=config.batch_size, env=env)
    model.train()
    if logs is None:
        return
    logs.val_row(state["step"], state["epoch"], result)
    if state["best"] is None or result.miou > state["best"]:
        state["best"] = result.miou
        best = run_dir / "checkpoints" / "best"
        model.save_pretrained(best, tokenizer)
        (best / "val_metrics.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def _save_state(
    folder: Path,
    model: CroBIM,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    state: dict[str, Any],
    env: Distributed,
) -> None:
    if env.main:
        model.save_pretrained(folder, tokenizer)
        tensors = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        training_weights = model.state_dict()
        if set(training_weights) != _checkpoint_keys(folder):
            # The checkpoint holds a transformed model (LoRA merged): resuming needs the
            # weights as they train, adapters apart.
            tensors["model"] = training_weights
        with atomic_output(folder / STATE_FILE, overwrite=True) as temporary:
            torch.save(tensors, temporary)
        with atomic_output(folder / STATE_JSON, overwrite=True) as temporary:
            temporary.write_text(json.dumps(state, indent=2) + "\n")
    env.barrier()


def _load_state(
    folder: Path, model: CroBIM, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any
) -> dict[str, Any]:
    from safetensors.torch import load_file

    # weights_only: only tensors and plain containers may come out of this file.
    tensors = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    weights = tensors.get("model") or load_file(str(folder / WEIGHTS_FILE))
    model.load_state_dict(weights, strict=True)
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    scaler.load_state_dict(tensors["scaler"])
    torch.set_rng_state(tensors["torch_rng"])
    return dict(json.loads((folder / STATE_JSON).read_text()))


def _checkpoint_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
        return set(weights.keys())


class _StepBar:
    """A progress bar of optimizer steps on stderr, for people at a terminal only."""

    def __init__(self, total: int, done: int) -> None:
        self._progress: Any = None
        if not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("steps"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("steps", total=total, completed=done, loss="-")
        self._progress.start()

    def update(self, step: int, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, loss=f"{loss:.4f}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


class _RunLogs:
    """CSV logs (and TensorBoard when asked) in the run folder; rank 0 only."""

    TRAIN_FIELDS = (
        "step",
        "epoch",
        "loss",
        "lr_encoder",
        "lr_new",
        "samples_per_second",
        "elapsed_s",
    )

    def __init__(self, run_dir: Path, config: TrainConfig, env: Distributed) -> None:
        self.run_dir = run_dir
        self.config = config
        self.env = env
        self.tensorboard: Any = None
        run_dir.mkdir(parents=True, exist_ok=True)
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise InputError("tensorboard: true needs the tensorboard package") from None
            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        self._started = time.perf_counter()
        self._samples_at_start: int | None = None

    def start(self, model_config: Any) -> None:
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.config.to_dict()))
        environment = {
            "command": sys.argv,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "device": str(self.env.device()),
            "world_size": self.env.world_size,
            "cuda": torch.version.cuda,
            "model": model_config.to_dict(),
        }
        (self.run_dir / "environment.json").write_text(json.dumps(environment, indent=2) + "\n")

    def _append(self, name: str, fields: tuple[str, ...], row: dict[str, Any]) -> None:
        path = self.run_dir / name
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerow(row)

    def train_row(
        self,
        step: int,
        state: dict[str, Any],
        loss: float,
        rates: list[float],
        optimizer: torch.optim.Optimizer,
        elapsed: float,
    ) -> None:
        names = [group["name"] for group in optimizer.param_groups]
        lr = dict(zip(names, rates, strict=True))
        if self._samples_at_start is None:
            self._samples_at_start = state["samples_seen"]
        seen = state["samples_seen"] - self._samples_at_start
        row = {
            "step": step,
            "epoch": state["epoch"],
            "loss": f"{loss:.6f}",
            "lr_encoder": f"{lr.get('encoder', lr.get('encoder_no_decay', 0.0)):.3e}",
            "lr_new": f"{lr.get('new', lr.get('new_no_decay', 0.0)):.3e}",
            "samples_per_second": f"{seen / max(elapsed, 1e-9):.3f}",
            "elapsed_s": f"{elapsed:.1f}",
        }
        self._append("train_log.csv", self.TRAIN_FIELDS, row)
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, step)

    def selector_finish(self, facts: dict[str, Any]) -> None:
        path = self.run_dir / "selector_finish.json"
        path.write_text(json.dumps(facts, indent=2) + "\n")

    def val_row(self, step: int, epoch: int, result: Any) -> None:
        row = {"step": step, "epoch": epoch, "miou": result.miou, "oiou": result.oiou}
        row.update({f"pr@{k:g}": v for k, v in result.precision.items()})
        self._append("val_log.csv", tuple(row), row)
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("val/miou", result.miou, step)
            self.tensorboard.add_scalar("val/oiou", result.oiou, step)
