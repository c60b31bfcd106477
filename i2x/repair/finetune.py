"""Fine-tuning at the repair's budget: every strategy and baseline that trains the whole model
(ERM, JTT, the oracle, i2x-augment, i2x-groups) gets the same epochs, images and rate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from i2x.platform.config import Config
from i2x.training.batches import augment, to_float
from i2x.training.data import DataBundle
from i2x.training.loop import make_optimizer, set_lr, train_step

Transform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Budget:
    """What every strategy gets: epochs over the fit split (as many samples, whatever the
    sampling), the peak learning rate of a cosine schedule, the batch size."""

    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 128
    samples: int = 0  # images per epoch; 0: the whole fit split


def finetune_sampled(model: nn.Module, data: DataBundle, weights: np.ndarray | None, budget: Budget, config: Config, seed: int,
                     device: torch.device, transform: Transform | None = None) -> nn.Module:
    """Fine-tune ``model`` in place for ``budget.epochs`` x ``budget.samples`` (0: the fit
    split's size) samples, drawn with replacement by ``weights`` over the fit split (None: a
    seeded shuffle), each batch passed through ``transform(x, y, fit positions, generator)``
    when given."""
    fit = data.fit_idx
    gen = torch.Generator().manual_seed(seed * 7_919 + 101)
    optimizer = make_optimizer(model, config, lr=budget.lr)
    n = min(budget.samples, len(fit)) if budget.samples else len(fit)
    steps_per_epoch = math.ceil(n / budget.batch_size)
    total = budget.epochs * steps_per_epoch
    probs = None if weights is None else torch.as_tensor(weights / weights.sum(), dtype=torch.float64)
    model.train()
    step = 0
    for _ in range(budget.epochs):
        order = torch.randperm(len(fit), generator=gen)[:n] if probs is None else torch.multinomial(probs, n, replacement=True, generator=gen)
        for start in range(0, n, budget.batch_size):
            pos = order[start : start + budget.batch_size]
            idx = fit[pos]
            xb, yb = to_float(data.train_x[idx]), data.train_y[idx]
            if transform is not None:
                xb = transform(xb, yb, pos, gen)
            if config.data.augment:
                xb = augment(xb, gen, config.data.translate)
            set_lr(optimizer, budget.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total))))
            train_step(model, optimizer, xb.to(device), yb.to(device), config.train.label_smoothing)
            step += 1
    model.eval()
    return model
