"""Targeted perturbations (METHOD step 8, a registry): drop, mask, blur, noise.

Applied on the fly to training batches; the data on disk is never rewritten. Which
samples contain a target prototype comes from the final model's assignment of every
training sample (see :func:`i2x.saliency.layer_features` and
:meth:`i2x.prototypes.Prototypes.assign`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from i2x.errors import I2XError


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
    cells = torch.isin(assignment, torch.tensor(targets, dtype=assignment.dtype)).float()[:, None]
    return torch.nn.functional.interpolate(cells, size=size, mode="nearest")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


# An in-batch perturbation: (pixels (B,C,H,W) in [0,1], mask (B,1,H,W), alpha, generator) -> pixels
PixelFn = Callable[[torch.Tensor, torch.Tensor, float, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class PerturbationKind:
    """``drops`` kinds change which samples are used; the others edit pixels in batches."""

    drops: bool
    apply: PixelFn | None = None


def _mask(x: torch.Tensor, m: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    fill = x.mean(dim=(0, 2, 3), keepdim=True)  # the batch's mean colour, not black
    return x * (1 - alpha * m) + fill * (alpha * m)


def _blur(x: torch.Tensor, m: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    return x * (1 - alpha * m) + _gaussian_blur(x, 1.5) * (alpha * m)


def _noise(x: torch.Tensor, m: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen) * 0.5
    return (x + alpha * m * noise).clamp(0, 1)


PERTURBATIONS: dict[str, PerturbationKind] = {
    "drop": PerturbationKind(drops=True),  # PAPER's curation: alpha = fraction dropped
    "mask": PerturbationKind(drops=False, apply=_mask),
    "blur": PerturbationKind(drops=False, apply=_blur),
    "noise": PerturbationKind(drops=False, apply=_noise),
}


@dataclass(frozen=True)
class Plan:
    """One fine-tuning recipe.

    Attributes:
        kind: a key of :data:`PERTURBATIONS`, or ``none`` (full->full).
        alpha: strength in [0, 1]; for ``drop`` the fraction of target-containing samples dropped.
        targets: prototype ids perturbed.
        epochs_perturbed / epochs_full: the two phases.
        lr: fine-tuning learning rate.
    """

    kind: str
    alpha: float
    targets: tuple[int, ...]
    epochs_perturbed: int
    epochs_full: int
    lr: float

    def __post_init__(self) -> None:
        if self.kind != "none" and self.kind not in PERTURBATIONS:
            raise I2XError(f"unknown perturbation '{self.kind}'; choose one of {', '.join(PERTURBATIONS)} or none")
        if not 0.0 <= self.alpha <= 1.0:
            raise I2XError(f"perturbation strength alpha must be in [0, 1], got {self.alpha}")


def dropped(candidates: torch.Tensor, has_target: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """Positions in ``candidates`` kept after dropping ``alpha`` of those with a target (seeded)."""
    hit = torch.nonzero(has_target[candidates]).flatten()
    n_drop = int(round(alpha * len(hit)))
    drop = hit[torch.randperm(len(hit), generator=gen)[:n_drop]]
    keep = torch.ones(len(candidates), dtype=torch.bool)
    keep[drop] = False
    return candidates[keep]
