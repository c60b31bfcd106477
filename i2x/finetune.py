"""Targeted fine-tuning from the final checkpoint (METHOD step 8): a perturbed phase, then a
full phase, with validation accuracy reported after every epoch."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from i2x.config import Config
from i2x.data import DataBundle, augment, iterate, to_float
from i2x.perturbation import PERTURBATIONS, Plan, contains, dropped, pixel_mask
from i2x.training import evaluate, make_optimizer, train_step

EpochFn = Callable[[int, float], None]


def finetune(
    model: nn.Module,
    data: DataBundle,
    assignment: torch.Tensor,
    plan: Plan,
    config: Config,
    seed: int,
    device: torch.device,
    on_epoch: EpochFn | None = None,
) -> list[float]:
    """Fine-tune ``model`` in place by ``plan``.

    Args:
        assignment: ``(len(train_x), h, w)`` prototype ids of every training image.
        on_epoch: called ``(epoch, val_accuracy)`` after each epoch; may raise (pruning).

    Returns:
        Validation accuracy after each epoch.
    """
    t = config.tune
    optimizer = make_optimizer(model, config, lr=plan.lr)
    has_target = contains(assignment, plan.targets)
    kind = PERTURBATIONS.get(plan.kind)
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    perturbed_pool = dropped(data.fit_idx, has_target, plan.alpha, gen) if kind and kind.drops else data.fit_idx
    val_x, val_y = data.train_x[data.val_idx], data.train_y[data.val_idx]
    total_epochs = plan.epochs_perturbed + plan.epochs_full
    bs = config.train.batch_size
    sizes = []
    for epoch in range(total_epochs):
        perturbing = kind is not None and epoch < plan.epochs_perturbed and bool(plan.targets)
        pool = perturbed_pool if perturbing else data.fit_idx
        order = torch.Generator().manual_seed(seed * 100_003 + epoch)
        pool = pool[torch.randperm(len(pool), generator=order)]
        if t.epoch_samples and t.epoch_samples < len(pool):
            pool = pool[: t.epoch_samples]
        sizes.append(len(pool))
    total_steps = sum(math.ceil(n / bs) for n in sizes)
    step = 0
    history = []
    model.train()
    for epoch in range(total_epochs):
        perturbing = kind is not None and epoch < plan.epochs_perturbed and bool(plan.targets)
        pool = perturbed_pool if perturbing else data.fit_idx
        order = torch.Generator().manual_seed(seed * 100_003 + epoch)
        pool = pool[torch.randperm(len(pool), generator=order)][: sizes[epoch]]
        for start in range(0, len(pool), bs):
            idx = pool[start : start + bs]
            xb = to_float(data.train_x[idx])
            batch_gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            if perturbing and kind.apply is not None:
                mask = pixel_mask(assignment[idx], plan.targets, tuple(xb.shape[-2:]))
                xb = kind.apply(xb, mask, plan.alpha, batch_gen)
            if config.data.augment:
                xb = augment(xb, batch_gen)
            for group in optimizer.param_groups:  # cosine over the whole fine-tuning
                group["lr"] = plan.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps)))
            train_step(model, optimizer, xb.to(device), data.train_y[idx].to(device))
            step += 1
        acc = evaluate(model, val_x, val_y, config.train.eval_batch_size, device)["accuracy"]
        model.train()
        history.append(acc)
        if on_epoch:
            on_epoch(epoch, acc)
    model.eval()
    return history


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

