"""Targeted perturbations (METHOD step 8, a registry): drop, upweight, mask, blur, noise.

Applied on the fly to training batches; the data on disk is never rewritten. Which
samples contain a target prototype comes from the final model's assignment of every
training sample (see :meth:`i2x.explanation.prototypes.Prototypes.assign`).

Which samples a target *affects* is its scope: by default (OURS) only the images of its
pair's two classes that contain it. Prototypes are mostly class-specific (24 of 32 on
MNIST reach 80% coverage in exactly one class), so the paper's literal rule, "exclude every
sample that contains an uncertain prototype", deleted whole classes (MNIST class 7: 0
images left). The literal rule is an empty scope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from i2x.platform.errors import I2XError
from i2x.training.pixels import cell_mask, gaussian_blur


def contains(assignment: torch.Tensor, targets: tuple[int, ...]) -> torch.Tensor:
    """``(N,)`` bool: sample i has at least one location assigned to a target prototype.

    Args:
        assignment: ``(N, h, w)`` prototype ids.
    """
    if not targets:
        return torch.zeros(assignment.shape[0], dtype=torch.bool)
    hit = torch.isin(assignment, torch.tensor(targets, dtype=assignment.dtype))
    return hit.flatten(1).any(1)


def pixel_mask(assignment: torch.Tensor, targets: tuple[int, ...], size: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, H, W)`` float mask of the pixels under target prototypes' grid cells."""
    return cell_mask(torch.isin(assignment, torch.tensor(targets, dtype=assignment.dtype)), size)


# An in-batch perturbation: (pixels (B,C,H,W) in [0,1], mask (B,1,H,W), alpha, generator) -> pixels
PixelFn = Callable[[torch.Tensor, torch.Tensor, float, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class PerturbationKind:
    """``drops`` kinds remove affected samples, ``oversamples`` kinds repeat them (the
    explanation-guided version of JTT, "Just Train Twice"); the others edit pixels in batches."""

    drops: bool
    apply: PixelFn | None = None
    oversamples: bool = False


def _mask(x: torch.Tensor, m: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    fill = x.mean(dim=(0, 2, 3), keepdim=True)  # the batch's mean colour, not black
    return x * (1 - alpha * m) + fill * (alpha * m)


def _blur(x: torch.Tensor, m: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    return x * (1 - alpha * m) + gaussian_blur(x, 1.5) * (alpha * m)


def _noise(x: torch.Tensor, m: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen) * 0.5
    return (x + alpha * m * noise).clamp(0, 1)


PERTURBATIONS: dict[str, PerturbationKind] = {
    "drop": PerturbationKind(drops=True),  # PAPER's curation: alpha = fraction dropped
    "upweight": PerturbationKind(drops=False, oversamples=True),  # alpha scales the repeat factor
    "mask": PerturbationKind(drops=False, apply=_mask),
    "blur": PerturbationKind(drops=False, apply=_blur),
    "noise": PerturbationKind(drops=False, apply=_noise),
}


@dataclass(frozen=True)
class Plan:
    """One fine-tuning recipe.

    Attributes:
        kind: a key of :data:`PERTURBATIONS`, or ``none`` (full->full).
        alpha: strength in [0, 1]; for ``drop`` the fraction of affected samples dropped,
            for ``upweight`` the repeat factor ``1 + alpha * (tune.upweight_max - 1)``.
        targets: prototype ids perturbed.
        epochs_perturbed / epochs_full: the two phases.
        lr: fine-tuning learning rate.
        scope: per target, the classes whose images containing it are affected (its pair);
            empty: every image that contains a target (the paper's literal rule).
        epoch_samples: images per epoch (a seeded subset of the fit split); 0: whole epochs.
    """

    kind: str
    alpha: float
    targets: tuple[int, ...]
    epochs_perturbed: int
    epochs_full: int
    lr: float
    scope: tuple[tuple[int, ...], ...] = ()
    epoch_samples: int = 0

    def __post_init__(self) -> None:
        if self.kind != "none" and self.kind not in PERTURBATIONS:
            raise I2XError(f"unknown perturbation '{self.kind}'; choose one of {', '.join(PERTURBATIONS)} or none")
        if not 0.0 <= self.alpha <= 1.0:
            raise I2XError(f"perturbation strength alpha must be in [0, 1], got {self.alpha}")
        if self.scope and len(self.scope) != len(self.targets):
            raise I2XError(f"a plan's scope names the classes of each target: {len(self.targets)} targets, {len(self.scope)} scopes")


def affected(assignment: torch.Tensor, labels: torch.Tensor, targets: tuple[int, ...], scope: tuple[tuple[int, ...], ...] = ()) -> torch.Tensor:
    """``(N,)`` bool: the samples a plan acts on. With a scope, a sample is affected by target
    i when it contains it and its label is in ``scope[i]``; without one, when it contains any
    target (the paper's literal rule).

    Args:
        assignment: ``(N, h, w)`` prototype ids; labels: ``(N,)``.
    """
    if not scope:
        return contains(assignment, targets)
    out = torch.zeros(assignment.shape[0], dtype=torch.bool)
    for target, classes in zip(targets, scope, strict=True):
        out |= contains(assignment, (target,)) & torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))
    return out


def target_cells(assignment: torch.Tensor, targets: tuple[int, ...]) -> torch.Tensor:
    """``(N,)`` number of grid cells assigned to a target: how much of the image it is."""
    if not targets:
        return torch.zeros(assignment.shape[0], dtype=torch.long)
    return torch.isin(assignment, torch.tensor(targets, dtype=assignment.dtype)).flatten(1).sum(1)


@dataclass(frozen=True)
class Curation:
    """What a drop did to the fit split.

    Attributes:
        kept: dataset positions left.
        dropped_per_class: ``(M,)`` images dropped per class.
        capped: classes where the floor stopped the drop (their lowest-intensity affected
            images were kept).
    """

    kept: torch.Tensor
    dropped_per_class: list[int]
    capped: list[int]


def curate(candidates: torch.Tensor, hit: torch.Tensor, alpha: float, gen: torch.Generator, labels: torch.Tensor,
           cells: torch.Tensor, max_class_drop: float, num_classes: int) -> Curation:
    """Drop ``alpha`` of the affected ``candidates`` (seeded), never more than
    ``max_class_drop`` of any class's candidates: where the floor binds, the dropped images
    are those where the targets cover most cells, and the rest are kept.

    Args:
        candidates: dataset positions (the fit split); hit: ``(N,)`` affected mask;
        labels: ``(N,)``; cells: ``(N,)`` target cells per sample.
    """
    keep = torch.ones(len(candidates), dtype=torch.bool)
    y = labels[candidates]
    dropped, capped = [0] * num_classes, []
    for c in range(num_classes):
        in_class = y == c
        pool = torch.nonzero(in_class & hit[candidates]).flatten()
        n_drop = int(round(alpha * len(pool)))
        cap = int(max_class_drop * int(in_class.sum()))
        if n_drop > cap:
            order = torch.argsort(cells[candidates[pool]], descending=True, stable=True)
            drop = pool[order[:cap]]
            capped.append(c)
        else:
            drop = pool[torch.randperm(len(pool), generator=gen)[:n_drop]]
        keep[drop] = False
        dropped[c] = len(drop)
    return Curation(candidates[keep], dropped, capped)
