"""Targeted fine-tuning from the final checkpoint (METHOD step 8): a perturbed phase, then a
full phase, with validation accuracy reported after every epoch."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from i2x.platform.config import Config
from i2x.training.batches import augment, iterate, to_float
from i2x.training.data import DataBundle
from i2x.training.loop import evaluate, make_optimizer, set_lr, train_step
from i2x.tuning.perturbation import PERTURBATIONS, Plan, affected, curate, pixel_mask, target_cells

EpochFn = Callable[[int, float], None]


@dataclass(frozen=True)
class FinetuneResult:
    """One fine-tuning run.

    Attributes:
        history: validation accuracy after each epoch.
        stats: what the perturbed phase trained on (see :func:`perturbed_pool`).
        digest: SHA-256 of the final weights: two strategies that trained alike share it.
    """

    history: list[float]
    stats: dict[str, Any]
    digest: str


def affected_mask(plan: Plan, data: DataBundle, assignment: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool over the training set: the images ``plan`` acts on (none without targets)."""
    if not plan.targets:
        return torch.zeros(len(data.train_y), dtype=torch.bool)
    return affected(assignment, data.train_y, plan.targets, plan.scope)


def perturbed_pool(plan: Plan, data: DataBundle, assignment: torch.Tensor, config: Config, seed: int,
                   hit: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The fit-split positions of the perturbed phase, and what they are.

    ``drop`` removes ``alpha`` of the affected images, never more than
    ``tune.max_class_drop`` of a class; ``upweight`` repeats the affected images
    ``alpha * (tune.upweight_max - 1)`` extra times; pixel kinds keep the split as is.

    Args:
        hit: :func:`affected_mask` of the plan, when the caller already has it.

    Returns:
        positions, and stats: ``n_affected``, ``n_dropped``, ``n_added``, ``capped_classes``,
        ``class_counts`` (of the pool), ``size``.
    """
    kind = PERTURBATIONS.get(plan.kind)
    labels = data.train_y
    m = len(data.classes)
    hit = affected_mask(plan, data, assignment) if hit is None else hit
    pool, dropped, capped, added = data.fit_idx, 0, [], 0
    if kind is not None and plan.targets:
        gen = torch.Generator().manual_seed(seed * 7919 + 17)
        if kind.drops:
            cur = curate(data.fit_idx, hit, plan.alpha, gen, labels, target_cells(assignment, plan.targets), config.tune.max_class_drop, m)
            pool, dropped, capped = cur.kept, sum(cur.dropped_per_class), [data.classes[c] for c in cur.capped]
        elif kind.oversamples:
            chosen = data.fit_idx[hit[data.fit_idx]]
            extra = plan.alpha * (config.tune.upweight_max - 1)
            whole, part = int(extra), extra - int(extra)
            n_part = int(round(part * len(chosen)))
            repeats = [chosen] * whole + [chosen[torch.randperm(len(chosen), generator=gen)[:n_part]]]
            pool = torch.cat([data.fit_idx, *repeats])
            added = len(pool) - len(data.fit_idx)
    counts = torch.bincount(labels[pool], minlength=m).tolist()
    return pool, {"n_affected": int(hit[data.fit_idx].sum()), "n_dropped": dropped, "n_added": added, "capped_classes": capped,
                  "class_counts": dict(zip(data.classes, counts, strict=True)), "size": len(pool)}


def finetune(
    model: nn.Module,
    data: DataBundle,
    assignment: torch.Tensor,
    plan: Plan,
    config: Config,
    seed: int,
    device: torch.device,
    on_epoch: EpochFn | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place by ``plan``.

    Args:
        assignment: ``(len(train_x), h, w)`` prototype ids of every training image.
        on_epoch: called ``(epoch, val_accuracy)`` after each epoch; may raise (pruning).
    """
    optimizer = make_optimizer(model, config, lr=plan.lr)
    kind = PERTURBATIONS.get(plan.kind)
    hit = affected_mask(plan, data, assignment)
    pool_p, stats = perturbed_pool(plan, data, assignment, config, seed, hit)
    val_x, val_y = data.train_x[data.val_idx], data.train_y[data.val_idx]
    total_epochs = plan.epochs_perturbed + plan.epochs_full
    bs = config.train.batch_size
    pools = []
    for epoch in range(total_epochs):
        perturbing = kind is not None and epoch < plan.epochs_perturbed and bool(plan.targets)
        pool = pool_p if perturbing else data.fit_idx
        order = torch.Generator().manual_seed(seed * 100_003 + epoch)
        pool = pool[torch.randperm(len(pool), generator=order)]
        if plan.epoch_samples and plan.epoch_samples < len(pool):
            pool = pool[: plan.epoch_samples]
        pools.append((pool, perturbing))
    stats["epoch_fraction"] = min(1.0, plan.epoch_samples / len(data.fit_idx)) if plan.epoch_samples else 1.0
    total_steps = sum(math.ceil(len(p) / bs) for p, _ in pools)
    step = 0
    history = []
    model.train()
    for epoch, (pool, perturbing) in enumerate(pools):
        for start in range(0, len(pool), bs):
            idx = pool[start : start + bs]
            xb = to_float(data.train_x[idx])
            batch_gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            if perturbing and kind.apply is not None:
                cells = torch.where(hit[idx][:, None, None], assignment[idx], torch.full_like(assignment[idx], -1))
                xb = kind.apply(xb, pixel_mask(cells, plan.targets, tuple(xb.shape[-2:])), plan.alpha, batch_gen)
            if config.data.augment:
                xb = augment(xb, batch_gen, config.data.translate)
            set_lr(optimizer, plan.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps))))  # cosine over the fine-tuning
            train_step(model, optimizer, xb.to(device), data.train_y[idx].to(device), config.train.label_smoothing)
            step += 1
        acc = evaluate(model, val_x, val_y, config.train.eval_batch_size, device)["accuracy"]
        model.train()
        history.append(acc)
        if on_epoch:
            on_epoch(epoch, acc)
    model.eval()
    return FinetuneResult(history, stats, weights_digest(model))


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's state, in key order."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def evaluate_on_test(model: nn.Module, data: DataBundle, pairs: list[tuple[int, int]], device: torch.device, batch_size: int = 1000) -> dict:
    """Test accuracy and, per class pair, confusions summed over both directions."""
    model.eval()
    preds = torch.cat([model(xb.to(device)).argmax(1).cpu() for xb, _ in iterate(data.test_x, data.test_y, batch_size)])
    y = data.test_y
    conf = {}
    for a, b in pairs:
        conf[f"{data.classes[a]}<->{data.classes[b]}"] = int((((y == a) & (preds == b)) | ((y == b) & (preds == a))).sum())
    return {"accuracy": float((preds == y).float().mean()), "confusions": conf}
