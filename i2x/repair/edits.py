"""What the i2x strategies do to training images and their weights, from the finding's cells
alone: the counterfactual edit (i2x-augment), the groups the explanation infers and the
weights that balance them (i2x-groups, and the oracle's with true groups)."""

from __future__ import annotations

import numpy as np
import torch

from i2x.training.pixels import cell_mask, gaussian_blur

EDITS = ("swap", "mask", "blur", "noise")


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


def _paste(xb: torch.Tensor, donors: torch.Tensor, donor_cells: torch.Tensor) -> torch.Tensor:
    """Copy each donor's finding cells (pixels) into the image at the same place."""
    m = cell_mask(donor_cells, tuple(xb.shape[-2:]))
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
        out[chosen] = _paste(xb[chosen], donors[0][which], donors[1][which])
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
        raise ValueError(f"counterfactual 'how' must be one of {', '.join(EDITS)}, got {how!r}")
    return xb * (1 - m) + fill * m
