"""Repair what the explanation found (issue 22): strategies that act on a verified finding,
and the baselines they must beat, each fine-tuning the final model at the same budget.

A finding is a prototype ``k`` that the final model relies on for class ``c`` (a shortcut
check of the report). i2x knows two things about it that no baseline knows: *where* it is in
every training image (the cells assigned to ``k``), and *which* images carry it (its
presence). The i2x strategies use only those; the true groups of a planted data set are read
by the baselines that are marked as using them (DFR, the oracle) and by the evaluation.

- ``i2x-augment``: counterfactual augmentation. The finding's cells are pasted into training
  images of the other classes (``swap``), or masked, blurred or noised in the images of ``c``,
  so the cue stops predicting ``c``.
- ``i2x-groups``: JTT's mechanism with groups the explanation inferred, (class, ``k``
  present): the minority groups are oversampled to balance.
- ``i2x-dfr``: DFR's last-layer retraining on a held-out set balanced by the i2x groups.
- baselines: ``erm`` (plain fine-tuning), ``jtt`` (upweight the errors of an early
  checkpoint), ``dfr`` (true groups), ``oracle`` (group-balanced sampling, true groups).
"""

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
from i2x.training.loop import make_optimizer, predictions, set_lr, train_step
from i2x.training.pixels import cell_mask, gaussian_blur

USES_TRUE_GROUPS = frozenset({"dfr", "oracle"})


@dataclass(frozen=True)
class Budget:
    """What every strategy gets: epochs over the fit split (as many samples, whatever the
    sampling), the peak learning rate of a cosine schedule, the batch size."""

    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 128
    samples: int = 0  # images per epoch; 0: the whole fit split


def i2x_groups(assignment: torch.Tensor, labels: torch.Tensor, k: int) -> np.ndarray:
    """``(N,)`` group of every image from the explanation alone: ``2 * class + (k present)``.

    Args:
        assignment: ``(N, h, w)`` prototype ids of the images (the final model's).
    """
    present = (assignment == k).flatten(1).any(1)
    return (2 * labels + present.long()).numpy()


def balanced_weights(groups: np.ndarray) -> np.ndarray:
    """Per-sample weights that give every non-empty group the same total weight."""
    ids, counts = np.unique(groups, return_counts=True)
    per = dict(zip(ids.tolist(), (1.0 / counts).tolist(), strict=True))
    return np.array([per[g] for g in groups.tolist()])


def _paste(xb: torch.Tensor, cells: torch.Tensor, donors: torch.Tensor, donor_cells: torch.Tensor) -> torch.Tensor:
    """Copy each donor's finding cells (pixels) into the image at the same place."""
    size = tuple(xb.shape[-2:])
    m = cell_mask(donor_cells, size)
    return xb * (1 - m) + donors * m


def counterfactual(xb: torch.Tensor, yb: torch.Tensor, cells: torch.Tensor, finding_cls: int, how: str, share: float,
                   gen: torch.Generator, donors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Break the finding's link to its class in a batch.

    Args:
        xb: ``(B, C, H, W)`` floats in [0, 1]; yb: ``(B,)``; cells: ``(B, h, w)`` bool, the
            finding's cells in each image.
        how: ``swap``: a ``share`` of the other classes' images get a donor's finding cells
            (``donors``: float images of class ``finding_cls`` with the finding, and their
            cells); ``mask`` / ``blur`` / ``noise``: a ``share`` of the class's images have
            their finding cells replaced by the image mean, a blur or noise.
    """
    pick = torch.rand(len(xb), generator=gen) < share
    if how == "swap":
        assert donors is not None
        chosen = pick & (yb != finding_cls)
        if not chosen.any() or len(donors[0]) == 0:
            return xb
        which = torch.randint(0, len(donors[0]), (int(chosen.sum()),), generator=gen)
        out = xb.clone()
        out[chosen] = _paste(xb[chosen], cells[chosen], donors[0][which], donors[1][which])
        return out
    chosen = pick & (yb == finding_cls) & cells.flatten(1).any(1)
    m = cell_mask(cells & chosen[:, None, None], tuple(xb.shape[-2:]))
    if how == "mask":
        fill = xb.mean(dim=(2, 3), keepdim=True).expand_as(xb)
    elif how == "blur":
        fill = gaussian_blur(xb, 1.5)
    elif how == "noise":
        fill = torch.rand(xb.shape, generator=gen)
    else:
        raise ValueError(f"counterfactual 'how' must be swap, mask, blur or noise, got {how!r}")
    return xb * (1 - m) + fill * m


def finetune_sampled(model: nn.Module, data: DataBundle, weights: np.ndarray | None, budget: Budget, config: Config, seed: int,
                     device: torch.device, transform: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                     ) -> nn.Module:
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


def retrain_last_layer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: np.ndarray, seed: int, device: torch.device,
                       batch_size: int = 1000, c: float = 1.0) -> nn.Module:
    """DFR: refit the final linear layer on features of ``x`` with every group weighted
    equally (a class-balanced logistic regression per group weight), the rest frozen.

    Args:
        x: ``(N, C, H, W)`` uint8 held-out images; y: ``(N,)``; groups: ``(N,)``.
    """
    from sklearn.linear_model import LogisticRegression

    fc = model.net.fc
    feats = []
    hook = fc.register_forward_hook(lambda _m, inp, _out: feats.append(inp[0].detach().cpu()))
    try:
        predictions(model, x, batch_size, device)
    finally:
        hook.remove()
    z = torch.cat(feats).numpy()
    scale = 9.0 if type(model.net).__name__ == "FastNet" else 1.0  # FastNet divides its logits by 9
    clf = LogisticRegression(C=c, max_iter=2000, fit_intercept=fc.bias is not None, random_state=seed)
    clf.fit(z, y.numpy(), sample_weight=balanced_weights(groups) * len(groups))
    with torch.no_grad():
        weight = torch.zeros_like(fc.weight)
        weight[torch.as_tensor(clf.classes_)] = torch.as_tensor(clf.coef_, dtype=fc.weight.dtype) * scale
        fc.weight.copy_(weight)
        if fc.bias is not None:
            bias = torch.full_like(fc.bias, -1e4)
            bias[torch.as_tensor(clf.classes_)] = torch.as_tensor(clf.intercept_, dtype=fc.bias.dtype) * scale
            fc.bias.copy_(bias)
    return model
