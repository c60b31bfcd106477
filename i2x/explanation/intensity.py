"""Prototype intensities over checkpoints (METHOD step 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Intensities:
    """P and its changes.

    Attributes:
        p: ``(T, N, K)`` mean saliency of each sample's locations assigned to k;
            0 where k is absent from the sample (see ``presence``).
        presence: ``(N, K)`` bool.
        dp: ``(T-1, N, K)`` = ``p[t+1] - p[t]``.
        dy: ``(T-1, N, M)`` = ``Yhat[t+1] - Yhat[t]``.
    """

    p: np.ndarray
    presence: np.ndarray
    dp: np.ndarray
    dy: np.ndarray


def prototype_intensity(maps: torch.Tensor, assignment: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``P^t_k(i) = sum_j 1[A_ij = k] I^t_j(i) / sum_j 1[A_ij = k]`` for every t at once.

    Args:
        maps: ``(T, N, h, w)`` saliency on the grid.
        assignment: ``(N, h, w)`` prototype ids.
        k: number of prototypes.

    Returns:
        ``(T, N, K)`` float32 intensities and the ``(N, K)`` presence mask.
    """
    t, n, h, w = maps.shape
    index = torch.from_numpy(assignment.reshape(1, n, h * w)).long().expand(t, n, h * w)
    sums = torch.zeros(t, n, k, dtype=torch.float64).scatter_add_(2, index, maps.reshape(t, n, h * w).double())
    counts = torch.zeros(n, k, dtype=torch.float64).scatter_add_(1, index[0], torch.ones(n, h * w, dtype=torch.float64))
    presence = counts > 0
    p = torch.where(presence, sums / counts.clamp_min(1), torch.zeros(()))
    return p.float().numpy(), presence.numpy()


def compute_intensities(maps: torch.Tensor, probs: torch.Tensor, assignment: np.ndarray, k: int) -> Intensities:
    """Intensities plus ``dP`` and ``dY`` between consecutive checkpoints.

    Args:
        maps: ``(T, N, h, w)``; probs: ``(T, N, M)``; assignment: ``(N, h, w)``.
    """
    p, presence = prototype_intensity(maps, assignment, k)
    y = probs.numpy().astype(np.float32)
    return Intensities(p=p, presence=presence, dp=np.diff(p, axis=0), dy=np.diff(y, axis=0))
