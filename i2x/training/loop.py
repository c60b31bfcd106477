"""Seeded, resumable training with the dense-early checkpoint schedule.

Determinism and exact resume come from deriving every random draw from
``(seed, epoch)`` or ``(seed, step)``: the data order of an epoch is a permutation
seeded by the epoch, the augmentation of a batch is seeded by its step, and the
learning rate is a pure function of the step. A run killed after checkpoint ``s``
reloads weights and optimizer state and replays exactly the same batches from
``s + 1``, so it ends with bit-identical weights on the same machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2x.platform.config import Config
from i2x.platform.config_io import device_kind
from i2x.platform.errors import I2XError
from i2x.platform.progress import Progress
from i2x.training.batches import augment, flip_schedule, iterate, to_float
from i2x.training.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointInfo,
    checkpoint_name,
    checkpoint_steps,
    epoch_of,
    list_checkpoints,
    read_checkpoint,
    save_checkpoint,
    steps_per_epoch,
    write_index,
)
from i2x.training.data import DataBundle
from i2x.training.models import MODELS, Classifier, build_model, load_weights, resolve_auto

MetricsFn = Callable[[int, dict[str, float]], None]
CheckpointFn = Callable[[Path, CheckpointInfo], None]


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    model: Classifier
    checkpoints: list[CheckpointInfo]
    folder: Path
    resumed_from: int
    final_metrics: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(device_kind(name))
    if name == "cuda" and not torch.cuda.is_available():
        raise I2XError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if name not in ("cpu", "cuda"):
        raise I2XError(f"train.device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


def _diverged(step: int, what: str, config: Config, index: list[CheckpointInfo]) -> None:
    kept = f"checkpoints up to step {index[-1].step} are kept" if index else "no checkpoint was written"
    raise I2XError(f"training diverged at step {step}: {what}; lower train.lr (now {config.train.lr:g}); {kept}")


def resolve_model(config: Config) -> Config:
    """``model.name=auto`` resolved for ``train.device`` (see :data:`i2x.training.models.AUTO_MODELS`);
    an unknown name is refused here, before any MLflow run is opened."""
    if config.model.name != "auto" and config.model.name not in MODELS:
        raise I2XError(f"unknown model '{config.model.name}'; choose one of {', '.join(sorted(MODELS))}, or auto")
    model = resolve_auto(config.model, resolve_device(config.train.device))
    return config if model == config.model else dataclasses.replace(config, model=model)


def fingerprint(config: Config) -> str:
    """Hash of everything that changes the trained weights (not the explain section)."""
    d = config.to_dict()
    train = {k: v for k, v in d["train"].items() if k not in ("log_every", "eval_batch_size", "register_as")}
    parts = {"seed": d["seed"], "data": d["data"], "model": d["model"], "train": train}
    if d["plant"]["kind"] != "none":  # a clean run keeps the folder it had before planting existed
        parts["plant"] = {k: v for k, v in d["plant"].items() if k != "group_file"}
    key = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def run_folder(config: Config) -> Path:
    """Local folder that holds this config's checkpoints; the same config resumes there."""
    return Path(config.work_dir) / f"train-{config.data.name}-{config.model.name}-{fingerprint(config)}"


def lr_at(step: int, total: int, config: Config) -> float:
    """Learning rate for optimizer step ``step`` (0-based), a pure function of the step."""
    base, kind = config.train.lr, config.train.lr_schedule
    if kind == "constant":
        return base
    progress = step / max(1, total)
    if kind == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "onecycle":  # linear warm-up over 15%, cosine down to base/1000
        warm = 0.15
        if progress < warm:
            return base * (0.04 + 0.96 * progress / warm)
        return base * (0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm))))
    if kind == "triangle":  # airbench: 0.2x rising linearly to the peak at 23%, then down to 0.07x
        peak = 0.23
        if progress < peak:
            return base * (0.2 + 0.8 * progress / peak)
        return base * (1.0 - 0.93 * (progress - peak) / (1 - peak))
    raise I2XError(f"train.lr_schedule must be onecycle, cosine, constant or triangle, got '{kind}'")


def make_optimizer(model: nn.Module, config: Config, lr: float | None = None) -> torch.optim.Optimizer:
    """The configured optimizer; ``lr`` overrides ``train.lr`` (fine-tuning uses its own).

    With ``train.bias_lr_scale != 1`` the BatchNorm parameters form a second group whose
    ``lr_scale`` :func:`set_lr` applies, and whose weight decay is divided by the scale.
    """
    t = config.train
    lr = t.lr if lr is None else lr
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": params, "lr_scale": 1.0, "weight_decay": t.weight_decay}]
    if t.bias_lr_scale != 1.0:
        norm = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
        groups = [{"params": [p for p in params if id(p) not in norm], "lr_scale": 1.0, "weight_decay": t.weight_decay},
                  {"params": [p for p in params if id(p) in norm], "lr_scale": t.bias_lr_scale,
                   "weight_decay": t.weight_decay / t.bias_lr_scale}]
    if t.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=t.momentum, nesterov=t.momentum > 0)
    elif t.optimizer == "adam":
        optimizer = torch.optim.AdamW(groups, lr=lr)
    else:
        raise I2XError(f"train.optimizer must be sgd or adam, got '{t.optimizer}'")
    set_lr(optimizer, lr)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to ``lr`` times its ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class Lookahead:
    """airbench's lookahead: every ``every`` steps the weights (and BatchNorm statistics)
    move to ``avg <- lerp(avg, weights, 1 - rho)`` and are replaced by ``avg``, with
    ``rho = 0.95**every * (step / total)**3`` (little averaging early, strong at the end)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.avg: dict[str, torch.Tensor] | None = None  # set at the first step past the start, or from a checkpoint

    @torch.no_grad()
    def step(self, model: nn.Module, done: int, total: int) -> None:
        if done % self.every:
            return
        weights = model.state_dict()
        if self.avg is None:
            self.avg = {k: v.detach().clone() for k, v in weights.items() if v.is_floating_point()}
            return
        rho = 0.95 ** self.every * (done / total) ** 3
        for k, avg in self.avg.items():
            avg.lerp_(weights[k], 1 - rho)
        self.copy_back(model)

    @torch.no_grad()
    def copy_back(self, model: nn.Module) -> None:
        if self.avg is not None:
            weights = model.state_dict()
            for k, avg in self.avg.items():
                weights[k].copy_(avg)


def _tta_logits(model: nn.Module, xb: torch.Tensor, level: int) -> torch.Tensor:
    """airbench's test-time augmentation: level 1 averages the mirror image; level 2 also
    averages (with weight 1/2) the mirrored views shifted one pixel up-left and down-right."""
    def mirrored(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * model(x) + 0.5 * model(x.flip(-1)) if level >= 1 else model(x)

    logits = mirrored(xb)
    if level >= 2:
        h, w = xb.shape[-2:]
        padded = nn.functional.pad(xb, (1, 1, 1, 1), mode="reflect")
        shifted = 0.5 * mirrored(padded[..., :h, :w]) + 0.5 * mirrored(padded[..., 2:, 2:])
        logits = 0.5 * logits + 0.5 * shifted
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
             tta_level: int = 0) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on uint8 images ``x`` (with test-time
    augmentation at ``tta_level`` > 0, see :func:`_tta_logits`)."""
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for xb, yb in iterate(x, y, batch_size):
        logits = _tta_logits(model, xb.to(device), tta_level)
        yb = yb.to(device)
        loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        n += len(yb)
    return {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1)}


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """``(N,)`` predicted classes of ``model`` on uint8 images ``x``."""
    model.eval()
    return torch.cat([model(xb.to(device)).argmax(1).cpu() for xb, _ in iterate(x, torch.zeros(len(x), dtype=torch.long), batch_size)])


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
               label_smoothing: float = 0.0) -> tuple[float, int]:
    """One SGD step on a batch; returns the batch loss and the number of correct predictions."""
    logits = model(xb)
    loss = nn.functional.cross_entropy(logits, yb, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), int((logits.argmax(1) == yb).sum())


def checkpoint_payload(
    model: Classifier, optimizer: torch.optim.Optimizer, step: int, spe: int, metrics: dict[str, float], config: Config, data: DataBundle,
    lookahead: Lookahead | None = None,
) -> dict[str, Any]:
    """Everything needed to resume or analyse, in ``weights_only``-safe types."""
    return {
        "lookahead": None if lookahead is None or lookahead.avg is None else {k: v.cpu() for k, v in lookahead.avg.items()},
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "epoch": epoch_of(step, spe),
        "steps_per_epoch": spe,
        "metrics": metrics,
        "config": config.to_dict(),
        "arch": model.arch,
        "target_layer": model.target_layer,
        "data": {
            "name": data.name,
            "classes": list(data.classes),
            "channels": data.channels,
            "image_size": data.image_size,
            "mean": list(data.mean),
            "std": list(data.std),
        },
    }


def train(
    config: Config,
    data: DataBundle,
    folder: Path | None = None,
    on_metrics: MetricsFn | None = None,
    on_checkpoint: CheckpointFn | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``config.model`` on ``data``, checkpointing on the schedule; resume if possible.

    Args:
        config: resolved config.
        data: from :func:`i2x.training.data.load_data`.
        folder: where checkpoints go; defaults to :func:`run_folder`. Existing
            checkpoints there are resumed from.
        on_metrics: called ``(step, metrics)`` every ``train.log_every`` steps and at checkpoints.
        on_checkpoint: called with each new checkpoint file after it is written.

    Returns:
        A :class:`TrainResult` with the final model and the checkpoint index.
    """
    config = resolve_model(config)
    folder = folder or run_folder(config)
    device = resolve_device(config.train.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.channels, data.num_classes, data.mean, data.std).to(device)
    optimizer = make_optimizer(model, config)

    n_fit = len(data.fit_idx)
    bs = config.train.batch_size
    spe = steps_per_epoch(n_fit, bs)
    total = spe * config.train.epochs
    schedule = checkpoint_steps(spe, config.train.epochs, config.train.checkpoint_fractions, config.train.checkpoint_every_epoch)

    index: list[CheckpointInfo] = []
    start = 0
    lookahead = Lookahead(config.train.lookahead_every) if config.train.lookahead_every else None
    existing = list_checkpoints(folder)
    if existing:
        payload = read_checkpoint(existing[-1])
        load_weights(model, payload["model"], str(existing[-1]))
        optimizer.load_state_dict(payload["optimizer"])
        start = int(payload["step"])
        if lookahead is not None and payload.get("lookahead") is not None:
            lookahead.avg = {k: v.to(device) for k, v in payload["lookahead"].items()}
        index_path = folder / "index.json"
        if index_path.is_file():
            index = [CheckpointInfo(**row) for row in json.loads(index_path.read_text()) if row["step"] <= start]

    # the training images live on the device (150 MB for CIFAR-10): batches and their
    # augmentation never cross the bus; the random draws still come from CPU generators
    fit_x, fit_y = data.train_x[data.fit_idx].to(device), data.train_y[data.fit_idx].to(device)
    if not existing and model.needs_data_init:  # set from the data once; the checkpoints carry it
        model.init_from_data(to_float(fit_x[:5000]))
    t = config.train
    lookahead_from = math.ceil(t.lookahead_start * spe)
    val_x, val_y = data.train_x[data.val_idx], data.train_y[data.val_idx]
    window_loss, window_correct, window_n = 0.0, 0, 0
    recent: tuple[float, float] | None = None
    bar = Progress("train", total=total, unit="step", initial=start, enabled=progress)
    model.train()
    perm: torch.Tensor | None = None
    flips: torch.Tensor | None = None
    for step in range(start, total):
        epoch, pos = divmod(step, spe)
        if perm is None or pos == 0:
            perm = torch.randperm(n_fit, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            flips = flip_schedule(n_fit, config.seed, epoch) if config.data.flip == "alternating" else None
        idx = perm[pos * bs : (pos + 1) * bs]
        xb, yb = to_float(fit_x[idx.to(device)]), fit_y[idx.to(device)]
        if config.data.augment:
            xb = augment(xb, torch.Generator().manual_seed(config.seed * 1_000_003 + step), config.data.translate,
                         None if flips is None else flips[idx])
        set_lr(optimizer, lr_at(step, total, config))
        loss, correct = train_step(model, optimizer, xb, yb, t.label_smoothing)
        if not math.isfinite(loss):
            _diverged(step + 1, f"the loss is {loss}", config, index)

        done = step + 1
        if lookahead is not None and done > lookahead_from:
            lookahead.step(model, done, total)
            if pos == spe - 1:  # every epoch ends on the averaged weights (and so does every checkpoint there)
                lookahead.copy_back(model)
        window_loss += loss * len(yb)
        window_correct += correct
        window_n += len(yb)
        # the line shows a running mean that moves every step (about the last 50), never a stale window's
        recent = (loss, correct / len(yb)) if recent is None else (0.98 * recent[0] + 0.02 * loss, 0.98 * recent[1] + 0.02 * correct / len(yb))
        bar.set_postfix(f"loss {recent[0]:.3f}, acc {recent[1]:.3f} (running mean of ~50 steps)")
        bar.update(1)
        if done % config.train.log_every == 0 or done in schedule:
            metrics = {"loss": window_loss / window_n, "accuracy": window_correct / window_n, "lr": optimizer.param_groups[0]["lr"]}
            if on_metrics:
                on_metrics(done, metrics)
            window_loss, window_correct, window_n = 0.0, 0, 0
        if done in schedule:
            val = evaluate(model, val_x, val_y, config.train.eval_batch_size, device)
            metrics = {"val_accuracy": val["accuracy"], "val_loss": val["loss"]}
            model.train()
            if not all(bool(torch.isfinite(w).all()) for w in model.state_dict().values() if w.is_floating_point()):
                _diverged(done, "the weights are not finite", config, index)  # never published as a checkpoint
            path = folder / checkpoint_name(done)
            save_checkpoint(path, checkpoint_payload(model, optimizer, done, spe, metrics, config, data, lookahead))
            info = CheckpointInfo(step=done, epoch=epoch_of(done, spe), metrics=metrics, file=path.name)
            index = [row for row in index if row.step != done] + [info]
            write_index(folder, index)
            if on_metrics:
                on_metrics(done, metrics)
            if on_checkpoint:
                on_checkpoint(path, info)
    bar.close()
    model.eval()
    test = evaluate(model, data.test_x, data.test_y, t.eval_batch_size, device)
    final = {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}
    if t.tta_level:
        final["test_accuracy_tta"] = evaluate(model, data.test_x, data.test_y, t.eval_batch_size, device, t.tta_level)["accuracy"]
    return TrainResult(model=model, checkpoints=index, folder=folder, resumed_from=start, final_metrics=final)
